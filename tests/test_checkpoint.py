
import pytest
import torch

from edgefuse.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edgefuse.data import PreprocessContract
from edgefuse.errors import CheckpointError, InputFileError
from edgefuse.models import create_model
from tests.conftest import perturb_


def _model():
    torch.manual_seed(0)
    return perturb_(create_model("fpn", 3, fusion="cbam", width=0.5), std=0.01).eval()


def test_round_trip_is_exact_and_weights_only(tmp_path):
    m = _model()
    c = PreprocessContract(32, 1, [0.3], [0.4], ("a", "b", "c"))
    p = save_checkpoint(tmp_path / "m.pt", m, c, metrics={"test_top1": 0.5})
    raw = torch.load(p, weights_only=True)  # must not need pickled code
    assert raw["model"]["name"] == "fpn"
    loaded = load_checkpoint(p)
    assert loaded.contract == c and loaded.metrics["test_top1"] == 0.5
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), m(x), atol=0, rtol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_empty_corrupt(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        read_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(tmp_path / "junk.pt")
    good = save_checkpoint(tmp_path / "good.pt", _model(), PreprocessContract(32, 1, [0], [1]))
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(tmp_path / "trunc.pt")


def test_plain_state_dict_is_not_an_edgefuse_checkpoint(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not an edgefuse model.pt"):
        read_checkpoint(tmp_path / "sd.pt")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save({"format": "edgefuse.checkpoint", "x": _Evil(str(marker))}, f)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="trust-pickle"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_state_dict_mismatch(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", _model(), PreprocessContract(32, 1, [0], [1]))
    raw = torch.load(p, weights_only=True)
    raw["model"]["kwargs"]["width"] = 1.0
    torch.save(raw, p)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(p)


def test_nan_weights_refused(tmp_path):
    m = _model()
    with torch.no_grad():
        next(m.parameters()).view(-1)[0] = float("nan")
    p = save_checkpoint(tmp_path / "m.pt", m, PreprocessContract(32, 1, [0], [1]))
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(p)
