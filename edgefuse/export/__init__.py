"""Exporters: ONNX (fp32 and QDQ int8), TorchScript, and the manifest."""

from edgefuse.export.artifacts import (
    FORMATS,
    MANIFEST,
    Artifact,
    ExportResult,
    VerifyResult,
    export_artifacts,
    parse_formats,
    verify_artifacts,
)
from edgefuse.export.onnx import DEFAULT_OPSET, export_onnx
from edgefuse.export.onnx_checks import read_metadata, weight_summary

__all__ = ["DEFAULT_OPSET", "FORMATS", "MANIFEST", "Artifact", "ExportResult", "export_artifacts",
           "export_onnx", "parse_formats", "read_metadata", "verify_artifacts", "VerifyResult", "weight_summary"]
