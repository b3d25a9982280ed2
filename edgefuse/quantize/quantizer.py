"""A torchao PT2E quantizer for onnxruntime's CPU int8 kernels, aware of attention gates.

It annotates the aten graph that ``torch.export`` produces:

* conv / linear: uint8 activations in, int8 weights (per channel, symmetric), int32 bias with
  scale = input scale x weight scale (so onnxruntime can fuse QLinearConv), quantized output
  unless a ReLU follows (then the ReLU's output is quantized and the ReLU folds into the range);
* gates (sigmoid, hard-sigmoid): output pinned to scale 2/511, zero point 0 -- the [0, 1] range
  a gate always has -- instead of a calibrated range that may miss the ends; SiLU and hard-swish are
  decomposed into ``x * sigmoid(x)`` / ``x * hardsigmoid(x)`` first, so their gate is such a gate and the
  product an int8 multiply;
* add, sub, mul (the SE/CBAM scaling and the EfficientAttention merge), mean pooling: quantized inputs
  and output;
* cat, max-pool, amax, nearest upsampling, reshapes: output shares the input's parameters, so no
  requantization happens around them.

Everything else (group norm, softmax / attention matmuls) stays fp32 between DequantizeLinear and
QuantizeLinear, and so does any module whose path matches ``QuantConfig.exclude``. A conv over at
most 4 input channels (the stem over pixels) stays wholly fp32: int8 is slower there.
"""

from __future__ import annotations

import operator
import re

import torch
from torch.fx import Node

from edgefuse._inplace import functionalize_inplace
from edgefuse._quiet import import_pt2e
from edgefuse.quantize.config import QuantConfig
from edgefuse.quantize.observers import ACTIVATION_OBSERVERS

import_pt2e()
from torchao.quantization.pt2e import (  # noqa: E402
    FusedMovingAvgObsFakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from torchao.quantization.pt2e.quantizer import (  # noqa: E402
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationSpec,
    Quantizer,
    SharedQuantizationSpec,
)


aten = torch.ops.aten
_WEIGHT_EPS = 2**-12  # weights only (per-channel scales of all-zero channels)
#: The smallest activation scale: torchao's and onnxruntime's own floor (float32 eps). 2**-12 (the weight
#: floor) set every activation range below 0.06 to 0.06: torchvision's random-init MobileNetV3-small, whose
#: activations shrink to 1e-4 at the logits, came out at 0 dB against fp32 (quantize_static: 29 dB).
_ACT_EPS = float(torch.finfo(torch.float32).eps)

CONV_LINEAR = {aten.conv2d.default, aten.linear.default}
RELU = {aten.relu.default, aten.relu_.default}
GATES = {aten.sigmoid.default, aten.hardsigmoid.default}
BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.rsub.Scalar}
# Ops whose output is quantized with their own observer.
OWN_OUTPUT = {aten.mean.dim, aten.adaptive_avg_pool2d.default}
# Ops that only move or select values: output shares the (first) input's quantization parameters.
SHARED = {
    aten.cat.default, aten.amax.default, aten.max_pool2d.default, aten.upsample_nearest2d.vec,
    aten.upsample_nearest2d.default, aten.flatten.using_ints, aten.view.default, aten.reshape.default,
    aten.hardtanh.default, aten.relu.default,
}


WEIGHTED = {aten.conv2d.default, aten.conv1d.default, aten.linear.default}


def unshare_params(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give each conv/linear its own copy of a weight or bias that several of them read.

    A shared module (CBAM's channel MLP runs on the average- and the max-pooled descriptor) would
    otherwise get one int32 bias, quantized for the first use's input scale: onnxruntime then refuses
    to fuse the second use into QLinearConv (its bias scale must be input scale x weight scale) and
    runs it in fp32 on de-quantized weights; XNNPACK's annotator skips an op whose weight another op
    claimed, and its serializer caches constants by tensor. Under QAT the copies train separately: the
    deployed program simply holds both.
    """
    graph = model.graph
    for node in list(graph.nodes):
        if node.op != "get_attr":
            continue
        users = [u for u in node.users if u.op == "call_function" and u.target in WEIGHTED]
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


#: Set on the hard-sigmoid that :func:`decompose_activations` splits out of a hard-swish (its own gate grid).
UNIT_GATE = "edgefuse_unit_gate"


def decompose_activations(model: torch.fx.GraphModule, keep=lambda node: False) -> torch.fx.GraphModule:
    """Split the activations onnxruntime has no int8 kernel for into a gate and an int8 multiply, in the program:

    * ``silu(x)`` -> ``x * sigmoid(x)`` (EfficientNet's Swish; Ramachandran et al. 2017): onnxruntime runs
      QLinearSigmoid (a lookup table) and QLinearMul;
    * ``hardswish(x)`` -> ``x * hardsigmoid(x)`` (MobileNetV3; Howard et al. 2019): the hard-sigmoid, on the
      exact [0, 1] grid (:data:`UNIT_GATE`), becomes QLinearAdd in the ONNX file
      (:func:`edgefuse.export.int8_activations.int8_hard_activations`), the product QLinearMul.

    The gate is then annotated as a gate (fixed [0, 1] range) and the product as an int8 multiply, so the
    quantized program computes what the ONNX file computes. (An earlier ONNX-only rewrite quantized the gate
    in the file but not in the program: on a trained EfficientNet-B0 the file then agreed with its program on
    89 % of Fashion-MNIST test images, and the gate refused it.) In-place forms are left alone (run
    :func:`edgefuse._inplace.functionalize_inplace` first), and so is any node ``keep(node)`` is true for
    (a module excluded from quantization keeps its original op).
    """
    graph = model.graph
    split = {aten.silu.default: aten.sigmoid.default, aten.hardswish.default: aten.hardsigmoid.default}
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in split or keep(node):
            continue
        x = node.args[0]
        if not isinstance(x, Node):
            continue
        with graph.inserting_before(node):
            gate = graph.call_function(split[node.target], (x,))
            mul = graph.call_function(aten.mul.Tensor, (x, gate))
        gate.meta, mul.meta = dict(node.meta), dict(node.meta)  # same shape; module path for --exclude
        if node.target is aten.hardswish.default:
            gate.meta[UNIT_GATE] = True
        node.replace_all_uses_with(mul)
        graph.erase_node(node)
        changed = True
    if changed:
        graph.lint()
        model.recompile()
    return model


def module_path(node: Node) -> str:
    """The innermost ``nn.Module`` path a graph node came from (``stages.2.0.fusion.gate``)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^L\['self'\]\.?", "", path).replace("._modules['", ".").replace("']", "")


class EdgefuseQuantizer(Quantizer):
    """Annotates a ``torch.export`` graph for int8 per :class:`QuantConfig` (PTQ or, with ``is_qat``, QAT)."""

    def __init__(self, config: QuantConfig = QuantConfig(), is_qat: bool = False) -> None:
        super().__init__()
        self.config = config
        self.is_qat = is_qat
        self._exclude = [re.compile(p) for p in config.exclude]
        c = config
        if c.activation_dtype == "uint8":
            dtype, qmin, qmax = torch.uint8, 0, 255
        else:
            dtype, qmin, qmax = torch.int8, -128, 127
        qscheme = torch.per_tensor_affine
        # 7-bit weights keep u8 x s8 pair sums inside vpmaddubsw's int16 on x86 without VNNI.
        wmax = 63 if c.reduce_range else 127
        if is_qat:
            act_ctr = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=_ACT_EPS)
        else:
            act_ctr = ACTIVATION_OBSERVERS[c.calibration].with_args(eps=_ACT_EPS)
        self.act = QuantizationSpec(dtype=dtype, quant_min=qmin, quant_max=qmax, qscheme=qscheme,
                                    is_dynamic=False, observer_or_fake_quant_ctr=act_ctr)
        if c.per_channel:
            w_obs = MovingAveragePerChannelMinMaxObserver if is_qat else PerChannelMinMaxObserver
            w_ctr = (FusedMovingAvgObsFakeQuantize.with_args(observer=w_obs, eps=_WEIGHT_EPS) if is_qat
                     else w_obs.with_args(eps=_WEIGHT_EPS))
            self.weight = QuantizationSpec(dtype=torch.int8, quant_min=-wmax, quant_max=wmax,
                                           qscheme=torch.per_channel_symmetric, ch_axis=0, is_dynamic=False,
                                           observer_or_fake_quant_ctr=w_ctr)
        else:
            w_ctr = (FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=_WEIGHT_EPS,
                                                             qscheme=torch.per_tensor_symmetric)
                     if is_qat else MinMaxObserver.with_args(eps=_WEIGHT_EPS, qscheme=torch.per_tensor_symmetric))
            self.weight = QuantizationSpec(dtype=torch.int8, quant_min=-wmax, quant_max=wmax,
                                           qscheme=torch.per_tensor_symmetric, is_dynamic=False,
                                           observer_or_fake_quant_ctr=w_ctr)
        # Gates live in [0, 1]. Their grid is chosen so that rounding never meets a tie, because onnxruntime
        # breaks ties otherwise than the program does (its QLinearMul; and with the float32 scale 1/255,
        # PyTorch quantizes 0.5 to 127 while onnxruntime's 0.5 / scale = 127.5000019 gives 128):
        # * a gate (SE, CBAM, EfficientAttention): steps of 2/511, zero point 0 (uint8) or -128 (int8).
        #   With 1/256, a gate of 0.5 (code 128: an SE whose input is ~0) made every odd code of x a tie in
        #   x * gate whenever the product kept x's scale -- a trained LCNet-0.5's file agreed with its
        #   program on 92 % of images; with 1/255, sigmoid(0) = 0.5 is itself a tie (127.5 codes). Here 0.5
        #   is 127.75 codes, and x * gate / s_x = 2 * q_x * q_g / 511 never lies halfway between two
        #   integers (that would need 4 * q_x * q_g = 511 * odd). The top code is 510/511.
        # * the gate inside a hard-swish (UNIT_GATE): steps of 1/255, whose top code is 1 exactly (x * 1 = x
        #   on every x >= 3); its one tie, at x = 0, multiplies 0.
        self.gate, self.unit_gate = (FixedQParamsQuantizationSpec(
            dtype=dtype, scale=scale, zero_point=0 if dtype == torch.uint8 else -128,
            quant_min=0 if dtype == torch.uint8 else -128, quant_max=255 if dtype == torch.uint8 else 127,
            qscheme=torch.per_tensor_affine,
        ) for scale in (2.0 / 511.0, 1.0 / 255.0))

    # -- helpers ---------------------------------------------------------------------------
    def _excluded(self, node: Node) -> bool:
        path = module_path(node)
        return bool(self._exclude) and any(p.search(path) for p in self._exclude)

    def _in_spec(self, arg: Node):
        """Reuse the producer's output spec so no requantization sits on the edge."""
        ann = arg.meta.get("quantization_annotation")
        if ann is not None and ann.output_qspec is not None:
            return SharedQuantizationSpec(arg)
        return self.act

    def _bias_spec(self, node: Node, act_arg: Node, weight: Node) -> DerivedQuantizationSpec:
        per_channel = self.config.per_channel

        def derive(obs):
            act_scale, _ = obs[0].calculate_qparams()
            w_scale, _ = obs[1].calculate_qparams()
            scale = (act_scale * w_scale).to(torch.float32)
            return scale, torch.zeros_like(scale, dtype=torch.int32)

        return DerivedQuantizationSpec(
            derived_from=[(act_arg, node), (weight, node)], derive_qparams_fn=derive, dtype=torch.int32,
            quant_min=-(2**31) + 1, quant_max=2**31 - 1,
            qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
            ch_axis=0 if per_channel else None,
        )

    @staticmethod
    def _mark(node: Node, inputs: dict, output) -> None:
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=inputs, output_qspec=output, _annotated=True
        )

    # -- Quantizer API ---------------------------------------------------------------------
    def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        # torchvision/timm write activations and residual adds in place (hardswish_, silu_, add_): the rules
        # below are for the out-of-place ops, which compute the same values where no one sees the mutation.
        model, _ = functionalize_inplace(unshare_params(model), copy_first=False)
        return decompose_activations(model, keep=self._excluded)

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        for node in model.graph.nodes:
            if node.op != "call_function" or "quantization_annotation" in node.meta:
                continue
            if self._excluded(node):
                continue
            t = node.target
            if t in CONV_LINEAR:
                self._annotate_conv(node)
            elif t in GATES:
                a = node.args[0]
                gate = self.unit_gate if node.meta.get(UNIT_GATE) else self.gate
                self._mark(node, {a: self._in_spec(a)} if isinstance(a, Node) else {},
                           gate if self.config.fixed_gate_qparams else self.act)
            elif t in BINARY:
                ins = {a: self._in_spec(a) for a in node.args[:2] if isinstance(a, Node)}
                if ins:
                    relu = self._sole_relu_user(node)
                    # add -> relu (residual merges): quantize after the ReLU only, which folds into the
                    # zero point; a separate range before it would leave a DQ -> Q requantization.
                    self._mark(node, ins, None if relu else self.act)
                    if relu:
                        self._mark(relu, {}, self.act)
            elif t in OWN_OUTPUT:
                a = node.args[0]
                if isinstance(a, Node):
                    self._mark(node, {a: self._in_spec(a)}, self.act)
            elif t in SHARED:
                self._annotate_shared(node)
        return model

    def _annotate_conv(self, node: Node) -> None:
        act_arg, weight = node.args[0], node.args[1]
        if self._thin_input(node):
            # A conv over 1-4 input channels (the stem over grey or RGB pixels) has too little work per
            # output for int8 kernels: onnxruntime's QLinearConv is ~5x slower than its fp32 conv there,
            # and quantizing the network input costs an extra full-size Q and NHWC transpose. It stays
            # wholly fp32 (fp32 weights, no DequantizeLinear); its consumers quantize its output.
            users = list(node.users)
            if len(users) == 1 and users[0].target in RELU:
                relu = users[0]
                pools = list(relu.users)
                if len(pools) == 1 and pools[0].target is aten.max_pool2d.default and not self._excluded(pools[0]):
                    # ResNet stems: conv -> ReLU -> max-pool. The pool stays fp32 with them and the first Q
                    # comes after it: onnxruntime ran a uint8 max-pool left between the fp32 stem and its NHWC
                    # int8 region in a slow NCHW kernel (3.6 ms of SE-ResNet-18's 11 ms at 224), and the
                    # quantized map is 4x smaller after the pool.
                    self._mark(relu, {}, None)
                    self._mark(pools[0], {}, self.act)
                else:
                    self._mark(relu, {}, self.act)  # Conv+ReLU stay one fused fp32 kernel, then Q
            return
        bias = node.args[2] if len(node.args) > 2 else None
        inputs = {act_arg: self._in_spec(act_arg), weight: self.weight}
        if isinstance(bias, Node):
            inputs[bias] = self._bias_spec(node, act_arg, weight)
        relu = self._sole_relu_user(node)
        self._mark(node, inputs, None if relu else self.act)
        if relu:
            self._mark(relu, {}, self.act)

    def _sole_relu_user(self, node: Node) -> Node | None:
        users = list(node.users)
        if len(users) == 1 and users[0].target in RELU and not self._excluded(users[0]):
            return users[0]
        return None

    @staticmethod
    def _thin_input(node: Node) -> bool:
        """A conv reading the network input (pixels) with at most 36 multiply-adds per output (a 3x3 kernel
        over at most 4 channels). A ResNet's 7x7 stem over RGB (147 per output) is int8: measured faster
        than fp32 there (0.9 vs 1.1 ms at 224), and it lets onnxruntime run the max-pool after it in its
        NHWC int8 kernel."""
        if node.target is not aten.conv2d.default or getattr(node.args[0], "op", None) != "placeholder":
            return False
        w = node.args[1].meta.get("val") if isinstance(node.args[1], Node) else None
        return w is not None and w.dim() == 4 and w.shape[1] <= 4 and w.shape[1] * w.shape[2] * w.shape[3] <= 36

    def _annotate_shared(self, node: Node) -> None:
        args = node.args[0] if node.target is aten.cat.default else [node.args[0]]
        args = [a for a in args if isinstance(a, Node)]
        if not args:
            return
        if node.target in RELU:  # a ReLU not fused into a conv
            self._mark(node, {args[0]: self._in_spec(args[0])}, self.act)
            return
        first = args[0]
        inputs = {first: self._in_spec(first)}
        share = SharedQuantizationSpec((first, node))
        for a in args[1:]:
            inputs[a] = share
        self._mark(node, inputs, share)

    def validate(self, model: torch.fx.GraphModule) -> None:
        pass
