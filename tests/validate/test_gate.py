"""The gate as a pure function: measured figures in, a typed verdict out (nothing runs here)."""

import json

import pytest

from edgefuse.errors import UsageError
from edgefuse.quantize.fallback import FallbackResult
from edgefuse.validate.gate import CHECKS, GateFailure, GateResult, judge
from edgefuse.validate.report import Budgets, ModelResult, ValidationReport
from edgefuse.validate.stats import compare_baseline


def _report(drop=None, ratio=0.9, ci=None, sqnr=None, int8_top1=None, baseline=None, file="build/m.int8.onnx"):
    return ValidationReport(
        data={}, runtime={}, fp32=ModelResult("build/m.fp32.onnx", "fp32", 100, None, None, {}),
        int8=ModelResult(file, "int8", 30, int8_top1, None, {}), agreement=None, sqnr_db=sqnr, size_ratio=0.3,
        latency_ratio=ratio, accuracy_drop=drop, budgets=Budgets(), drop_ci=ci,
        extra={"baseline": baseline} if baseline else {})


def _gate(budgets, **kw):
    return judge({"onnx": _report(**kw)}, budgets)


def test_gate_arithmetic():
    assert _gate(Budgets(max_drop=0.5), drop=0.4, ratio=0.9).passed
    res = _gate(Budgets(max_drop=0.5, max_latency_ratio=1.0), drop=0.6, ratio=1.2)
    assert [f.check for f in res.failures] == ["accuracy_drop", "latency_ratio"]
    assert "by 0.10" in res.messages[0] and "by 0.200" in res.messages[1]
    assert res.failures[0].value == pytest.approx(0.6) and res.failures[0].limit == 0.5
    assert _gate(Budgets(max_drop=None, max_latency_ratio=None), drop=50.0, ratio=9.0).passed


def test_budget_equal_to_the_drop_passes_despite_float_error():
    # 0.98 - 0.975 in percentage points is 0.5000000000000004: a drop equal to the budget is within it
    assert _gate(Budgets(max_drop=0.5), drop=100 * (0.98 - 0.975)).passed


def test_gate_on_upper_ci_is_stricter_than_on_the_estimate():
    b_est = Budgets(max_drop=0.5, max_latency_ratio=None)
    b_up = Budgets(max_drop=0.5, max_latency_ratio=None, drop_bound="upper")
    assert _gate(b_est, drop=0.2, ci=(-0.3, 0.8)).passed
    res = _gate(b_up, drop=0.2, ci=(-0.3, 0.8))
    assert len(res.failures) == 1 and "95% CI" in res.messages[0] and res.failures[0].value == 0.8
    assert _gate(b_up, drop=0.2, ci=(0.0, 0.4)).passed


def test_sqnr_floor_names_the_file_and_needs_no_labels():
    res = _gate(Budgets(min_sqnr_db=10.0), sqnr=3.0)
    assert [f.check for f in res.failures] == ["output_sqnr"]
    assert res.messages[0].startswith("m.int8.onnx: int8 output SQNR 3.0 dB")
    assert _gate(Budgets(min_sqnr_db=None), sqnr=3.0).passed


def _stored(top1=0.98, ratio=0.8, samples=269, source="digits"):
    return {"schema": "edgefuse.report", "data": {"samples": samples, "source": source},
            "models": {"int8": {"top1": top1}}, "comparison": {"latency_ratio": ratio}}


def test_baseline_regressions():
    base = _stored()

    def gate(top1, ratio, **budgets):
        cmp = compare_baseline(base, int8_top1=top1, latency_ratio=ratio, samples=269, source="digits")
        return _gate(Budgets(**budgets), int8_top1=top1, ratio=ratio, baseline=cmp), cmp

    assert gate(0.98, 0.8)[0].passed
    res, cmp = gate(0.97, 0.8)
    assert [f.check for f in res.failures] == ["baseline_top1"] and "regressed 1.00 pp" in res.messages[0]
    assert cmp["top1_regression_pp"] == pytest.approx(1.0)
    assert gate(0.97, 0.8, baseline_tolerance=1.0)[0].passed
    res, _ = gate(0.99, 0.95)
    assert [f.check for f in res.failures] == ["baseline_latency"] and "latency ratio" in res.messages[0]
    assert gate(0.99, 0.95, baseline_latency_tolerance=0.25)[0].passed
    with pytest.raises(UsageError, match="other data"):
        compare_baseline(base, int8_top1=0.98, latency_ratio=0.8, samples=100, source="digits")


def test_a_whole_set_is_judged_once_with_every_format_files_and_the_fallback():
    reports = {"onnx": _report(ratio=0.9), "pte": _report(ratio=1.3, file="build/m.int8.pte")}
    fb = FallbackResult(split="val", budget_pp=0.5, fp32_top1=0.9, before_top1=0.85, after_top1=0.88,
                        kept_fp32=["layer1"], met=False)
    res = judge(reports, Budgets(), agreement={"m.int8.onnx": 1.0, "m.int8.pte": 0.5}, samples=200, fallback=fb)
    assert [(f.check, f.subject) for f in res.failures] == [
        ("latency_ratio", "pte"), ("artifact_agreement", None), ("fallback", None)]
    assert res.messages[0].startswith("pte: int8/fp32 latency ratio 1.300")
    assert "m.int8.pte agrees with the PyTorch program" in res.messages[1] and "200 images" in res.messages[1]
    assert "2.00 pp with 1 module(s)" in res.messages[2]
    assert judge(reports, Budgets(max_latency_ratio=None, min_artifact_agreement=None)).passed


def test_the_verdict_serialises_with_its_checks():
    res = _gate(Budgets(max_drop=0.5), drop=0.7, ratio=float("inf"))
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["passed"] is False and d["failures"] == res.messages
    assert [c["check"] for c in d["checks"]] == ["accuracy_drop", "latency_ratio"]
    assert d["checks"][1]["value"] is None  # an infinite ratio is not JSON
    r = _report(drop=0.7)
    r.gate = res
    assert r.failures == res.messages and not r.passed
    assert r.to_dict()["gate"]["checks"] == d["checks"]


def test_failure_kinds_are_closed():
    assert GateResult().passed
    with pytest.raises(ValueError, match="unknown gate check"):
        GateFailure("speed", "too slow")
    assert "fallback" in CHECKS
