"""onnxruntime's own quantizer, the reference a user has today: edgefuse's int8 is compared with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process


def ort_quantize_static(fp32: str | Path, out: str | Path, calib: np.ndarray, input_name: str = "input") -> Path:
    """``quant_pre_process`` then ``quantize_static`` (QDQ, per-channel, uint8 activations / int8 weights,
    MinMax) of an fp32 ONNX file, calibrated one image at a time on ``calib`` (N, C, H, W)."""
    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib[i : i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    out = Path(out)
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out
