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


# A real process death at the k-th file move of publishing (os._exit: no handler, no finally, as SIGKILL), or
# the exception SIGINT/SIGTERM raise there (handlers and finally run). The set being published: fp32 ONNX and
# TorchScript, then manifest.json (3 moves) over the previous int8 ONNX set; k = 4 dies after those moves,
# while the previous set's leftover files are being removed.
_PUBLISH_AND_DIE = r"""
import os, sys
from edgefuse.api import load_model_source
from edgefuse.export.artifacts import publish_artifacts, stage_artifacts

model, contract, _ = load_model_source(sys.argv[1])
staged = stage_artifacts(model, contract, sys.argv[2], formats=("onnx", "torchscript"), force=True)
k, how, moves, real = int(sys.argv[3]), sys.argv[4], [0], os.replace

def replace(a, b):
    moves[0] += 1
    if moves[0] == k:
        if how == "kill":
            os._exit(137)
        raise KeyboardInterrupt
    real(a, b)

def unlink(self, missing_ok=False):  # k = 4: after the manifest's move, at the first stale file's removal
    if moves[0] >= 3 and k == 4:
        if how == "kill":
            os._exit(137)
        raise KeyboardInterrupt
    real_unlink(self, missing_ok=missing_ok)

import pathlib
real_unlink = pathlib.Path.unlink
os.replace = replace
pathlib.Path.unlink = unlink
publish_artifacts(staged, force=True)
"""


@pytest.mark.parametrize("how", ["kill", "interrupt"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_death_inside_the_move_window_leaves_a_set_that_is_refused_then_replaced(
        tiny_checkpoint, previous_set, k, how):
    from edgefuse.api import export_model
    from edgefuse.errors import UsageError

    r = subprocess.run([sys.executable, "-c", _PUBLISH_AND_DIE, str(tiny_checkpoint), str(previous_set), str(k), how],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == (137 if how == "kill" else 1), r.stderr[-2000:]
    # No manifest vouches for the mix: the previous one went before the first move.
    assert not (previous_set / "manifest.json").exists()
    with pytest.raises(Exception) as e:
        verify_artifacts(previous_set)
    assert "holds no manifest.json" in str(e.value)
    with pytest.raises(UsageError, match="unfinished or mixed export"):
        export_model(tiny_checkpoint, previous_set, formats=("onnx",), validate=False)
    assert bool(list(previous_set.glob(f"{TEMP_PREFIX}*"))) == (how == "kill")  # only a kill leaves the staging
    export_model(tiny_checkpoint, previous_set, int8=False, formats=("onnx",), validate=False, force=True)
    res = verify_artifacts(previous_set)
    assert res.ok and not res.warnings, res.warnings  # the mix and the old staging folder are gone
    assert sorted(p.name for p in previous_set.iterdir()) == ["manifest.json", "model.fp32.onnx"]


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_a_death_after_the_manifest_moved_leaves_the_new_set_and_strays_the_next_force_sweeps(
        tiny_checkpoint, previous_set, how):
    from edgefuse.api import export_model
    from edgefuse.errors import UsageError

    r = subprocess.run([sys.executable, "-c", _PUBLISH_AND_DIE, str(tiny_checkpoint), str(previous_set), "4", how],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == (137 if how == "kill" else 1), r.stderr[-2000:]
    res = verify_artifacts(previous_set)  # the new manifest vouches for the new set, and names the strays
    assert res.ok and sorted(res.checked) == ["model.fp32.onnx", "model.fp32.torchscript.pt"]
    assert any("model.int8.onnx: not listed" in w for w in res.warnings), res.warnings
    with pytest.raises(UsageError, match="already holds exported artifacts"):
        export_model(tiny_checkpoint, previous_set, formats=("onnx",), validate=False)
    export_model(tiny_checkpoint, previous_set, int8=False, formats=("onnx",), validate=False, force=True)
    res = verify_artifacts(previous_set)
    assert res.ok and not res.warnings, res.warnings  # the stray of the interrupted publish went too
    assert sorted(p.name for p in previous_set.iterdir()) == ["manifest.json", "model.fp32.onnx"]
