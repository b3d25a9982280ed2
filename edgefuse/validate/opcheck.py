"""Does an int8 ONNX file compute its program op for op? Each quantized tensor, recomputed from the file's
own input codes.

The end-to-end check (top-1 agreement of the file with the PyTorch program it was exported from) cannot
tell a wrong file from a faithful one on a network that amplifies rounding. onnxruntime computes an int8
convolution in exact integer arithmetic, the program simulates it in float32; on a value that falls on a
rounding boundary the two codes differ by one step (measured: 0.0001 % to 0.01 % of an EfficientNet-B0
tensor's codes). On a briefly trained EfficientNet-B0 those one-step differences grow, over 239 quantized
tensors and 16 squeeze-excitation gates, into a different top-1 on 1.7 % of the images, although every op
of the file is right.

This check forces the program onto the file's values: every ``quantize_per_tensor`` of the program whose
tensor the file also has returns the file's codes (from onnxruntime, on the same images), so each op of the
program reads exactly what the file's op read, and its result is compared with the file's, code for code.
A wrong scale, zero point, weight or op shows as differences of many steps or on many codes; a faithful
file differs by one step on a few boundary values. Files are paired with programs by the names the ONNX
exporter gives the quantize nodes (``quantize_per_tensor_<k>`` for the program's
``quantize_per_tensor_default_<k>``), confirmed by the source module each side records. A file is not
cleared (the end-to-end floor then decides) when one of its tensors under those names has no counterpart, or
fewer than half of its quantized tensors carry them; a QuantizeLinear that an edgefuse rewrite added under a
name of its own is checked through the paired tensors it feeds.

Reading a tensor out of the file makes it a graph output, which can keep onnxruntime from dropping that
Quantize/Dequantize pair; the pairs it drops are exact (around reshapes and pooling), so the check sees the
shipped arithmetic.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import fx

from edgefuse.export.channel_padding import padded_channels
from edgefuse.export.onnx_checks import module_of
from edgefuse.quantize.quantizer import module_path

# A faithful file: at most one step on any code, and on at most this share of a tensor's codes.
MAX_STEP = 1
MAX_FRACTION = 1e-3
# onnxruntime's element-wise QLinearAdd/QLinearMul requantize with their own rounding, which differs by CPU
# kind: on AVX2 without VNNI a faithful MobileNetV3 residual Add has 0.10 % of its codes one step off (the
# convs of the same file 4e-5 at most); an activation scale 3 % off moves 99.97 % of a tensor's codes.
MAX_FRACTION_ELEMENTWISE = 1e-2
_ELEMENTWISE = {torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor}
IMAGES = 32

_QUANTIZE = torch.ops.quantized_decomposed.quantize_per_tensor.default
_PROGRAM_NAME = re.compile(r"quantize_per_tensor_default(?:_(\d+))?")
_FILE_NAME = re.compile(r"quantize_per_tensor(?:_(\d+))?")


@dataclass(frozen=True)
class OpCheck:
    """The outcome of :func:`check_ops` on one file.

    Attributes:
        file: the file's name.
        tensors: quantized activations of the file (its QuantizeLinear nodes of non-constant tensors).
        paired: file tensors matched to a program node and compared code for code; the rest, inside rewrites
            of edgefuse's, are checked through the paired tensors they feed.
        images: images the check ran on.
        worst_fraction: the largest share of one tensor's codes that differ from the program's.
        worst_step: the largest difference of one code, in steps.
        worst_tensor: the source module and op of the tensor with the most differing codes.
        output_error: the largest difference of the file's outputs from the forced program's, relative to the
            largest output magnitude.
        passed: every op of the file computes its program's op (within one step on at most
            ``MAX_FRACTION`` of the codes, ``MAX_FRACTION_ELEMENTWISE`` for Add/Mul) and the outputs agree.
        reason: why it did not pass (empty when it did).
    """

    file: str
    tensors: int
    paired: int
    images: int
    worst_fraction: float
    worst_step: int
    worst_tensor: str
    output_error: float
    passed: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _index(pattern: re.Pattern, name: str) -> int | None:
    m = pattern.fullmatch(name)
    return None if m is None else int(m.group(1) or 0)


def _modules(q: fx.Node) -> set[str]:
    """The modules a program's quantize node belongs to: its producer's, and its readers' (the file labels a
    QuantizeLinear by its producer, or by its reader where the producer has no module)."""
    mods = {module_path(q.args[0])} if isinstance(q.args[0], fx.Node) else set()
    for dq in q.users:
        mods |= {module_path(u) for u in dq.users}
    return mods - {""}


def check_ops(program: fx.GraphModule, onnx_path: str | Path, inputs: torch.Tensor, threads: int = 1) -> OpCheck:
    """Recompute every quantized tensor of an int8 ONNX file with ``program``'s ops from the file's own
    input codes, and compare (see the module docstring).

    Args:
        program: the converted PT2E program the file was exported from (with the same fp32 region, if the
            file has one).
        onnx_path: the int8 ``.onnx`` file.
        inputs: a batch of preprocessed images (``IMAGES`` is plenty: a wrong op differs on most codes).
        threads: onnxruntime intra-op threads.
    """
    import onnxruntime as ort

    path = Path(onnx_path)
    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    produced = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    # The quantized activations: QuantizeLinear outputs of non-constant tensors, under the exporter's names;
    # a rewrite of edgefuse's may re-layout one (then a Transpose gives the name back to the codes) and
    # quantize under a name of its own, checked through the paired tensors after it.
    activation_q = [n for n in model.graph.node
                    if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[0] not in produced]
    named = {o: n for n in model.graph.node for o in n.output if _index(_FILE_NAME, o) is not None}
    prog_q = {}
    for n in program.graph.nodes:
        if n.op == "call_function" and n.target == _QUANTIZE and (k := _index(_PROGRAM_NAME, n.name)) is not None:
            prog_q[k] = n

    def refused(reason: str, paired: int = 0) -> OpCheck:
        return OpCheck(path.name, len(activation_q), paired, len(inputs), float("nan"), -1, "", float("nan"), False,
                       reason)

    pairs = {}
    for name, n in named.items():
        node = prog_q.get(_index(_FILE_NAME, name))
        mod_file = module_of(n)
        mods = _modules(node) if node is not None else set()
        if node is None or (mod_file and mods and mod_file not in mods):
            return refused(f"its tensor {name} has no counterpart in the program", len(pairs))
        pairs[node.name] = name
    if len(pairs) < max(1, len(activation_q) // 2):
        return refused(f"only {len(pairs)} of its {len(activation_q)} quantized tensors carry the exporter's names")

    outputs = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in model.graph.output]
    del model.graph.output[:]
    model.graph.output.extend([onnx.helper.make_empty_tensor_value_info(name) for name in pairs.values()] + outputs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = inputs.detach().to(torch.float32).contiguous()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    codes = {p: torch.from_numpy(np.ascontiguousarray(g)) for p, g in zip(pairs, got)}
    # Depthwise layers widened to 16-channel blocks carry zero-weight channels after the program's: the
    # program's tensor is the file's first ``channels`` (edgefuse.export.channel_padding).
    for p, name in pairs.items():
        real = padded_channels(named[name])
        if real is not None and codes[p].dim() >= 2 and codes[p].shape[1] > real:
            codes[p] = codes[p][:, :real].contiguous()
    file_out = got[len(pairs):]

    diffs: dict[str, tuple[float, int, str]] = {}

    class Forced(fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if n.name in codes:
                c = codes[n.name]
                if c.shape != r.shape:
                    raise ValueError(f"{n.name}: shape {tuple(r.shape)} in the program, {tuple(c.shape)} in the file")
                d = (r.to(torch.int32) - c.to(torch.int32)).abs()
                src = n.args[0]
                diffs[n.name] = (float((d > 0).float().mean()), int(d.max()) if d.numel() else 0,
                                 f"{module_path(src) or '(input)'} {getattr(src, 'target', src)}",
                                 MAX_FRACTION_ELEMENTWISE if getattr(src, "target", None) in _ELEMENTWISE
                                 else MAX_FRACTION)
                return c.to(r.dtype)
            return r

    try:
        with torch.no_grad():
            out = Forced(program).run(x)
    except (ValueError, RuntimeError) as e:
        return refused(f"the program could not read the file's values ({e})", len(pairs))
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(outs) != len(file_out):
        return refused("the file and the program have different outputs", len(pairs))
    err = 0.0
    for o, f in zip(outs, file_out):
        ref = o.detach().numpy()
        scale = float(np.abs(ref).max()) or 1.0
        err = max(err, float(np.abs(ref - f).max()) / scale)
    worst = max(diffs.values(), key=lambda v: (v[0], v[1]))
    step = max(v[1] for v in diffs.values())
    frac = worst[0]
    over = max((v for v in diffs.values() if v[0] > v[3]), key=lambda v: v[0] / v[3], default=None)
    reason = ""
    if step > MAX_STEP:
        bad = max(diffs.values(), key=lambda v: v[1])
        reason = f"{bad[2]}: codes up to {bad[1]} steps from the program's, given the same inputs"
    elif over is not None:
        reason = (f"{over[2]}: {100 * over[0]:.2f} % of its codes differ from the program's, given the same inputs "
                  f"(at most {100 * over[3]:g} %)")
    elif err > 2.0 / 255:  # the outputs may differ by the last tensor's one step, not more
        reason = f"outputs differ from the forced program's by {100 * err:.2f} % of their range"
    return OpCheck(path.name, len(activation_q), len(pairs), len(x), frac, step, worst[2], err, not reason, reason)
