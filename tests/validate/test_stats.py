import json
import math

import numpy as np
import pytest

from edgefuse.errors import InputFileError, UsageError
from edgefuse.validate.report import Budgets
from edgefuse.validate.stats import bootstrap_drop_ci, load_baseline, per_class_drops


def test_bootstrap_ci_matches_the_binomial_interval_of_a_known_case():
    # fp32 right on all 1,000 images, int8 wrong on 50 of them: drop 5 pp, and the paired bootstrap
    # interval must match the normal approximation 5 +- 1.96 * sqrt(.05 * .95 / 1000) * 100 = [3.65, 6.35].
    f = np.ones(1000, bool)
    q = f.copy()
    q[:50] = False
    lo, hi = bootstrap_drop_ci(f, q)
    half = 1.96 * math.sqrt(0.05 * 0.95 / 1000) * 100
    assert lo == pytest.approx(5 - half, abs=0.2) and hi == pytest.approx(5 + half, abs=0.2)
    assert lo < 5 < hi
    # deterministic for a seed; relative drop is the absolute one over the fp32 accuracy (here 100%)
    assert bootstrap_drop_ci(f, q) == (lo, hi)
    rlo, rhi = bootstrap_drop_ci(f, q, drop_type="relative")
    assert rlo == pytest.approx(lo, abs=0.05) and rhi == pytest.approx(hi, abs=0.05)


def test_bootstrap_ci_is_a_point_when_int8_matches_fp32_everywhere():
    f = np.arange(300) % 7 != 0
    assert bootstrap_drop_ci(f, f.copy()) == (0.0, 0.0)


def test_bootstrap_ci_pairs_images():
    # 40 images flip right->wrong and 40 wrong->right: accuracies equal, but the paired interval is wide,
    # not a point (an unpaired view of two equal accuracies would hide the churn).
    f = np.r_[np.ones(40, bool), np.zeros(40, bool), np.ones(920, bool)]
    q = np.r_[np.zeros(40, bool), np.ones(40, bool), np.ones(920, bool)]
    lo, hi = bootstrap_drop_ci(f, q)
    assert lo < -1.0 and hi > 1.0


def test_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(UsageError):
        bootstrap_drop_ci(np.ones(3, bool), np.ones(4, bool))


def test_per_class_drops_worst_first():
    labels = np.array([0, 0, 1, 1, 2, 2])
    f = np.array([0, 0, 1, 1, 2, 2])
    q = np.array([0, 0, 1, 0, 1, 1])
    rows = per_class_drops(labels, f, q, ["zero", "one", "two"])
    assert [r["class"] for r in rows] == ["two", "one", "zero"]
    assert rows[0]["drop_pp"] == 100.0 and rows[1]["drop_pp"] == 50.0 and rows[2]["drop_pp"] == 0.0


@pytest.mark.parametrize("kw", [{"drop_bound": "median"}, {"min_samples": -1}])
def test_budget_options_are_validated(kw):
    with pytest.raises(UsageError):
        Budgets(**kw)


def _report(top1=0.98, ratio=0.8, samples=269, source="digits"):
    return {"schema": "edgefuse.report", "data": {"samples": samples, "source": source},
            "models": {"int8": {"top1": top1}}, "comparison": {"latency_ratio": ratio}}


# the baseline comparison and its gate: tests/validate/test_gate.py


def test_load_baseline_errors(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(InputFileError, match="not a JSON"):
        load_baseline(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(InputFileError, match="not an edgefuse report"):
        load_baseline(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps(_report()))
    assert load_baseline(tmp_path / "c.json")["models"]["int8"]["top1"] == 0.98
