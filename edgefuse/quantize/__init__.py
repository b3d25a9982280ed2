"""int8 quantization with torchao's PT2E flow: PTQ (:func:`quantize_ptq`) and QAT (:func:`quantize_qat`)."""

from edgefuse.quantize.config import CALIBRATION_METHODS, QuantConfig
from edgefuse.quantize.pt2e import (
    CalibrationDataReader,
    QATConfig,
    QuantizedModel,
    TensorBatches,
    capture,
    quantize_ptq,
    quantize_qat,
)

__all__ = [
    "CALIBRATION_METHODS", "QuantConfig", "QATConfig", "QuantizedModel", "CalibrationDataReader",
    "TensorBatches", "capture", "quantize_ptq", "quantize_qat",
]
