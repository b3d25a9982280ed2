"""Data: labelled image sources, seeded splits and the preprocessing contract."""

from edgefuse.data.contract import PreprocessContract
from edgefuse.data.datasets import (
    EVAL_KEEP_BYTES,
    DataSplits,
    ImageDataset,
    RawImages,
    check_same_classes,
    eval_batch_size,
    load_data,
    norm_stats,
)

__all__ = ["PreprocessContract", "EVAL_KEEP_BYTES", "DataSplits", "ImageDataset", "RawImages", "check_same_classes",
           "eval_batch_size", "load_data", "norm_stats"]
