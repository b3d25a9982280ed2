"""Killing an export mid-way leaves the previous complete set (which `verify` vouches for), never a mix."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefuse.export import verify_artifacts
from edgefuse.export.artifacts import TEMP_PREFIX


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


def _start_validation_and_wait(checkpoint, out):
    """An export whose validation runs (almost) forever: killed once its staged int8 file exists."""
    edgefuse = Path(sys.executable).with_name("edgefuse")
    proc = subprocess.Popen([str(edgefuse), "export", str(checkpoint), "--int8", "--format", "onnx", "--force",
                             "--quiet", "--runs", "100000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob(f"{TEMP_PREFIX}*/model.int8.onnx")):
            time.sleep(2)  # into the staged set's validation (100000 timed runs: minutes)
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the export never staged its int8 file")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_kill_during_validation_publishes_nothing(tiny_checkpoint, previous_set, sig):
    """The new set is published only with the gate's verdict: killed before it, the previous set stays whole."""
    before = {p.name: p.read_bytes() for p in previous_set.iterdir() if p.is_file()}
    proc = _start_validation_and_wait(tiny_checkpoint, previous_set)
    assert proc.poll() is None
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 128 + sig)
    assert {p.name: p.read_bytes() for p in previous_set.iterdir() if p.is_file()} == before
    res = verify_artifacts(previous_set)
    assert res.ok, res.problems
    assert bool(list(previous_set.glob(f"{TEMP_PREFIX}*"))) == (sig == signal.SIGKILL)  # swept by the next run


def test_a_failed_gate_is_recorded_and_verify_refuses_the_set(tiny_checkpoint, tmp_path):
    from edgefuse.api import export_model
    from edgefuse.validate import Budgets

    res = export_model(tiny_checkpoint, tmp_path / "b", formats=("onnx",), runs=3,
                       budgets=Budgets(max_latency_ratio=1e-6))  # impossible: the gate fails
    assert not res.report.passed
    manifest = res.export.manifest
    assert manifest["gate"]["passed"] is False and manifest["gate"]["failures"]
    assert (tmp_path / "b" / "report.json").exists()  # the reports a failed gate promises
    assert str(tmp_path / "b" / "model.int8.onnx") == res.report.int8.file  # published paths, not staging
    v = verify_artifacts(tmp_path / "b")
    assert not v.ok and any("failed its gate" in p for p in v.problems)


def test_a_folder_without_a_manifest_is_refused_and_verify_lists_every_stray_file(previous_set, tiny_checkpoint):
    from edgefuse.api import export_model
    from edgefuse.errors import UsageError

    (previous_set / "notes.txt").write_text("x")
    assert any("notes.txt" in w for w in verify_artifacts(previous_set).warnings)
    (previous_set / "manifest.json").unlink()  # as a kill inside the move window leaves it
    with pytest.raises(UsageError, match="unfinished or mixed export"):
        export_model(tiny_checkpoint, previous_set, formats=("onnx",), validate=False)
    export_model(tiny_checkpoint, previous_set, int8=False, formats=("onnx",), validate=False, force=True)
    res = verify_artifacts(previous_set)
    assert res.ok and not (previous_set / "model.int8.onnx").exists()  # the old set's files went
    assert [w for w in res.warnings] == ["notes.txt: not listed in the manifest"]
