"""``edgefuse doctor``: why an int8 ONNX model is (or is not) faster than fp32 in onnxruntime.

Loads the model with full graph optimisation, reads back the graph onnxruntime actually runs
(``SessionOptions.optimized_model_filepath``) and a per-op profile (``enable_profiling``), then
names what keeps int8 from paying off: fp32 convolutions fed by de-quantized int8 weights (the
weights are de-quantized on every run and the fast fp32 NCHWc kernels are lost), fp32 islands
between DequantizeLinear and QuantizeLinear, int8 depthwise convolutions on the slow kernel (a channel
count that is not a multiple of 16), remaining Q/DQ pairs, and layout transposes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgefuse.export.channel_padding import CHANNEL_BLOCK
from edgefuse.export.onnx_checks import module_of, node_attr, reduce_axes
from edgefuse.runtimes import OrtModel

INT8_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
            "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSoftmax",
            "QLinearLeakyRelu", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearReduceMean",
            "QLinearWhere", "QAttention", "DynamicQuantizeMatMul"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
LAYOUT_OPS = {"Transpose", "ReorderInput", "ReorderOutput"}
FP32_COMPUTE = {"Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "NchwcConv"}


@dataclass
class Finding:
    kind: str
    node: str
    op: str
    module: str
    ms: float
    advice: str


@dataclass
class DoctorReport:
    """What onnxruntime runs for a model, where the time goes, and what to change."""

    model: str
    threads: int
    total_ms: float
    op_counts: dict
    op_ms: dict
    int8_ops: int
    fp32_ops: int
    qdq_ops: int
    layout_ops: int
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["findings"] = [asdict(f) for f in self.findings]
        return d

    def summary(self) -> str:
        share = lambda ops: sum(v for k, v in self.op_ms.items() if k in ops) / max(self.total_ms, 1e-9)
        lines = [
            f"{self.model}: {self.int8_ops} int8 ops, {self.fp32_ops} fp32 ops, {self.qdq_ops} Quantize/Dequantize, "
            f"{self.layout_ops} layout ops; {self.total_ms:.3f} ms per run "
            f"(int8 kernels {100 * share(INT8_OPS):.0f}%, Q/DQ {100 * share(QDQ_OPS):.0f}%, "
            f"layout {100 * share(LAYOUT_OPS):.0f}%)",
        ]
        by_kind = defaultdict(list)
        for f in self.findings:
            by_kind[f.kind].append(f)
        for kind, fs in by_kind.items():
            ms = sum(f.ms for f in fs)
            mods = sorted({f.module for f in fs if f.module})[:4]
            lines.append(f"- {kind}: {len(fs)} node(s), {ms:.3f} ms"
                         + (f" (e.g. {', '.join(mods)})" if mods else "") + f". {fs[0].advice}")
        return "\n".join(lines)


ISLAND_ADVICE = {
    "ReduceMean": "onnxruntime has no int8 ReduceMean: pool with GlobalAveragePool (edgefuse's export rewrites "
                  "ReduceMean over H x W), which fuses into QLinearGlobalAveragePool.",
    "ReduceMean-channels": "onnxruntime has no int8 ReduceMean: this one averages over channels (CBAM's spatial "
                           "attention descriptor, a (N, 1, H, W) map), not over H x W, so GlobalAveragePool does not "
                           "apply; it is a 1 x 1 conv with weights 1/C, which runs as QLinearConv, or it stays fp32 "
                           "at the cost shown (its map has one channel).",
    "HardSigmoid": "hard-sigmoid / hard-swish have no int8 kernel in onnxruntime; `edgefuse export --int8` runs "
                   "them as int8 QLinearAdd/QLinearMul itself (the 1/6 folded into a scale, the clip into saturation; "
                   "no change to the network): export the model with edgefuse instead of quantizing it elsewhere. "
                   "Only when training from scratch: Sigmoid gates (gate='sigmoid') and ReLU (mobilenetv3 act='relu').",
    "HardSwish": "hard-swish has no int8 kernel in onnxruntime; `edgefuse export --int8` runs it as int8 "
                 "QLinearAdd + QLinearMul itself (no change to the network). Only when training from scratch: ReLU "
                 "(mobilenetv3 act='relu').",
    "Sigmoid": "a Sigmoid between two fp32 ops (SiLU/Swish: x * sigmoid(x)); `edgefuse export --int8` quantizes the "
               "sigmoid so it runs as QLinearSigmoid and the product as QLinearMul.",
    "Sub": "Sub has no int8 kernel in onnxruntime: rewrite a - b blends as Mul/Add (EfficientAttention forms its "
           "weights on the small gate tensor for this reason).",
    "InstanceNormalization": "normalisation stays fp32; on (B, C, 1, 1) attention tensors this is cheap.",
}


# A ReduceMean over channels reduces one axis: 1 in NCHW, 3 in the NHWC form onnxruntime's layout pass gives
# int8 regions (H x W pooling reduces two axes: (2, 3) or (1, 2)).
_CHANNEL_AXES = ([1], [-3], [3], [-1])


def _module_map(path: Path) -> dict[str, str]:
    """Tensor name -> source module path, from the ``module`` metadata edgefuse's exporter keeps; node names too,
    since onnxruntime's NHWC layout pass names the tensors of the int8 ops it rewrites after their nodes."""
    m = onnx.load(str(path), load_external_data=False)
    out = {}
    for n in m.graph.node:
        mod = module_of(n)
        if mod:
            for o in n.output:
                out[o] = mod
            if n.name:
                out.setdefault(n.name, mod)
    return out


def diagnose(path: str | Path, threads: int = 1, runs: int = 50) -> DoctorReport:
    """Profile ``path`` in onnxruntime and explain its int8 (in)efficiency.

    Args:
        path: an ``.onnx`` model (fp32 or int8).
        threads: intra-op threads, as in deployment.
        runs: profiled runs (per-op times are their average).
    """
    path = Path(path)
    OrtModel(path, threads)  # one-line errors for missing, empty or unloadable files
    modules = _module_map(path)
    with tempfile.TemporaryDirectory(prefix="edgefuse-doctor-") as tmp:
        opt_path = os.path.join(tmp, "optimized.onnx")
        model = OrtModel(path, threads, optimized_path=opt_path, profile=os.path.join(tmp, "profile"))
        shape = [d if isinstance(d, int) else 1 for d in model.input_shape]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        for _ in range(runs):
            model.run(x)
        with open(model.end_profiling()) as f:
            prof = json.load(f)
        opt = onnx.load(opt_path)
    producers = {o: n for n in opt.graph.node for o in n.output}
    inits = {t.name: t for t in opt.graph.initializer}
    node_ms: Counter = Counter()
    op_ms: Counter = Counter()
    for e in prof:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            node_ms[name] += e["dur"] / 1000.0 / runs
            op_ms[e["args"]["op_name"]] += e["dur"] / 1000.0 / runs
    counts = Counter(n.op_type for n in opt.graph.node)

    def module_of(n) -> str:
        for t in list(n.output) + list(n.input):
            if t in modules:
                return modules[t]
        return ""

    findings: list[Finding] = []
    for n in opt.graph.node:
        ms = node_ms.get(n.name, 0.0)
        if n.op_type in FP32_COMPUTE and len(n.input) > 1:
            w = producers.get(n.input[1])
            if w is not None and w.op_type == "DequantizeLinear":
                users = [u.op_type for u in opt.graph.node if n.output[0] in u.input]
                findings.append(Finding(
                    "fp32 conv on de-quantized int8 weights", n.name, n.op_type, module_of(n), ms,
                    f"Its output feeds {', '.join(sorted(set(users))) or 'nothing quantized'}, which is not int8, so the "
                    "conv cannot become QLinearConv: quantize the op after it, or keep the whole island fp32 "
                    "(fp32 weights, no DequantizeLinear) with --exclude."))
        elif (n.op_type not in INT8_OPS | QDQ_OPS | LAYOUT_OPS | {"Constant", "Shape", "Reshape", "Flatten"}
              and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)):
            key = "ReduceMean-channels" if n.op_type == "ReduceMean" and reduce_axes(n, inits) in _CHANNEL_AXES else n.op_type
            advice = ISLAND_ADVICE.get(key, f"onnxruntime runs {n.op_type} in fp32 here, between "
                                            "DequantizeLinear and QuantizeLinear.")
            findings.append(Finding(f"fp32 island: {n.op_type}", n.name, n.op_type, module_of(n), ms, advice))
        elif n.op_type == "QLinearConv" and (group := node_attr(n, "group", 1)) > 1 and group % CHANNEL_BLOCK:
            findings.append(Finding(
                "int8 depthwise conv on onnxruntime's slow kernel", n.name, n.op_type, module_of(n), ms,
                f"onnxruntime's fast int8 depthwise kernel takes channels in multiples of {CHANNEL_BLOCK} "
                "(1.7-1.9x per node on AVX-512 VNNI); `edgefuse export --int8` pads such layers with zero-weight "
                "channels itself (exact, no change to the network). Left as it is here: the file was quantized "
                "elsewhere, or an op other than a convolution reads these channels (a reshape, a per-channel "
                "constant)."))
        elif n.op_type in QDQ_OPS:
            findings.append(Finding("Quantize/Dequantize left at run time", n.name, n.op_type, module_of(n), ms,
                                    "Each marks an fp32 island; give the op between them an int8 kernel "
                                    "(or a fixed-range gate) so the pair fuses away."))
        elif n.op_type in LAYOUT_OPS and ms > 0:
            findings.append(Finding("layout conversion", n.name, n.op_type, module_of(n), ms,
                                    "NCHW/NHWC conversions around int8 islands: keep consecutive ops int8 so "
                                    "onnxruntime's NHWC int8 path is not interrupted."))
    findings.sort(key=lambda f: -f.ms)
    return DoctorReport(
        model=str(path), threads=threads, total_ms=float(sum(node_ms.values())),
        op_counts=dict(counts), op_ms={k: round(v, 4) for k, v in op_ms.items()},
        int8_ops=sum(v for k, v in counts.items() if k in INT8_OPS),
        fp32_ops=sum(v for k, v in counts.items() if k not in INT8_OPS | QDQ_OPS | LAYOUT_OPS),
        qdq_ops=sum(v for k, v in counts.items() if k in QDQ_OPS),
        layout_ops=sum(v for k, v in counts.items() if k in LAYOUT_OPS),
        findings=findings,
    )
