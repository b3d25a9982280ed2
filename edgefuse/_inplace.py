"""Out-of-place forms of in-place activations, for the quantizer and the exporters.

torchvision and timm write their activations in place (``nn.Hardswish(inplace=True)``, ``F.silu(x,
inplace=True)``, ``out += identity``). The dynamo ONNX exporter keeps ``aten.hardswish`` as one ONNX node
but has no entry for ``aten.hardswish_``, so it decomposes the in-place op through PyTorch's reference
implementation -- with a symbolic batch, ~0.1-0.2 s of sympy shape reasoning per node: 4.4 s of a
MobileNetV3-large export (21 of them), for the very same ``HardSwish`` node in the file. The quantizer's
annotator knows the out-of-place ops only: an in-place ``hardswish_`` or ``add_`` was left unannotated, to be
quantized -- or not -- by whatever the ONNX file made of it.

:func:`functionalize_inplace` rewrites such a node into its out-of-place twin where nothing else can see the
mutation: its input is a fresh tensor (not a view, not a graph input, parameter or buffer) whose only user is
the in-place node. The same kernel then computes the same values into a new tensor, so the graph's outputs
are unchanged (``tests/export/test_inplace.py`` checks ``torch.equal`` against eager; the third-party matrix
checks every exported file against its program).
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx

#: In-place aten ops rewritten, by their out-of-place name (elementwise: same kernel, same values).
_OUT_OF_PLACE = ("relu", "hardswish", "hardsigmoid", "hardtanh", "silu", "sigmoid", "tanh", "gelu", "leaky_relu",
                 "elu", "add", "sub", "mul", "div", "clamp", "clamp_min", "clamp_max", "dropout")


def _twin(target) -> torch._ops.OpOverload | None:
    """``aten.<op>_.<overload>`` -> ``aten.<op>.<overload>`` for the ops above, else None."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    ns, _, name = target._schema.name.partition("::")
    if ns != "aten" or not name.endswith("_") or name[:-1] not in _OUT_OF_PLACE:
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def _fresh(node: fx.Node) -> bool:
    """True when ``node`` computes a new tensor: no alias of an input, a parameter, a buffer or a view."""
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:  # one output of a multi-output op: fresh if that op's are
        return isinstance(node.args[0], fx.Node) and _fresh(node.args[0])
    schema = getattr(node.target, "_schema", None)
    return schema is not None and all(r.alias_info is None for r in schema.returns)


def functionalize_inplace(gm: fx.GraphModule, *, copy_first: bool = True) -> tuple[fx.GraphModule, int]:
    """``gm`` (a copy unless ``copy_first=False``) with every in-place activation/arithmetic node whose mutation
    nothing else can observe replaced by its out-of-place twin. Returns ``(graph module, nodes rewritten)``."""
    out = copy.deepcopy(gm) if copy_first else gm
    n = 0
    for node in list(out.graph.nodes):
        twin = _twin(node.target) if node.op == "call_function" else None
        if twin is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        x = node.args[0]
        if len(x.users) != 1 or not _fresh(x):
            continue
        node.target = twin
        n += 1
    if n:
        out.graph.lint()
        out.recompile()
    return out, n
