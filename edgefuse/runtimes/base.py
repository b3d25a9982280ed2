"""What every runtime offers (:class:`Runtime`), and running a fixed-batch program over any number of rows."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runtime(Protocol):
    """A loaded model file in the runtime that ships it, on this CPU.

    Attributes:
        path: the model file.
        input_name: name of the (single) image input.
        input_shape: its shape; the batch entry is an int for fixed-batch (mobile) files, else a name.
        fixed_batch: the batch size the program was built for, or None for a dynamic batch.
    """

    path: Path
    input_name: str
    input_shape: list
    fixed_batch: int | None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for a float32 NCHW batch of any size (split or padded to ``fixed_batch``)."""

    def metadata(self) -> dict[str, str]:
        """The preprocessing contract and build facts, as ONNX ``metadata_props`` keys."""


def _in_fixed_batches(run, x: np.ndarray, batch: int) -> np.ndarray:
    """Run a fixed-batch model over any number of rows: split, pad the last chunk, drop the padding."""
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        outs.append(run(np.ascontiguousarray(chunk))[:n])
    return np.concatenate(outs)
