import json

import pytest

from edgefuse.errors import UnknownNameError, UsageError
from edgefuse.reports.training import read_gate_log
from edgefuse.api import ablate_models


def test_ablate_two_fusions_end_to_end(tmp_path):
    res = ablate_models(tmp_path / "abl", fusions=("add", "se"), positions=("early", "late"), epochs=3, width=0.5,
                        runs=10)
    rows = {r["variant"]: r for r in res["rows"]}
    # add is the same network at every position: trained once, not once per position
    assert [r["variant"] for r in res["rows"]] == ["add", "se@early", "se@late"]
    # SE adds its excitation MLP: more parameters and MACs than Add on the same backbone; the late stages
    # are the wide ones, so SE there costs more parameters than SE in the early ones
    for v in ("se@early", "se@late"):
        assert rows[v]["params"] > rows["add"]["params"] and rows[v]["macs"] > rows["add"]["macs"]
    assert rows["se@late"]["params"] > rows["se@early"]["params"]
    # each variant against the first one on the same test images, with a paired interval around the difference
    assert rows["add"]["fp32_vs_baseline_pp"] == 0 and rows["add"]["fp32_vs_baseline_ci95"] == [0, 0]
    for r in rows.values():
        for kind in ("fp32", "int8"):
            lo, hi = r[f"{kind}_vs_baseline_ci95"]
            d = r[f"{kind}_vs_baseline_pp"]
            assert lo <= d <= hi and d == pytest.approx(100 * (r[f"{kind}_top1"] - rows["add"][f"{kind}_top1"]), abs=1e-3)
    for r in rows.values():
        assert 0.3 < r["fp32_top1"] <= 1 and 0 <= r["int8_top1"] <= 1 and r["fp32_ms"] > 0 and r["int8_ms"] > 0
        assert r["speedup"] == pytest.approx(r["fp32_ms"] / r["int8_ms"])
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| add |" in md and "| se@late |" in md and "| fp32 vs add (95% CI) |" in md
    assert json.loads((tmp_path / "abl" / "ablation.json").read_text())["rows"][0]["variant"] == "add"
    assert "<svg" in (tmp_path / "abl" / "ablation.html").read_text()
    with pytest.raises(UsageError, match="--force"):
        ablate_models(tmp_path / "abl", fusions=("add",), epochs=1)


@pytest.mark.parametrize("kw,err", [({"fusions": ("add", "nope")}, UnknownNameError),
                                    ({"fusions": ("add", "add")}, UsageError),
                                    ({"positions": ("middle",)}, UsageError),
                                    ({"fusions": ()}, UsageError)])
def test_ablate_rejects_bad_names_before_training(kw, err, tmp_path):
    with pytest.raises(err):
        ablate_models(tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()


def test_gate_log_reader_keeps_complete_epochs(tmp_path):
    p = tmp_path / "m.gates.jsonl"
    p.write_text(json.dumps({"epoch": 1, "gates": {}}) + "\n" + '{"epoch": 2, "ga')
    assert [r["epoch"] for r in read_gate_log(p)] == [1]
    assert read_gate_log(tmp_path / "none.jsonl") == []


def test_training_writes_a_report_with_gate_plots(tmp_path):
    from edgefuse.api import train_model

    res = train_model(model="resnet", fusion="se", data="digits", out=tmp_path / "m.pt", epochs=2, width=0.25)
    html = (tmp_path / "m.train.html").read_text()
    assert res["report"] == str(tmp_path / "m.train.html")
    # accuracy, loss, then mean / std / saturated share per gate over epochs, and one histogram per gate
    gates = {g for r in read_gate_log(tmp_path / "m.gates.jsonl") for g in r["gates"]}
    assert gates and html.count("<svg") == 2 + 3 + len(gates)
    assert all(g in html for g in gates)
    assert isinstance(res["gate_flags"], dict)
