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
import re

import torch
from torch.fx import Node

from edgefuse._extras import require_executorch
from edgefuse._quiet import quiet
from edgefuse.quantize.config import QuantConfig
from edgefuse.quantize.quantizer import GATES, module_path, unshare_params

aten = torch.ops.aten


@functools.lru_cache(maxsize=1)
def _quantizer_class():
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
            return unshare_params(super().transform_for_annotation(model))

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
