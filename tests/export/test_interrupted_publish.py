"""A process death or an interrupt while a staged set is being published (its file moves) leaves a folder
that no manifest vouches for, which the next export refuses and --force replaces; split from
test_interrupted.py so the two halves run on both test workers."""

import subprocess
import sys

import pytest

from edgefuse.export import verify_artifacts
from edgefuse.export.artifacts import TEMP_PREFIX


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
