"""ExecuTorch's runtime (``.pte`` programs, XNNPACK delegate) in-process, from the ``executorch`` wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgefuse._extras import require_executorch
from edgefuse._files import MAX_MODEL_BYTES, check_input_file
from edgefuse._quiet import quiet_native
from edgefuse.errors import InputFileError, one_line
from edgefuse.runtimes.base import _in_fixed_batches
from edgefuse.runtimes.sidecar import read_sidecar_metadata


class PteModel:
    """An ExecuTorch program (``.pte``) in ExecuTorch's runtime, with the same ``run`` as :class:`OrtModel`.

    ``.pte`` programs have a static batch (mobile runtimes plan their memory ahead); ``run`` splits
    or pads batches to it. Needs the ``executorch`` extra.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        require_executorch()
        path = check_input_file(path, max_bytes=MAX_MODEL_BYTES)
        try:
            with quiet_native():
                from executorch.extension.pybindings import portable_lib
                from executorch.runtime import Runtime

                # XNNPACK's thread pool is process-wide: size it as asked (1 = one phone core).
                portable_lib._unsafe_reset_threadpool(max(1, int(threads)))
                program = Runtime.get().load_program(str(path))
                self.method = program.load_method("forward")
        except Exception as e:
            raise InputFileError(f"ExecuTorch cannot load {path}: {one_line(e)}") from None
        self.path = path
        meta = self.method.metadata
        info = meta.input_tensor_meta(0)
        self.input_name = "input"
        self.input_shape = list(info.sizes())
        self.fixed_batch = self.input_shape[0]

    def metadata(self) -> dict[str, str]:
        """The sidecar contract (``<file>.json``) flattened like ONNX ``metadata_props``."""
        return read_sidecar_metadata(self.path)

    def _run1(self, x: np.ndarray) -> np.ndarray:
        return self.method.execute([torch.from_numpy(x)])[0].numpy()

    def run(self, x: np.ndarray) -> np.ndarray:
        return _in_fixed_batches(self._run1, np.ascontiguousarray(x, dtype=np.float32), self.fixed_batch)
