"""Per-module int8 sensitivity: which module's quantization costs the accuracy, and what leaving it fp32 buys.

One calibrated int8 program serves every experiment. It is converted with fp32 weights kept in
the graph (``fold_quantize=False``) and every DequantizeLinear is routed through a switch: on, the
consumer sees the int8 value; off, it sees the fp32 value that went into the QuantizeLinear. A
quantized *unit* is the innermost module path (``stages.2.0.fusion.fc1``) of the ops that consume
those values -- the same paths ``QuantConfig.exclude`` matches -- so "only this unit in fp32" here
is what ``--exclude '^stages\\.2\\.0\\.fusion\\.fc1$'`` builds for real.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from edgefuse._quiet import import_pt2e, quiet
from edgefuse.errors import DataError
from edgefuse.progress import NullProgress, Progress
from edgefuse.quantize.config import QuantConfig
from edgefuse.quantize.eval_twin import fake_quantize
from edgefuse.quantize.pt2e import CalibrationDataReader, allow_train_eval, calibrate, fp32_inputs_for_excluded
from edgefuse.quantize.quantizer import module_path
from edgefuse.quantize.targets import quant_config_for
from edgefuse.metrics import sqnr_db, within

import_pt2e()
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e  # noqa: E402

_qd = torch.ops.quantized_decomposed
_QUANT = {_qd.quantize_per_tensor.default, _qd.quantize_per_tensor.tensor, _qd.quantize_per_channel.default}
_DEQUANT = {_qd.dequantize_per_tensor.default, _qd.dequantize_per_tensor.tensor, _qd.dequantize_per_channel.default}
#: Display name of ops outside any submodule (e.g. a functional pooling in ``forward``).
ROOT = "(model)"


def _pick(mask: torch.Tensor, i: int, quantized: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return quantized if bool(mask[i]) else original


def _round_trip(mask: torch.Tensor, i: int, x: torch.Tensor, scale, zero_point, qmin, qmax) -> torch.Tensor:
    if not bool(mask[i]):
        return x
    # the eval twin's one-buffer form of quantize_per_tensor -> dequantize_per_tensor: the same bits, and the
    # sensitivity pass (two forwards per unit) 1.75x faster (38 units of a digits ResNet: 22.6 -> 12.9 s)
    return fake_quantize(x, 1.0 / scale, scale, zero_point, qmin, qmax)


def _constant_round_trip(gm: torch.fx.GraphModule, q: torch.fx.Node, dq: torch.fx.Node) -> torch.Tensor | None:
    """``dq(q(w))`` for a constant ``w`` (all arguments constants), else None."""
    def value(a):
        if isinstance(a, torch.fx.Node):
            if a.op != "get_attr":
                raise LookupError
            obj = gm
            for part in a.target.split("."):
                obj = getattr(obj, part)
            return obj
        return a

    try:
        qargs = [value(a) for a in q.args]
        dargs = [value(a) for a in dq.args[1:]]
        dkw = {k: value(v) for k, v in dq.kwargs.items()}
    except LookupError:
        return None
    with torch.no_grad():
        return dq.target(q.target(*qargs, **q.kwargs), *dargs, **dkw).detach()


def exclude_pattern(unit: str) -> str:
    """The ``QuantConfig.exclude`` regex that keeps exactly ``unit`` in fp32."""
    return "^$" if unit == ROOT else f"^{re.escape(unit)}$"


@dataclass
class Unit:
    """One quantized module: the switches of the values its ops consume, and its output node."""

    name: str
    switches: list[int] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    output: str | None = None  # the last compute node of the unit (for activation SQNR)
    qrange: tuple[float, float] | None = None  # int8 range of that output, if it is quantized
    output_q: str | None = None  # the node that quantizes that output (its int8 value, de-quantized)


class SwitchedProgram:
    """A calibrated int8 program whose quantization can be switched on or off per unit.

    Call it like a module. ``with program.quantized(units):`` runs with only those units in int8
    (``None`` = all); ``program.fp32_only(units)`` runs with all but those.
    """

    def __init__(self, gm: torch.fx.GraphModule, units: dict[str, Unit], n_switches: int) -> None:
        self.gm, self.units = gm, units
        self.n = n_switches

    def _set(self, on: set[int]) -> None:
        mask = self.gm._edgefuse_mask
        mask.zero_()
        if on:
            mask[torch.as_tensor(sorted(on))] = True

    def _ids(self, units) -> set[int]:
        return {i for u in units for i in self.units[u].switches}

    @contextmanager
    def quantized(self, units=None):
        """Only ``units`` (all when None) run in int8."""
        self._set(set(range(self.n)) if units is None else self._ids(units))
        try:
            yield self
        finally:
            self._set(set(range(self.n)))

    @contextmanager
    def fp32_only(self, units):
        """Every unit runs in int8 except ``units``."""
        self._set(set(range(self.n)) - self._ids(units))
        try:
            yield self
        finally:
            self._set(set(range(self.n)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.gm(x)

    def capture(self, x: torch.Tensor, nodes: list[str]) -> dict[str, torch.Tensor]:
        """Run once and return the values of the named graph nodes."""
        wanted = set(nodes)
        seen: dict[str, torch.Tensor] = {}

        class _Rec(torch.fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                if n.name in wanted:
                    seen[n.name] = out.detach().clone()
                return out

        with torch.no_grad():
            _Rec(self.gm).run(x)
        return seen


def switched_program(
    model: nn.Module,
    calibration: CalibrationDataReader,
    config: QuantConfig | None = None,
    *,
    progress: Progress = NullProgress(),
) -> SwitchedProgram:
    """Calibrate ``model`` exactly as :func:`quantize_ptq` does (``config`` None: this CPU's defaults) and return
    a :class:`SwitchedProgram`."""
    config = config or quant_config_for()
    prepared, _, _ = calibrate(model, calibration, config, progress)
    return switch_prepared(prepared, config)


def switch_prepared(prepared: torch.fx.GraphModule, config: QuantConfig) -> SwitchedProgram:
    """Convert a calibrated program from :func:`edgefuse.quantize.pt2e.calibrate` into a
    :class:`SwitchedProgram` (``prepared`` is consumed: convert a copy to also get the plain int8 program)."""
    with quiet():
        gm = convert_pt2e(prepared, fold_quantize=False)
    fp32_inputs_for_excluded(gm, config.exclude)  # modules the config already excludes, as quantize_ptq does
    allow_train_eval(gm)
    graph = gm.graph
    units: dict[str, Unit] = {}
    n = 0
    gm.register_buffer("_edgefuse_mask", torch.ones(0, dtype=torch.bool))
    with graph.inserting_before(next(iter(graph.nodes))):
        mask_node = graph.get_attr("_edgefuse_mask")
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _DEQUANT:
            continue
        q = node.args[0]
        if not isinstance(q, torch.fx.Node) or q.target not in _QUANT:
            continue
        users = list(node.users)
        if not users:
            continue
        src = q.args[0]
        # A value is charged to the module that reads it; the network output (read by no module) to the
        # module that produced it.
        owner = users[0] if users[0].op != "output" else src
        name = (module_path(owner) if isinstance(owner, torch.fx.Node) else "") or ROOT
        const = _constant_round_trip(gm, q, node)
        with graph.inserting_after(node):
            if const is not None:  # weights and biases: quantize once, not on every forward
                gm.register_buffer(f"_edgefuse_rt{n}", const)
                rt = graph.get_attr(f"_edgefuse_rt{n}")
                with graph.inserting_after(rt):
                    new = graph.call_function(_pick, (mask_node, n, rt, src))
            elif q.target is _qd.quantize_per_tensor.default and node.target is _qd.dequantize_per_tensor.default:
                # Activations: the same two ops, run only while the switch is on (the integer dtype, q.args[5],
                # is not needed: fake_quantize's clamp to [qmin, qmax] is what the cast in between would keep).
                new = graph.call_function(_round_trip, (mask_node, n, src, *q.args[1:5]))
            else:
                new = graph.call_function(_pick, (mask_node, n, node, src))
        node.replace_all_uses_with(new, delete_user_cb=lambda u: u is not new)
        units.setdefault(name, Unit(name)).switches.append(n)
        n += 1
    graph.eliminate_dead_code()
    # Each unit's output: its last compute node; its int8 range from the quantize node after it.
    for node in graph.nodes:
        if node.op != "call_function" or node.target in _QUANT | _DEQUANT or node.target in (_pick, _round_trip):
            continue
        name = module_path(node) or ROOT
        if name in units:
            u = units[name]
            u.ops.append(getattr(node.target, "_opname", None) or getattr(node.target, "__name__", str(node.target)))
            u.output = node.name
            q = next((x for x in node.users if x.target is _round_trip), None)
            if q is not None and isinstance(q.args[3], float):
                scale, zp, qmin, qmax = q.args[3], q.args[4], q.args[5], q.args[6]
                u.qrange = ((qmin - zp) * scale, (qmax - zp) * scale)
                u.output_q = q.name
            else:
                u.qrange = u.output_q = None
    gm._edgefuse_mask = torch.ones(n, dtype=torch.bool)
    gm.recompile()
    return SwitchedProgram(gm, units, n)


def sqnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    """:func:`edgefuse.metrics.sqnr_db` of two tensors, in dB (``inf`` when identical)."""
    return sqnr_db(reference.detach().numpy(), test.detach().numpy())


def batched_logits(fn, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``fn`` over ``x`` in batches, without gradients, concatenated."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


@dataclass
class ModuleSensitivity:
    """How much one unit's int8 costs.

    Attributes:
        module: module path (``stages.2.0.fusion.fc1``; ``(model)`` for top-level ops).
        ops: the aten ops of the unit.
        only_int8_top1: accuracy with only this unit quantized (labels given), else None.
        fp32_kept_top1: accuracy with everything quantized except this unit.
        only_int8_sqnr_db: output SQNR with only this unit quantized (always available).
        fp32_kept_sqnr_db: output SQNR with everything but this unit quantized.
        activation_sqnr_db: SQNR of this unit's own output, all int8 vs all fp32 (error accumulated
            up to here).
        clipped: share of its fp32 output values outside its int8 range (saturation).
    """

    module: str
    ops: list[str]
    only_int8_top1: float | None
    fp32_kept_top1: float | None
    only_int8_sqnr_db: float
    fp32_kept_sqnr_db: float
    activation_sqnr_db: float | None
    clipped: float | None
    histogram: dict | None = None

    def score(self, fp32_top1: float | None, int8_top1: float | None) -> tuple:
        """Sort key, most sensitive first: accuracy regained in fp32, then lost when alone in int8,
        then output SQNR when alone in int8 (continuous, so ties on small data still rank)."""
        gain = 0.0 if self.fp32_kept_top1 is None or int8_top1 is None else self.fp32_kept_top1 - int8_top1
        loss = 0.0 if self.only_int8_top1 is None or fp32_top1 is None else fp32_top1 - self.only_int8_top1
        return (-round(gain, 6), -round(loss, 6), _finite(self.only_int8_sqnr_db))


def _finite(v: float) -> float:
    return 1e9 if math.isinf(v) else v


@dataclass
class SensitivityResult:
    """Output of :func:`module_sensitivity`: modules ranked most sensitive first."""

    samples: int
    labelled: bool
    fp32_top1: float | None
    int8_top1: float | None
    output_sqnr_db: float
    modules: list[ModuleSensitivity]

    def ranked(self) -> list[str]:
        return [m.module for m in self.modules]

    def to_dict(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "samples": self.samples, "labelled": self.labelled, "fp32_top1": self.fp32_top1,
            "int8_top1": self.int8_top1, "output_sqnr_db": clean(self.output_sqnr_db),
            "modules": [{k: clean(v) for k, v in m.__dict__.items()} for m in self.modules],
        }


def _stack(dataset, limit: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise DataError("the analysis split is empty")
    items = [dataset[i] for i in range(n)]
    if isinstance(items[0], (tuple, list)):
        x = torch.stack([it[0] for it in items])
        y = torch.as_tensor([int(it[1]) for it in items])
        return x, y
    return torch.stack(items), None


def module_sensitivity(
    program: SwitchedProgram,
    dataset,
    *,
    samples: int | None = None,
    batch_size: int = 256,
    histogram_bins: int = 40,
    progress: Progress = NullProgress(),
) -> SensitivityResult:
    """Measure every unit of ``program``: alone in int8, alone in fp32, and its activation SQNR.

    Args:
        program: from :func:`switched_program`.
        dataset: ``(input, label)`` pairs (accuracy) or bare input tensors (output SQNR only).
        samples: use the first ``samples`` items (default all).

    Returns:
        A :class:`SensitivityResult` ranked most sensitive first.
    """
    x, y = _stack(dataset, samples)

    def logits() -> torch.Tensor:
        return batched_logits(program, x, batch_size)

    def acc(out: torch.Tensor) -> float | None:
        return None if y is None else top1(out, y)

    with program.quantized(set()):
        ref = logits()
    with program.quantized(None):
        full = logits()
    names = list(program.units)
    progress.start("analyze", 2 * len(names) + 2)
    rows = []
    try:
        # Activation SQNR per unit on one batch (all fp32 vs all int8).
        outs = [u.output for u in program.units.values() if u.output]
        xb = x[:batch_size]
        with program.quantized(set()):
            a_ref = program.capture(xb, outs)
        progress.advance("analyze")
        with program.quantized(None):
            a_q = program.capture(xb, outs)
        progress.advance("analyze")
        for name in names:
            u = program.units[name]
            with program.quantized({name}):
                only = logits()
            progress.advance("analyze")
            with program.fp32_only({name}):
                kept = logits()
            progress.advance("analyze")
            act = clipped = hist = None
            if u.output in a_ref and u.output in a_q:
                r, q = a_ref[u.output], a_q[u.output]
                act = sqnr(r, q)
                if u.qrange is not None:
                    lo, hi = u.qrange
                    clipped = float(((r < lo) | (r > hi)).float().mean())
                vals = r.flatten().float()
                lo_h, hi_h = float(vals.min()), float(vals.max())
                if hi_h > lo_h:
                    counts = torch.histc(vals, bins=histogram_bins, min=lo_h, max=hi_h)
                    hist = {"min": lo_h, "max": hi_h, "counts": [int(c) for c in counts],
                            "qrange": list(u.qrange) if u.qrange else None}
            rows.append(ModuleSensitivity(
                module=name, ops=sorted(set(u.ops)), only_int8_top1=acc(only), fp32_kept_top1=acc(kept),
                only_int8_sqnr_db=sqnr(ref, only), fp32_kept_sqnr_db=sqnr(ref, kept),
                activation_sqnr_db=act, clipped=clipped, histogram=hist))
    finally:
        progress.finish("analyze")
    f_top1, q_top1 = acc(ref), acc(full)
    rows.sort(key=lambda m: m.score(f_top1, q_top1))
    return SensitivityResult(len(x), y is not None, f_top1, q_top1, sqnr(ref, full), rows)


def greedy_fallback(
    program: SwitchedProgram,
    ranking: list[str],
    dataset,
    max_drop_pp: float,
    *,
    samples: int | None = None,
    max_modules: int | None = None,
) -> tuple[list[str], list[dict]]:
    """Keep the most sensitive units in fp32, one at a time in ``ranking`` order, until the top-1 drop
    on ``dataset`` is within ``max_drop_pp`` percentage points.

    Returns:
        ``(kept, steps)``: the units kept in fp32 (empty if the budget already holds) and one record
        per step (``{"module", "top1", "drop_pp"}``). If the budget is never met, ``kept`` holds every
        unit tried and the last step's drop is still above budget.
    """
    x, y = _stack(dataset, samples)
    if y is None:
        raise DataError("the accuracy fallback needs labelled data")

    def acc() -> float:
        return top1(batched_logits(program, x), y)

    with program.quantized(set()):
        fp32 = acc()
    kept: list[str] = []
    steps: list[dict] = []
    with program.fp32_only(kept):
        cur = acc()
    steps.append({"module": None, "top1": cur, "drop_pp": 100 * (fp32 - cur)})
    for name in ranking[: max_modules or len(ranking)]:
        if within(100 * (fp32 - cur), max_drop_pp):
            break
        kept.append(name)
        with program.fp32_only(kept):
            cur = acc()
        steps.append({"module": name, "top1": cur, "drop_pp": 100 * (fp32 - cur)})
    return kept, steps


__all__ = [
    "ROOT", "ModuleSensitivity", "SensitivityResult", "SwitchedProgram", "Unit", "batched_logits", "exclude_pattern",
    "greedy_fallback", "module_sensitivity", "sqnr", "switch_prepared", "switched_program", "top1",
]
