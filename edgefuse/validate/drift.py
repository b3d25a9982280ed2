"""Export drift: where onnxruntime's int8 arithmetic departs from the PyTorch int8 program it was exported from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from edgefuse.quantize.analysis import sqnr
from edgefuse.runtimes import OrtModel


def onnxruntime_module_drift(program, onnx_path: str | Path, x, threads: int = 1) -> dict[str, dict]:
    """Per module: its int8 output as onnxruntime computes it (full graph optimisation, int8 kernels)
    against the same value in the PyTorch int8 program and in fp32.

    The module's output is tapped where the exported graph quantizes it (a QuantizeLinear whose producer
    carries the module's path in the exporter's ``pkg.torch.onnx.name_scopes``), so onnxruntime still fuses
    its int8 kernels around it; modules whose output is not quantized, or not found, are left out.

    Args:
        program: the :class:`~edgefuse.quantize.analysis.SwitchedProgram` the ONNX file was exported from
            (same calibration).
        onnx_path: the raw int8 ONNX export (before onnxsim, which drops the name scopes).
        x: one batch of inputs.

    Returns:
        ``{module: {"ort_sqnr_db", "pytorch_sqnr_db", "ort_vs_pytorch_sqnr_db"}}`` (dB against fp32, and
        between the two int8 computations; a low last value is a drift the export introduced).
    """
    m = onnx.load(str(onnx_path))
    producers = {o: n for n in m.graph.node for o in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def module_of(node) -> str:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if not scopes:
            return ""
        try:
            names = json.loads(scopes.replace("'", '"'))
        except json.JSONDecodeError:
            return ""
        return names[-2] if len(names) >= 2 else ""

    taps: dict[str, onnx.NodeProto] = {}
    for n in m.graph.node:  # topological order: the last match is the module's output quantization
        if n.op_type != "QuantizeLinear" or n.input[1] not in consts or n.input[2] not in consts:
            continue
        src = producers.get(n.input[0])
        mod = module_of(src) if src is not None else ""
        if mod in program.units and program.units[mod].output_q:
            taps[mod] = n
    if not taps:
        return {}
    have = {o.name for o in m.graph.output}
    for q in taps.values():
        if q.output[0] not in have:
            elem = helper.np_dtype_to_tensor_dtype(consts[q.input[2]].dtype)
            m.graph.output.append(helper.make_tensor_value_info(q.output[0], elem, None))
    tapped = OrtModel.from_bytes(m.SerializeToString(), threads, label=f"{onnx_path} (tapped)")
    got = tapped.run_outputs(x.numpy(), [q.output[0] for q in taps.values()])
    wanted = [program.units[u].output_q for u in taps] + [program.units[u].output for u in taps]
    with program.quantized(None):
        pt_q = program.capture(x, wanted)
    with program.quantized(set()):
        pt_f = program.capture(x, wanted)
    out = {}
    for (mod, q), val in zip(taps.items(), got):
        unit = program.units[mod]
        scale = consts[q.input[1]].astype(np.float64)
        zp = consts[q.input[2]].astype(np.float64)
        deq = torch.from_numpy(((val.astype(np.float64) - zp) * scale).astype(np.float32))
        ref, pq = pt_f.get(unit.output), pt_q.get(unit.output_q)
        if ref is None or pq is None or ref.shape != deq.shape:
            continue
        out[mod] = {"ort_sqnr_db": sqnr(ref, deq), "pytorch_sqnr_db": sqnr(ref, pq), "ort_vs_pytorch_sqnr_db": sqnr(pq, deq)}
    return out
