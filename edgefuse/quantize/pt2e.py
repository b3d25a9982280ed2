"""Post-training quantization and quantization-aware training through torchao's PT2E flow.

``torch.export`` (batch dimension symbolic) -> ``prepare_pt2e`` / ``prepare_qat_pt2e`` with
:class:`EdgefuseQuantizer` -> calibrate or fine-tune -> ``convert_pt2e``. The result is a
``torch.fx.GraphModule`` with explicit quantize/dequantize ops that the ONNX exporter turns
into QDQ int8.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import types
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from edgefuse._layout import in_layout, runs_channels_last
from edgefuse._quiet import import_pt2e, quiet
from edgefuse.distributed import EpochShards
from edgefuse.errors import DataError, UsageError
from edgefuse.limits import MAX_BATCH
from edgefuse.progress import NullProgress, Progress
from edgefuse.quantize.config import QuantConfig
from edgefuse.quantize.quantizer import EdgefuseQuantizer, module_path
from edgefuse.quantize.targets import quant_config_for
from edgefuse.quantize.xnnpack import xnnpack_quantizer

import_pt2e()
import torchao.quantization.pt2e as _ao  # noqa: E402
import torchao.quantization.pt2e.qat_utils as _qat_utils  # noqa: E402
from torchao.quantization.pt2e.export_utils import _EXPORTED_TRAINING_ATTR  # noqa: E402
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e  # noqa: E402

_aten = torch.ops.aten
_CONV_TARGETS = {
    torch.nn.functional.conv1d: {_aten.conv1d.default, _aten.conv1d.padding},
    torch.nn.functional.conv2d: {_aten.conv2d.default, _aten.conv2d.padding},
    torch.nn.functional.conv_transpose1d: {_aten.conv_transpose1d.default},
    torch.nn.functional.conv_transpose2d: {_aten.conv_transpose2d.input},
}


def _only_for_present_convs(helper):
    """torchao's QAT conv-bn fusion and folding trace ~10 pattern graphs with ``torch.export`` for each
    of conv1d, conv2d, conv_transpose1d and conv_transpose2d on every call (tens of seconds), even when the
    model has none of that conv kind. Skip a kind the graph does not contain; the result is identical."""
    def wrapper(m, conv_fn, *args, **kwargs):
        targets = _CONV_TARGETS.get(conv_fn)
        if targets is not None and not any(n.op == "call_function" and n.target in targets for n in m.graph.nodes):
            return m
        return helper(m, conv_fn, *args, **kwargs)

    wrapper._edgefuse_wrapped = True
    return wrapper


for _name in ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper"):
    if not getattr(getattr(_qat_utils, _name), "_edgefuse_wrapped", False):
        setattr(_qat_utils, _name, _only_for_present_convs(getattr(_qat_utils, _name)))


class CalibrationDataReader(Protocol):
    """onnxruntime's calibration protocol: ``get_next()`` returns the next input batch, or None at the end."""

    def get_next(self) -> torch.Tensor | None: ...


class TensorBatches:
    """A :class:`CalibrationDataReader` over ``(input, label)`` datasets or plain tensors.

    Args:
        dataset: indexable of ``(input, label)`` pairs (e.g. ``edgefuse.data.ImageDataset``) or of tensors.
        samples: how many items to use (the first ``samples``); more than the dataset holds is an error.
        batch_size: items per batch.
    """

    def __init__(self, dataset, samples: int, batch_size: int = 32) -> None:
        if samples > len(dataset):
            raise DataError(
                f"calibration needs {samples} images but the calibration split holds {len(dataset)}; "
                f"pass --calib-samples {len(dataset)} or more data"
            )
        self.dataset, self.samples, self.batch_size = dataset, samples, batch_size
        self._pos = 0

    def __len__(self) -> int:
        return math.ceil(self.samples / self.batch_size)

    def get_next(self) -> torch.Tensor | None:
        if self._pos >= self.samples:
            return None
        end = min(self._pos + self.batch_size, self.samples)
        items = [self.dataset[i] for i in range(self._pos, end)]
        self._pos = end
        x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
        if not torch.isfinite(x).all():
            raise DataError("calibration data holds NaN or Inf values")
        return x

    def rewind(self) -> None:
        self._pos = 0


def make_quantizer(config: QuantConfig, is_qat: bool = False):
    """The PT2E quantizer for ``config.backend``."""
    if config.backend == "xnnpack":
        return xnnpack_quantizer(config, is_qat)
    return EdgefuseQuantizer(config, is_qat=is_qat)


_qd = torch.ops.quantized_decomposed
_QUANT_OPS = {_qd.quantize_per_tensor.default, _qd.quantize_per_tensor.tensor}
_DEQUANT_OPS = {_qd.dequantize_per_tensor.default, _qd.dequantize_per_tensor.tensor}


def fp32_inputs_for_excluded(program: torch.fx.GraphModule, exclude: tuple[str, ...]) -> int:
    """Feed ops of excluded modules the fp32 value, not its int8 round trip.

    An excluded op is not annotated, but the op before it may quantize its own output (a conv
    does), which would still hand the excluded op a DequantizeLinear'd input and keep the error the
    user excluded it to avoid. Returns the number of inputs rewired.
    """
    patterns = [re.compile(p) for p in exclude]
    if not patterns:
        return 0
    rewired = 0
    for dq in list(program.graph.nodes):
        if dq.op != "call_function" or dq.target not in _DEQUANT_OPS:
            continue
        q = dq.args[0]
        if not isinstance(q, torch.fx.Node) or q.target not in _QUANT_OPS:
            continue
        for user in list(dq.users):
            if user.op == "call_function" and any(p.search(module_path(user)) for p in patterns):
                user.replace_input_with(dq, q.args[0])
                rewired += 1
    if rewired:
        program.graph.eliminate_dead_code()
        program.recompile()
    return rewired


#: Ops of an exported graph whose behaviour depends on the mode, and the index of their ``training`` literal.
_BN_MODE_ARG = {_aten.batch_norm.default: 5, _aten._native_batch_norm_legit.default: 5,
                _aten.cudnn_batch_norm.default: 5}
_DROPOUT_MODE_ARG = {op.default: 2 for op in (
    _aten.dropout, _aten.dropout_, _aten.feature_dropout, _aten.feature_dropout_, _aten.alpha_dropout,
    _aten.alpha_dropout_, _aten.feature_alpha_dropout, _aten.feature_alpha_dropout_)}


def set_exported_mode(program: torch.fx.GraphModule, training: bool, *, dropout: bool = True) -> int:
    """Switch an exported graph's batch-norm (and, with ``dropout``, dropout) ops to train or eval mode.

    Flips each op's own ``training`` literal and keeps every other argument. torchao's
    ``move_exported_model_to_train/eval`` instead pattern-replaces each batch norm with a default one
    (``ignore_literals=True``; its own TODO: "fails to support custom momentum and eps"), which silently
    changed ``eps`` from 1e-3 to 1e-5 in torchvision's MobileNetV3 and EfficientNet: a random-init
    MobileNetV3-small's logits changed by 390 (std 27) on its first ``.eval()``. Returns the ops switched.
    """
    table = {**_BN_MODE_ARG, **(_DROPOUT_MODE_ARG if dropout else {})}
    switched = 0
    for n in program.graph.nodes:
        i = table.get(n.target) if n.op == "call_function" else None
        if i is not None and len(n.args) > i and n.args[i] != training:
            n.args = (*n.args[:i], bool(training), *n.args[i + 1:])
            switched += 1
    if switched:
        program.recompile()
    setattr(program, _EXPORTED_TRAINING_ATTR, bool(training))
    return switched


def allow_train_eval(program: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Let generic code call ``.train()``/``.eval()`` on an exported program, with ``.training`` kept true.

    An exported GraphModule refuses ``.eval()``; this makes both calls switch its batch-norm and dropout
    ops (:func:`set_exported_mode`) and set the ``training`` flag, which torchao's
    ``allow_exported_model_train_eval`` leaves at the True a GraphModule is born with. Code that saves
    and restores the mode (``was = m.training; m.eval(); ...; m.train(was)``, as every evaluation loop
    does) then moved the program *into* training mode after its first evaluation: dropout on in every
    later run and in the exported files (torchvision's MobileNetV3 int8 agreed with its own program on
    36% of images). The program is taken as it is now (exported and converted in eval mode).
    """

    def _train(self, mode: bool = True):
        set_exported_mode(self, mode)
        self.training = bool(mode)
        return self

    def _eval(self):
        return _train(self, False)

    program.train = types.MethodType(_train, program)
    program.eval = types.MethodType(_eval, program)
    program.training = bool(getattr(program, _EXPORTED_TRAINING_ATTR, False))
    return program


def convert_calibrated(prepared: torch.fx.GraphModule, config: QuantConfig) -> torch.fx.GraphModule:
    """``convert_pt2e`` plus edgefuse's fp32 inputs for excluded modules: the int8 program PTQ and QAT return."""
    with quiet():
        program = convert_pt2e(prepared)
    fp32_inputs_for_excluded(program, config.exclude)
    return allow_train_eval(program)


def _iterate(reader: CalibrationDataReader) -> Iterator[torch.Tensor]:
    while (batch := reader.get_next()) is not None:
        yield batch


@dataclass
class QuantizedModel:
    """An int8 program and how it was made.

    Attributes:
        program: the converted ``GraphModule`` (quantize/dequantize ops around int8 weights).
        config: the :class:`QuantConfig` used.
        method: ``ptq`` or ``qat``.
        example_input: an input of the right shape (batch 1) for export.
        calib_samples: images the activation ranges were calibrated (or fine-tuned) on.
        history: per-epoch QAT records.
    """

    program: torch.fx.GraphModule
    config: QuantConfig
    method: str
    example_input: torch.Tensor
    calib_samples: int
    history: list[dict] = field(default_factory=list)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.program(x)


def capture(model: nn.Module, example_input: torch.Tensor) -> torch.fx.GraphModule:
    """``torch.export`` the model with a symbolic batch dimension and return its graph module."""
    example = example_input if example_input.shape[0] > 1 else example_input.repeat(2, *[1] * (example_input.ndim - 1))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with quiet():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()


def calibrate(
    model: nn.Module,
    calibration: CalibrationDataReader,
    config: QuantConfig,
    progress: Progress = NullProgress(),
) -> tuple[torch.fx.GraphModule, torch.Tensor, int]:
    """Capture ``model``, insert ``config``'s observers and run the calibration batches through them.

    Returns:
        ``(prepared, first_batch, images_seen)``.
    """
    model.eval()  # (exported modules' patched eval() returns None, so never chain it)
    batches = _iterate(calibration)
    first = next(batches, None)
    if first is None:
        raise DataError("calibration data is empty")
    gm = capture(model, first[:1])
    # asked before observers are inserted: the trial run must not be observed
    channels_last = runs_channels_last(gm, first[:2])
    with quiet():
        prepared = prepare_pt2e(gm, make_quantizer(config))
    total = len(calibration) if hasattr(calibration, "__len__") else 0
    progress.start("calibrate", total)
    seen = 0
    try:
        with torch.no_grad():
            for x in itertools.chain([first], batches):
                # the observers' ranges do not depend on the layout (edgefuse._layout); the convolutions'
                # float rounding does, by ~1e-7 of a scale
                prepared(in_layout(x, channels_last))
                seen += len(x)
                progress.advance("calibrate")
    finally:
        progress.finish("calibrate")
    return prepared, first, seen


def quantize_ptq(
    model: nn.Module,
    calibration: CalibrationDataReader,
    config: QuantConfig | None = None,
    *,
    progress: Progress = NullProgress(),
) -> QuantizedModel:
    """Post-training int8 quantization of an fp32 model.

    Args:
        model: any ``nn.Module`` taking one NCHW tensor (put in eval mode here).
        calibration: batches of preprocessed inputs, prepared exactly as for evaluation.
        config: quantization options; None: the defaults in this CPU's int8 flavour
            (:func:`edgefuse.quantize.targets.quant_config_for`), as ``edgefuse export`` picks them: on x86
            without VNNI that is 7-bit weights, without which onnxruntime's u8 x s8 pair sums saturate there.

    Raises:
        DataError: no calibration data, or NaN/Inf in it.
    """
    config = config or quant_config_for()
    prepared, first, seen = calibrate(model, calibration, config, progress)
    return QuantizedModel(convert_calibrated(prepared, config), config, "ptq", first[:1].clone(), seen)


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware fine-tuning.

    Attributes:
        epochs: fine-tuning epochs.
        lr: AdamW learning rate (well below training's: the weights are already good).
        batch_size: images per step.
        freeze_bn_epoch: after this many epochs batch-norm statistics stop updating.
        freeze_observer_epoch: after this many epochs (>= 1) quantization ranges stop updating.
        distill: weight of the distillation loss against the fp32 model's own predictions (the
            rest is cross-entropy on the labels); keeps the int8 model agreeing with fp32.
        seed: shuffling seed.
    """

    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 64
    freeze_bn_epoch: int = 0
    freeze_observer_epoch: int = 2
    distill: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"QAT epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise UsageError(f"QAT learning rate must be > 0, got {self.lr}")
        if not 0 <= self.distill <= 1:
            raise UsageError(f"distillation weight must be in [0, 1], got {self.distill}")
        if self.freeze_bn_epoch < 0:
            raise UsageError("the batch-norm freeze epoch must be >= 0")
        if self.freeze_observer_epoch < 1:
            raise UsageError("observers need at least one epoch to see data: freeze_observer_epoch must be >= 1")


def _freeze_bn(prepared: torch.fx.GraphModule) -> None:
    # PT2E graphs have no BatchNorm modules; switch the batch-norm ops to use running statistics.
    set_exported_mode(prepared, False, dropout=False)


def quantize_qat(
    model: nn.Module,
    train_data,
    config: QuantConfig | None = None,
    qat: QATConfig = QATConfig(),
    *,
    progress: Progress = NullProgress(),
    dist=None,
) -> QuantizedModel:
    """Quantization-aware fine-tuning, then conversion to int8.

    Args:
        model: the trained fp32 model (not modified).
        train_data: indexable of ``(input, label)`` pairs (the training split).
        config: quantization options (calibration method is replaced by moving averages); None: this CPU's
            defaults, as for :func:`quantize_ptq`.
        qat: fine-tuning schedule.
        dist: an enabled :class:`edgefuse.distributed.DistContext` (under torchrun): the prepared
            program is wrapped in ``DistributedDataParallel`` (observer buffers follow rank 0), each
            rank fine-tunes on its ``DistributedSampler`` share with ``batch_size / world_size`` items
            per step, and every rank ends with the same converted program.
    """
    config = config or quant_config_for()
    model = copy.deepcopy(model)
    model.eval()
    n = len(train_data)
    if n == 0:
        raise DataError("QAT needs training data; the training split is empty")
    xs = torch.stack([train_data[i][0] for i in range(n)])
    ys = torch.as_tensor([int(train_data[i][1]) for i in range(n)])
    with torch.no_grad():
        teacher = torch.cat([model(xs[i : i + 256]) for i in range(0, n, 256)]).softmax(1)
    model.train()
    gm = capture(model, xs[:1])
    with quiet():
        prepared = prepare_qat_pt2e(gm, make_quantizer(config, is_qat=True))
    set_exported_mode(prepared, True)
    opt = torch.optim.AdamW(prepared.parameters(), lr=qat.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(qat.seed)
    shards = EpochShards(n, qat.batch_size, qat.seed, dist)
    trainee = shards.wrap(prepared)
    if shards.world > 1 and dist.rank != 0:
        progress = NullProgress()
    steps = shards.steps
    total = steps * qat.epochs
    history: list[dict] = []
    progress.start("qat", total)
    step = 0
    try:
        for epoch in range(qat.epochs):
            if epoch >= qat.freeze_bn_epoch:
                _freeze_bn(prepared)
            if epoch >= qat.freeze_observer_epoch:
                prepared.apply(_ao.disable_observer)
            order = shards.order(epoch, gen)
            loss_sum = 0.0
            for b in range(steps):
                idx = shards.step_rows(order, b)
                for g in opt.param_groups:
                    g["lr"] = qat.lr * 0.5 * (1 + math.cos(math.pi * step / total))
                logits = trainee(xs[idx])
                loss = (1 - qat.distill) * F.cross_entropy(logits, ys[idx])
                if qat.distill:
                    loss = loss + qat.distill * F.kl_div(logits.log_softmax(1), teacher[idx], reduction="batchmean")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += loss.item() * len(idx)
                progress.advance("qat", 1, epoch=epoch + 1, loss=loss.item())
            history.append({"epoch": epoch + 1, "loss": round(loss_sum / len(order), 5),
                            "bn_frozen": epoch >= qat.freeze_bn_epoch,
                            "observers_frozen": epoch >= qat.freeze_observer_epoch})
    finally:
        progress.finish("qat")
    set_exported_mode(prepared, False)
    return QuantizedModel(convert_calibrated(prepared, config), config, "qat", xs[:1].clone(), n, history)
