"""Exporters: ONNX (fp32 and QDQ int8), TorchScript, and the manifest."""

from edgefuse.export.artifacts import MANIFEST, ExportResult, VerifyResult, export_artifacts, verify_artifacts
from edgefuse.export.formats import Artifact, Format, format_names, get_format, parse_formats, register_format
from edgefuse.export.onnx import DEFAULT_OPSET, export_onnx
from edgefuse.export.onnx_checks import read_metadata, weight_summary

__all__ = ["DEFAULT_OPSET", "MANIFEST", "Artifact", "ExportResult", "Format", "export_artifacts", "export_onnx",
           "format_names", "get_format", "parse_formats", "register_format", "read_metadata", "verify_artifacts",
           "VerifyResult", "weight_summary"]
