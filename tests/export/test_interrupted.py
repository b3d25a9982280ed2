"""Killing an export mid-way leaves the previous complete set (which `verify` vouches for), never a mix."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefuse.export import verify_artifacts
from edgefuse.export.artifacts import TEMP_PREFIX


@pytest.fixture(scope="module")
def pristine_set(tiny_checkpoint, tmp_path_factory):
    from edgefuse.api import export_model

    out = tmp_path_factory.mktemp("pristine") / "build"
    export_model(tiny_checkpoint, out, int8=True, formats=("onnx",), validate=False)
    assert verify_artifacts(out).ok
    return out


@pytest.fixture()
def previous_set(pristine_set, tmp_path):
    import shutil

    return Path(shutil.copytree(pristine_set, tmp_path / "build"))


def _start_and_wait_for_temp(checkpoint, out):
    edgefuse = Path(sys.executable).with_name("edgefuse")
    proc = subprocess.Popen([str(edgefuse), "export", str(checkpoint), "--int8", "--format", "onnx,torchscript",
                             "--no-validate", "--force", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob(f"{TEMP_PREFIX}*")):
            return proc
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the export never created its temporary folder")


def test_sigterm_mid_export_cleans_up_and_keeps_the_previous_set(tiny_checkpoint, previous_set):
    before = {p.name: p.read_bytes() for p in previous_set.iterdir() if p.is_file()}
    proc = _start_and_wait_for_temp(tiny_checkpoint, previous_set)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert err.strip().splitlines()[-1] == "edgefuse: interrupted"
    assert not list(previous_set.glob(f"{TEMP_PREFIX}*"))
    assert {p.name: p.read_bytes() for p in previous_set.iterdir() if p.is_file()} == before
    assert verify_artifacts(previous_set).ok


def test_sigkill_mid_export_keeps_the_previous_set_and_the_next_run_sweeps_up(tiny_checkpoint, previous_set):
    from edgefuse.api import export_model

    proc = _start_and_wait_for_temp(tiny_checkpoint, previous_set)
    proc.kill()
    proc.communicate(timeout=60)
    res = verify_artifacts(previous_set)
    assert res.ok and any("unfinished export" in w for w in res.warnings)
    export_model(tiny_checkpoint, previous_set, int8=False, formats=("onnx",), validate=False, force=True)
    assert not list(previous_set.glob(f"{TEMP_PREFIX}*"))
    res = verify_artifacts(previous_set)
    assert res.ok and not res.warnings, res  # the int8 files of the replaced set are gone too
    assert not (previous_set / "model.int8.onnx").exists()


def test_verify_detects_changed_and_missing_files(previous_set):
    from edgefuse.cli.main import main

    (previous_set / "model.int8.onnx").write_bytes(b"tampered")
    (previous_set / "model.fp32.onnx").unlink()
    res = verify_artifacts(previous_set)
    assert not res.ok
    assert any("model.int8.onnx" in p for p in res.problems) and any("missing" in p for p in res.problems)
    with pytest.raises(SystemExit) as e:
        main(["verify", str(previous_set)])
    assert e.value.code == 1
