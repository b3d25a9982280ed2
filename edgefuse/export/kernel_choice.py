"""Latency-aware precision: the leading layers of an int8 graph run in fp32 where that is faster here.

int8 pays off where a layer's arithmetic dominates its memory traffic. The high-resolution layers of
depthwise-separable networks (MobileNetV3, LCNet, EfficientNet) are the opposite: onnxruntime's u8s8
depthwise kernels measure 2-4x slower than its fp32 NCHWc ones on them, and giving only those layers fp32
kernels loses more to the layout changes and Quantize/Dequantize passes at every switch than it gains
(measured on torchvision's MobileNetV3-large at 224: 3.67 ms all int8, 3.89-4.32 ms with depthwise layers
on fp32 kernels). One switch does pay: the network's first stages wholly in fp32, int8 from a cut on.
Which cut is best depends on the network and the CPU, so it is measured: the candidates (cuts where the
map crossing them is narrowest) are timed interleaved against the all-int8 graph in one run, and the
fastest wins by a clear margin only.

The region is a set of module paths (the ``module`` key edgefuse writes on every node), so the PyTorch
program the file is checked against can be given the same region
(:func:`edgefuse.quantize.fp32_region.fp32_region`): the file still computes its program.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from edgefuse.export.onnx_checks import WEIGHT_OPS, _inferred_shapes, module_of, node_attr
from edgefuse.runtimes import OrtModel
from edgefuse.runtimes.timing import interleaved_latency

#: A candidate must beat the all-int8 graph by this share of its median to be chosen: two medians of one
#: graph in one interleaved run differ by 1-2 %, more on a shared machine.
MARGIN = 0.03
#: The search runs unless int8 already pays: all-int8 under this share of fp32's latency, the 1.5x
#: edgefuse holds depthwise networks to. EfficientNet-B0 (1.44x all int8) was left all int8 by the 1.33x
#: this used to be although an fp32 start measured 8 % faster (1.34x -> 1.45x in one run); MobileNetV3-large
#: (1.6x) gains 6-9 % from one too, but its search and the gate's evaluation of the program with that fp32
#: region cost 4-11 s of a 30 s export, so where int8 pays the build stays all int8 (the smallest file).
PAYS = 2 / 3
#: At most this many cuts are timed.
MAX_CANDIDATES = 10
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _dequantized(dq, inits: dict) -> np.ndarray:
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 else np.zeros_like(scale)
    if scale.size > 1:  # per channel along ``axis``
        axis = node_attr(dq, "axis", 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def fp32_region(model: onnx.ModelProto, modules) -> dict[str, int]:
    """Run the nodes of ``modules`` in fp32: their int8 weights become fp32 initializers holding the
    de-quantized values, and every Quantize/Dequantize pair between two of them (or between the graph
    input and one) is removed. Pairs at the region's edge stay: int8 goes on from there.

    Returns:
        ``{"nodes": n, "weights": w, "quantizers": q}``: the nodes now in fp32, how many of them are
        Conv/Gemm/MatMul whose weight was int8, and the QuantizeLinear nodes removed.
    """
    g = model.graph
    region = set(modules)
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    inside = [n for n in g.node if n.op_type not in _QDQ and module_of(n) in region]
    added, folded, weights = [], {}, 0
    for n in inside:
        for idx, name in enumerate(n.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:  # a weight or bias: its de-quantized values, in fp32
                weights += WEIGHT_OPS.get(n.op_type) == idx
                if dq.output[0] not in folded:
                    t = numpy_helper.from_array(_dequantized(dq, inits), f"{dq.output[0]}_fp32")
                    added.append(t)
                    folded[dq.output[0]] = t.name
                n.input[idx] = folded[dq.output[0]]
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            src = producer.get(q.input[0])
            if src is None or (src.op_type not in _QDQ and module_of(src) in region):
                n.input[idx] = q.input[0]
    g.initializer.extend(added)
    # Drop the Quantize/Dequantize nodes nothing reads any more.
    nodes, outputs = list(g.node), {o.name for o in g.output}
    quantizers = sum(n.op_type == "QuantizeLinear" for n in nodes)
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if n.op_type not in _QDQ or any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del g.node[:]
    g.node.extend(nodes)
    return {"nodes": len(inside), "weights": weights,
            "quantizers": quantizers - sum(n.op_type == "QuantizeLinear" for n in nodes)}


def prefix_candidates(model: onnx.ModelProto, limit: int = MAX_CANDIDATES) -> dict[str, list[str]]:
    """Cuts before convolutions over spatial maps (not the 1x1 ones of SE gates) in the first three quarters
    of the network where the map crossing the cut is narrowest: candidate name -> the modules before the
    cut, in graph order.

    A cut costs a Quantize (and onnxruntime's NHWC transpose) of the map it crosses, so of a run of cuts
    whose input maps do not grow, only the last is kept (the most fp32 work for the least crossing):
    the input of an inverted-residual block's expansion conv, not of the wide depthwise conv after it
    (MobileNetV3-large at 224, three runs: the cut before ``features.2`` saved 0.26-0.49 ms of 4.2-5.5 ms;
    the one before ``features.2.block.1``, across a 64-channel map, between 0.05 ms saved and 0.39 ms
    lost). At most ``limit``, the earliest always kept: the high-resolution start is where fp32 wins."""
    shapes = _inferred_shapes(model)
    order: list[str] = []
    cuts: list[tuple[str, list[str], int | None]] = []
    for n in model.graph.node:
        mod = module_of(n)
        if n.op_type in _QDQ or not mod:
            continue
        if n.op_type == "Conv" and order:
            shape = shapes.get(n.input[0]) or []
            if len(shape) == 4 and all(shape[2:]) and shape[2] * shape[3] > 1:
                size = int(np.prod(shape[1:])) if all(shape[1:]) else None
                cuts.append((f"fp32 before {mod}", list(order), size))
        if mod not in order:
            order.append(mod)
    sizes = [c[2] for c in cuts] + [None]
    narrow = [c for i, c in enumerate(cuts[: max(1, (3 * len(cuts)) // 4)])
              if None in (sizes[i], sizes[i + 1]) or sizes[i + 1] > sizes[i]]
    step = max(1, -(-len(narrow) // limit))
    return {name: modules for name, modules, _ in narrow[::step][:limit]}


@dataclass
class LatencyChoice:
    """What the measurement chose (recorded in the artifact's details, hence the manifest).

    Attributes:
        fp32_modules: the modules given fp32 (empty: all int8).
        fp32_weight_nodes: how many Conv/Gemm/MatMul of them had int8 weights (now fp32).
        candidates_ms: each candidate's median latency (ms, batch 1): ``"fp32"`` (the fp32 file, for
            reference), ``"all int8"``, then the cuts (only timed where all-int8 did not pay).
        chosen: the winning candidate.
        threads, runs: how it was measured.
    """

    fp32_modules: list[str] = field(default_factory=list)
    fp32_weight_nodes: int = 0
    candidates_ms: dict[str, float] = field(default_factory=dict)
    chosen: str = "all int8"
    threads: int = 1
    runs: int = 0

    def to_dict(self) -> dict:
        ms = self.candidates_ms
        return {"fp32_modules": list(self.fp32_modules), "fp32_weight_nodes": self.fp32_weight_nodes,
                "candidates_ms": dict(ms), "chosen": self.chosen,
                "saved_ms": round(ms.get("all int8", 0.0) - ms.get(self.chosen, 0.0), 4),
                "threads": self.threads, "runs": self.runs}


def pick_fastest(medians: dict[str, float], baseline: str = "all int8", margin: float = MARGIN) -> str:
    """``baseline`` unless a candidate beats it by more than ``margin`` of its median (a change must pay for
    the noise of the measurement); then the first candidate (the least fp32, in ``medians`` order) within
    ``margin`` of the fastest."""
    best = min(medians.values())
    if not best < medians[baseline] * (1 - margin):
        return baseline
    return next(k for k, v in medians.items() if k != baseline and v <= best * (1 + margin))


def choose_fp32_prefix(model: onnx.ModelProto, finish: Callable[[onnx.ModelProto], dict], *, input_shape: list[int],
                       fp32: onnx.ModelProto | None = None, threads: int = 1,
                       runs: int = 30) -> tuple[onnx.ModelProto, LatencyChoice, dict]:
    """Time the all-int8 graph against ``fp32`` (the fp32 file of the same network); where int8 does not pay
    (:data:`PAYS`), time it and each cut (every candidate finished by ``finish``, the passes the shipped file
    gets, which returns what it did) in one interleaved run and keep the fastest.

    Returns:
        The chosen graph, the record of the choice, and what ``finish`` returned for that graph.
    """
    choice = LatencyChoice(threads=threads, runs=runs)
    graphs = {"all int8": copy.deepcopy(model)}
    finished = {"all int8": finish(graphs["all int8"])}
    moved = {"all int8": 0}
    x = np.random.default_rng(0).random(input_shape, dtype=np.float32)

    def timed(candidates: dict[str, onnx.ModelProto]) -> dict[str, float]:
        sessions = {k: OrtModel.from_bytes(m.SerializeToString(), threads, label=k) for k, m in candidates.items()}
        lat = interleaved_latency({k: (lambda s=s: s.run(x)) for k, s in sessions.items()}, runs=runs, warmup=5)
        return {k: round(v["median_ms"], 4) for k, v in lat.items()}

    reference = {} if fp32 is None else {"fp32": fp32}
    if fp32 is not None:
        choice.candidates_ms = timed({**reference, **graphs})
        if choice.candidates_ms["all int8"] < PAYS * choice.candidates_ms["fp32"]:
            return graphs["all int8"], choice, finished["all int8"]
    cuts = prefix_candidates(model)
    for name, modules in list(cuts.items()):
        m = copy.deepcopy(model)
        changed = fp32_region(m, modules)
        if not (changed["weights"] or changed["quantizers"]):  # the same graph (e.g. only the fp32 stem)
            del cuts[name]
            continue
        moved[name] = changed["weights"]
        finished[name] = finish(m)
        graphs[name] = m
    if len(graphs) > 1:
        choice.candidates_ms = timed({**reference, **graphs})
        choice.chosen = pick_fastest({k: v for k, v in choice.candidates_ms.items() if k != "fp32"})
    choice.fp32_modules = cuts.get(choice.chosen, [])
    choice.fp32_weight_nodes = moved[choice.chosen]
    return graphs[choice.chosen], choice, finished[choice.chosen]


__all__ = ["LatencyChoice", "choose_fp32_prefix", "fp32_region", "pick_fastest", "prefix_candidates"]
