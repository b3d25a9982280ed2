"""The format registry: every format is declared once, and a new one is one module plus one registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgefuse.data import PreprocessContract
from edgefuse.errors import InputFileError, UnknownNameError
from edgefuse.export import Artifact, Format, export_artifacts, format_names, get_format, parse_formats, register_format
from edgefuse.export.formats import unregister_format
from edgefuse.export import verify_artifacts
from edgefuse.models import create_model
from edgefuse.pipeline.inspect import describe_artifact


def test_the_builtin_formats_are_declared_in_build_order():
    assert format_names() == ("onnx", "ort", "pte", "torchscript")
    assert [f for f in format_names() if get_format(f).mobile] == ["ort", "pte"]
    assert get_format("ort").needs == ("onnx",) and get_format("pte").int8_scheme == "xnnpack"
    assert get_format("torchscript").runtime is None  # not validated: server-side only
    with pytest.raises(UnknownNameError, match="choose from: onnx, ort, pte, torchscript"):
        parse_formats("onnx,tflite")


def test_cli_format_help_names_every_registered_format():
    from typer.testing import CliRunner

    from edgefuse.cli.commands.export import FORMAT_HELP
    from edgefuse.cli.main import app

    assert all(name in FORMAT_HELP for name in format_names()), FORMAT_HELP
    shown = " ".join(CliRunner().invoke(app, ["export", "--help"], terminal_width=400).output.split())
    assert " ".join(FORMAT_HELP.split()) in shown


def _build_npy(ctx):
    """A throw-away format: each variant's logits on the check inputs, as .npy (what a golden-file test keeps)."""
    arts = []
    for precision, module in ctx.variants:
        name = f"model.{precision}.npy"
        with torch.no_grad():
            np.save(ctx.folder / name, module(ctx.check_inputs).numpy())
        arts.append(Artifact(name, "npy", precision, details={"inputs": len(ctx.check_inputs)}))
    return arts


def test_a_new_format_is_one_declaration_and_one_registration(tmp_path):
    fmt = register_format(Format("npy", "golden logits for regression tests", _build_npy, suffixes=(".npy",),
                                 describe=lambda p: {"format": "golden logits", "shape": list(np.load(p).shape)}))
    try:
        assert parse_formats("npy,onnx") == ("npy", "onnx")
        model = create_model("resnet", 10, width=0.25).eval()
        contract = PreprocessContract(16, 1, [0.0], [1.0])
        res = export_artifacts(model, contract, tmp_path / "out", formats=("npy", "onnx"))
        assert sorted(a.file for a in res.artifacts) == ["model.fp32.npy", "model.fp32.onnx"]
        assert np.load(tmp_path / "out" / "model.fp32.npy").shape == (8, 10)
        v = verify_artifacts(tmp_path / "out")
        assert v.ok and not v.warnings and "model.fp32.npy" in v.checked
        info = describe_artifact(tmp_path / "out" / "model.fp32.npy")  # inspect reads it through the registry
        assert info["format"] == "golden logits" and info["shape"] == [8, 10] and info["bytes"] > 0
        with pytest.raises(ValueError, match="already registered"):
            register_format(fmt)
    finally:
        unregister_format("npy")
    with pytest.raises(UnknownNameError):
        get_format("npy")
    with pytest.raises(InputFileError, match="unknown file type .npy"):
        describe_artifact(tmp_path / "out" / "model.fp32.npy")
