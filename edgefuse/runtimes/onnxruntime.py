"""onnxruntime on the CPU (``.onnx`` and ``.ort`` files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgefuse._files import MAX_MODEL_BYTES, check_input_file
from edgefuse.errors import InputFileError, one_line
from edgefuse.runtimes.base import _in_fixed_batches


class OrtModel:
    """An onnxruntime CPU session over an ``.onnx`` or ``.ort`` file.

    Args:
        path: model file.
        threads: intra-op threads (1 = what one phone core sees); with more, idle workers sleep instead
            of spinning, so sessions timed side by side do not slow each other down.
        optimized_path: where onnxruntime writes its optimised graph (for diagnostics).
        profile: collect a per-op time profile into files named ``<profile>_<date>.json`` (a path prefix;
            onnxruntime would otherwise write into the working directory).
    """

    def __init__(self, path: str | Path, threads: int = 1, *, optimized_path: str | None = None,
                 profile: str | None = None) -> None:
        path = check_input_file(path, max_bytes=MAX_MODEL_BYTES)
        self._open(str(path), path, threads, optimized_path, profile)

    @classmethod
    def from_bytes(cls, model: bytes, threads: int = 1, *, label: str = "<in-memory ONNX model>") -> OrtModel:
        """A session over a serialised ONNX model that is not on disk (e.g. a graph with extra outputs
        tapped for diagnostics)."""
        self = cls.__new__(cls)
        self._open(model, Path(label), threads, None, None)
        return self

    def _open(self, source, path: Path, threads: int, optimized_path: str | None, profile: str | None) -> None:

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 1:
            # Spinning workers of one session steal the cores from the next one when sessions are timed
            # interleaved (fp32 vs int8): 2-thread medians came out 1.2-3x slower than each session alone.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if optimized_path:
            so.optimized_model_filepath = optimized_path
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = str(profile)
        try:
            self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise InputFileError(f"onnxruntime cannot load {path}: {one_line(e)}") from None
        self.path = path
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = inp.shape
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for a batch; split or padded to the model's fixed batch size when it has one."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: x})[0]
        return _in_fixed_batches(lambda chunk: self.session.run(None, {self.input_name: chunk})[0], x,
                                 self.fixed_batch)

    def run_outputs(self, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """The named graph outputs for one batch (no fixed-batch handling: diagnostics only)."""
        return self.session.run(names, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})

    def end_profiling(self) -> str:
        return self.session.end_profiling()
