"""ExecuTorch's XNNPACK quantizer, with edgefuse's attention-gate handling on top.

XNNPACK (the CPU backend of ExecuTorch on Android and iOS) wants signed int8 activations,
symmetric per-channel int8 weights and fp32 biases; its own ``XNNPACKQuantizer`` annotates exactly
the patterns its kernels take. edgefuse adds what the ONNX path already does for attention blocks:

* gate outputs (sigmoid, hard-sigmoid) get the fixed [0, 1] parameters (scale 1/256, zero point
  -128) instead of a calibrated range -- a freshly initialised or saturated gate otherwise
  calibrates to a sliver of [0, 1] and clips once it moves;
* a weight used by several convolutions (CBAM's channel MLP runs on both the mean and the max
  descriptor) is quantized for each of them: XNNPACK's annotator skips a conv whose weight another
  conv already claimed, leaving it fp32 on the same weight, and XNNPACK then refuses the whole
  program at load time ("Failed to create convolution node"); a shared fp32 bias is quantized by
  XNNPACK's serializer once, for the first conv's input scale, and silently reused by the other;
* ``QuantConfig.exclude`` keeps matching modules in fp32.

Needs the optional ``executorch`` extra.
"""

from __future__ import annotations

import functools
import operator
import re

import torch
from torch.fx import Node

from edgefuse.quantize.config import QuantConfig
from edgefuse.quantize.quantizer import GATES, module_path

aten = torch.ops.aten
_WEIGHTED = {aten.conv2d.default, aten.conv1d.default, aten.linear.default}


def require_executorch() -> None:
    """Raise a one-line :class:`~edgefuse.errors.MissingExtraError` when ExecuTorch is not installed."""
    from edgefuse.errors import MissingExtraError

    try:
        import executorch  # noqa: F401
        from executorch.backends.xnnpack.quantizer import xnnpack_quantizer  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "the pte format needs ExecuTorch, an optional extra: pip install 'edgefuse[executorch]'"
        ) from None


@functools.lru_cache(maxsize=1)
def _quantizer_class():
    from edgefuse._quiet import quiet

    require_executorch()
    with quiet():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec

    gate_spec = FixedQParamsQuantizationSpec(dtype=torch.int8, scale=1.0 / 256.0, zero_point=-128, quant_min=-128,
                                             quant_max=127, qscheme=torch.per_tensor_affine)

    class XnnpackGateQuantizer(XNNPACKQuantizer):
        """``XNNPACKQuantizer`` (symmetric per-channel weights) plus edgefuse's gate and reduction rules."""

        def __init__(self, config: QuantConfig, is_qat: bool = False) -> None:
            super().__init__()
            self.config = config
            self._exclude = [re.compile(p) for p in config.exclude]
            self.set_global(get_symmetric_quantization_config(is_per_channel=config.per_channel, is_qat=is_qat))
            if self._exclude:
                self.set_filter_function(lambda n: not self._excluded(n))

        def _excluded(self, node: Node) -> bool:
            path = module_path(node)
            return any(p.search(path) for p in self._exclude)

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().transform_for_annotation(model)
            # Each weighted op gets its own copy of a shared weight/bias tensor. XNNPACK's annotator
            # skips an op whose weight another op claimed, and its serializer caches constants by
            # tensor, so a shared fp32 bias would be quantized once, for the first op's input scale.
            # (Under QAT the copies train separately: the deployed program simply holds both.)
            graph = model.graph
            for node in list(graph.nodes):
                if node.op != "get_attr":
                    continue
                users = [u for u in node.users if u.op == "call_function" and u.target in _WEIGHTED]
                if len(users) < 2:
                    continue
                original = operator.attrgetter(node.target)(model)
                for i, user in enumerate(users[1:], start=1):
                    name = f"{node.target.replace('.', '_')}_edgefuse_copy{i}"
                    clone = original.detach().clone()
                    if isinstance(original, torch.nn.Parameter):
                        model.register_parameter(name, torch.nn.Parameter(clone, requires_grad=original.requires_grad))
                    else:
                        model.register_buffer(name, clone)
                    with graph.inserting_after(node):
                        copy = graph.get_attr(name)
                    copy.meta = dict(node.meta)
                    user.replace_input_with(node, copy)
            model.recompile()
            return model

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            super().annotate(model)
            for node in model.graph.nodes:
                if node.op != "call_function" or self._excluded(node):
                    continue
                if node.target in GATES and self.config.fixed_gate_qparams:
                    # The gate itself runs in fp32 (XNNPACK has no int8 sigmoid); its consumers read it
                    # through the fixed [0, 1] parameters.
                    for user in node.users:
                        ann = user.meta.get("quantization_annotation")
                        if ann is not None and node in ann.input_qspec_map:
                            ann.input_qspec_map[node] = gate_spec
            return model

    return XnnpackGateQuantizer


def xnnpack_quantizer(config: QuantConfig, is_qat: bool = False):
    """The quantizer for ExecuTorch/XNNPACK int8 (raises ``MissingExtraError`` without the extra)."""
    return _quantizer_class()(config, is_qat)
