"""Exporters: ONNX (fp32 and QDQ int8), TorchScript, and the manifest."""

from edgefuse.export.onnx import DEFAULT_OPSET, export_onnx

__all__ = ["DEFAULT_OPSET", "export_onnx"]
