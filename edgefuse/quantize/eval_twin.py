"""A faster, bit-identical twin of a converted PT2E program, for evaluating it over whole test splits.

A converted program computes every activation's int8 rounding as two decomposed ops
(``quantize_per_tensor``: mul, round, add, clamp, cast; ``dequantize_per_tensor``: cast, sub, mul) and
de-quantizes every int8 weight again on every forward. At 224x224 those ops take two thirds of the
program's time (MobileNetV3-large: 0.88 of 1.35 s per 48 images; the convolutions 0.36 s). The twin

* replaces each Quantize -> Dequantize pair with the same float32 arithmetic done in place on one buffer
  (``x * (1/scale)``, round half to even, clamp to ``[qmin, qmax] - zero_point``, ``* scale``: 2.6 ms
  instead of 25 ms on a 16x96x56x56 activation; the int8 cast in between is exact after the clamp and
  is skipped). ``torch.fake_quantize_per_tensor_affine`` is not an option: it is slower than that, and
  rounds differently by one step now and then.
* de-quantizes constant int8 weights once, into buffers.

Its logits are the program's, bit for bit (``tests/quantize/test_eval_twin.py`` checks it on every model
family); the exported files still come from the program itself, and the twin is only ever used to
compute the program's predictions.
"""

from __future__ import annotations

import copy

import torch
from torch import fx

_QD = torch.ops.quantized_decomposed


def _is(node, op) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target == op


def _constant(node: fx.Node, root: fx.GraphModule):
    """The value of ``node`` when it is a parameter/buffer attribute of ``root``, else None."""
    if node.op != "get_attr":
        return None
    value = root
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def fake_quantize(x: torch.Tensor, inv_scale: float, scale: float, zero_point: int, qmin: int, qmax: int):
    """``dequantize_per_tensor(quantize_per_tensor(x, scale, zero_point, qmin, qmax, dtype), <same>)`` for an
    integer ``dtype`` holding ``[qmin, qmax]``, bit for bit, with ``inv_scale = 1.0 / scale``."""
    # torch.ao's quantize_per_tensor/dequantize_per_tensor on one buffer. Its "+ zero_point, clamp to
    # [qmin, qmax], - zero_point" is one clamp to [qmin - zero_point, qmax - zero_point]: the rounded value is
    # an integer in float32, so adding the integer zero point is exact below 2**24, and beyond it both forms
    # clamp to the same end. Four passes over the activation instead of six.
    return torch.mul(x, inv_scale).round_().clamp_(qmin - zero_point, qmax - zero_point).mul_(scale)


def eval_twin(program: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``program`` that computes the same logits faster (see the module docstring).

    Programs without quantize/dequantize nodes (fp32 modules, anything not a GraphModule) come back as
    they are. The twin shares the program's parameters; the de-quantized weights are its own buffers.
    """
    if not isinstance(program, fx.GraphModule):
        return program
    graph = copy.deepcopy(program.graph)
    twin = fx.GraphModule(program, graph)
    q_op, dq_op = _QD.quantize_per_tensor.default, _QD.dequantize_per_tensor.default
    changed, folded = False, 0
    for node in list(graph.nodes):
        if _is(node, dq_op) and _is(node.args[0], q_op) and tuple(node.args[1:]) == tuple(node.args[0].args[1:]):
            q = node.args[0]
            x, scale, zero_point, qmin, qmax = q.args[:5]
            with graph.inserting_before(node):
                fq = graph.call_function(fake_quantize, (x, 1.0 / scale, scale, zero_point, qmin, qmax))
            fq.meta = dict(node.meta)
            node.replace_all_uses_with(fq)
            graph.erase_node(node)
            changed = True
            continue
        if node.op == "call_function" and node.target in (dq_op, _QD.dequantize_per_channel.default):
            inputs = node.all_input_nodes
            values = [_constant(n, program) for n in inputs]
            if inputs and all(v is not None for v in values):  # a weight: de-quantize it once
                env = dict(zip(inputs, values))
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                name = f"_eval_twin_weight_{folded}"
                twin.register_buffer(name, node.target(*args, **kwargs))
                with graph.inserting_before(node):
                    const = graph.get_attr(name)
                const.meta = dict(node.meta)
                node.replace_all_uses_with(const)
                graph.erase_node(node)
                folded += 1
                changed = True
    if not changed:
        return program
    for node in reversed(list(graph.nodes)):  # the Quantize nodes and int8 weights nothing reads any more
        if not node.users and (_is(node, q_op) or node.op == "get_attr"):
            graph.erase_node(node)
    graph.lint()
    twin.recompile()
    return twin
