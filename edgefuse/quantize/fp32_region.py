"""The PyTorch side of latency-aware precision: an int8 program with a region of modules computing in fp32.

:func:`edgefuse.export.kernel_choice.fp32_region` takes the Quantize/Dequantize pairs out of a region of
an int8 ONNX graph; this does the same to the converted PT2E program it was exported from, by the same
rule (a pair goes when its producer -- or the graph input -- and its reader are in the region), so the
shipped file can still be checked against the program it computes.
"""

from __future__ import annotations

import copy

from torch import fx

from edgefuse.quantize.quantizer import module_path

_Q = {"quantize_per_tensor"}
_DQ = {"dequantize_per_tensor"}


def _kind(node: fx.Node) -> str | None:
    if node.op != "call_function":
        return None
    name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    return "q" if name in _Q else "dq" if name in _DQ else None


def fp32_region(program: fx.GraphModule, modules) -> fx.GraphModule:
    """A copy of ``program`` in which the nodes of ``modules`` read each other's (and the input's) fp32
    values instead of their quantized-then-de-quantized ones. Weights keep their de-quantized int8 values."""
    region = set(modules)
    gm = copy.deepcopy(program)
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or _kind(n) or module_path(n) not in region:
            continue
        for dq in list(n.all_input_nodes):
            if _kind(dq) != "dq" or not dq.args or not isinstance(dq.args[0], fx.Node) or _kind(dq.args[0]) != "q":
                continue
            src = dq.args[0].args[0]
            if isinstance(src, fx.Node) and (src.op == "placeholder" or (not _kind(src) and module_path(src) in region)):
                n.replace_input_with(dq, src)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm
