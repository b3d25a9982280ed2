"""Fixtures of the interruption tests (tests/export/test_interrupted*.py)."""

from pathlib import Path

import pytest

from edgefuse.export import verify_artifacts


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
