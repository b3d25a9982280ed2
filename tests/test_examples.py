import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_api_example_writes_a_loadable_model(tmp_path):
    out = tmp_path / "ex.pt"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "train_api.py"), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from edgefuse.checkpoint import load_checkpoint

    assert load_checkpoint(out).spec["name"] == "resnet"
    assert "test top-1" in r.stdout
