"""Mobile artifacts: ONNX Runtime Mobile (.ort) and ExecuTorch (.pte), loaded back in their real runtimes."""

import json
import sys

import numpy as np
import pytest

from edgefuse._versions import sha256_file
from edgefuse.errors import InputFileError, MissingExtraError


def _export_mobile(checkpoint, out):
    from edgefuse.api import export_model
    from edgefuse.validate import Budgets

    # Latency-aware precision off: its choice is measured (so it may differ between two runs on a busy
    # machine); what must be reproducible is the build given the same choices.
    return export_model(checkpoint, out, int8=True, calib="digits", formats=("onnx", "ort", "pte"), runs=20,
                        budgets=Budgets(max_drop=None, max_latency_ratio=None), latency_search=False)


@pytest.fixture(scope="module")
def mobile(trained_checkpoint, tmp_path_factory):
    """`export --int8 --format onnx,ort,pte` of the trained digits model (PTQ, no gate)."""
    return _export_mobile(trained_checkpoint, tmp_path_factory.mktemp("mobile"))


def test_every_mobile_file_is_written_hashed_and_has_a_sidecar(mobile):
    out = mobile.export.out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {a["file"]: a for a in manifest["artifacts"]}
    for name in ("model.fp32.ort", "model.int8.ort", "model.fp32.pte", "model.int8.pte"):
        assert name in listed and (out / name).is_file()
        assert listed[name]["sha256"] == sha256_file(out / name)
        side = json.loads((out / f"{name}.json").read_text())
        assert side["sha256"] == listed[name]["sha256"] and side["file"] == name
        assert side["input"]["shape"] == [1, 1, 32, 32]  # mobile files have a static batch
        assert side["contract"] == manifest["contract"]
        assert side["contract"]["class_names"] == [str(i) for i in range(10)]
    assert "required_operators.config" in listed
    assert not any(p.name.startswith(".") for p in out.iterdir()), "temporary files left behind"


def test_required_operators_config_names_the_int8_kernels(mobile):
    ops = mobile.export.manifest["artifacts"]
    config = next(a for a in ops if a["file"] == "required_operators.config")["details"]["operators"]
    flat = {op for names in config.values() for op in names}
    assert {"QLinearConv", "Conv"} <= flat, flat


def test_each_artifact_matches_pytorch_in_its_runtime(mobile):
    agree = mobile.report.extra["pytorch_agreement"]
    assert set(agree) == {f"model.{p}.{k}" for p in ("fp32", "int8") for k in ("onnx", "ort", "pte")}
    for name, value in agree.items():
        assert value >= 0.99, (name, value)


def test_report_covers_every_format_with_delegation_and_usability(mobile):
    rep = mobile.report
    formats = rep.extra["formats"]
    assert list(formats) == ["onnx", "ort", "pte"]
    assert formats["pte"]["engine"] == "executorch" and formats["ort"]["engine"] == "onnxruntime"
    acc = mobile.accuracy
    assert abs(formats["pte"]["fp32_top1"] - acc["fp32_pytorch"]) < 1e-9
    assert abs(formats["pte"]["int8_top1"] - acc["xnnpack_int8_pytorch"]) <= 1 / 269 + 1e-9
    d = rep.extra["delegation"]["model.int8.pte"]
    # Convolutions, adds, muls all go to XNNPACK; what is left is listed by op.
    assert d["delegated_nodes"] > 5 * d["portable_nodes"], d
    assert not any("conv" in op for op in d["portable_ops"]), d
    u = rep.extra["mobile_usability"]["model.int8.ort"]
    assert {"nnapi", "coreml_mlprogram", "coreml_neuralnetwork", "limit"} <= set(u)
    assert u["nnapi"]["verdict"] in ("YES", "MAYBE", "NO") and u["nnapi"]["nodes"] > 0
    md = (mobile.export.out_dir / "report.md").read_text()
    assert "what XNNPACK runs" in md and "NNAPI / CoreML" in md and "| pte | executorch |" in md


def test_validate_runs_the_gate_on_the_shipped_pte_and_ort_files(mobile):
    from edgefuse.api import validate_files
    from edgefuse.validate import Budgets

    out = mobile.export.out_dir
    for kind, engine in (("pte", "executorch"), ("ort", "onnxruntime")):
        rep = validate_files(out / f"model.fp32.{kind}", out / f"model.int8.{kind}", data="digits", runs=10,
                             budgets=Budgets(max_drop=100.0, max_latency_ratio=None))
        assert rep.runtime["engine"] == engine
        assert rep.data["samples"] == 269
        assert rep.agreement >= 0.97 and rep.fp32.top1 > 0.95


def test_validate_refuses_mixed_runtimes(mobile):
    from edgefuse.api import validate_files
    from edgefuse.errors import DataError

    out = mobile.export.out_dir
    with pytest.raises(DataError, match="same runtime"):
        validate_files(out / "model.fp32.onnx", out / "model.int8.pte", data=None, runs=2)


def test_ort_file_keeps_the_contract_in_its_metadata(mobile):
    from edgefuse.runtimes import OrtModel

    m = OrtModel(mobile.export.out_dir / "model.int8.ort")
    meta = m.metadata()
    assert json.loads(meta["edgefuse.contract"])["mean"] == mobile.export.manifest["contract"]["mean"]
    assert m.input_shape == [1, 1, 32, 32]
    assert not any(k.startswith("onnxsim.") for k in meta)


def test_pte_runtime_pads_partial_batches(mobile):
    from edgefuse.runtimes import PteModel

    m = PteModel(mobile.export.out_dir / "model.fp32.pte")
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    batched = m.run(x)
    assert batched.shape == (3, 10)
    np.testing.assert_allclose(batched[1], m.run(x[1:2])[0], atol=1e-5)


@pytest.mark.parametrize("name", ["model.int8.onnx", "model.int8.ort", "model.int8.pte", "model.fp32.pte"])
def test_inspect_prints_the_contract_of_any_artifact(mobile, name):
    from edgefuse.api import describe_artifact

    info = describe_artifact(mobile.export.out_dir / name)
    assert info["classes"] == [str(i) for i in range(10)]
    assert info["preprocessing"]["mean"] == mobile.export.manifest["contract"]["mean"]
    assert info["precision"] == name.split(".")[1]


def test_pte_without_its_sidecar_or_with_a_broken_one_is_a_clear_error(mobile, tmp_path):
    import shutil

    from edgefuse.api import describe_artifact

    pte = tmp_path / "m.pte"
    shutil.copy(mobile.export.out_dir / "model.int8.pte", pte)
    with pytest.raises(InputFileError, match="no contract sidecar"):
        describe_artifact(pte)
    (tmp_path / "m.pte.json").write_text("{not json")
    with pytest.raises(InputFileError, match="not a readable JSON sidecar"):
        describe_artifact(pte)
    # the fp32 program's sidecar beside the int8 program: validate must not use another build's contract
    from edgefuse.api import validate_files

    shutil.copy(mobile.export.out_dir / "model.fp32.pte.json", tmp_path / "m.pte.json")
    with pytest.raises(InputFileError, match="belongs to another file"):
        validate_files(pte, pte, data=None, runs=1)


def test_pte_without_the_extra_is_a_one_line_error_and_writes_nothing(trained_checkpoint, tmp_path, monkeypatch, capsys):
    from edgefuse.cli.main import main

    # Simulate an installation without the extra: importing executorch fails.
    monkeypatch.setitem(sys.modules, "executorch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'edgefuse\[executorch\]'"):
        from edgefuse._extras import require_executorch

        require_executorch()
    out = tmp_path / "build"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(trained_checkpoint), "--int8", "--format", "onnx,pte", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edgefuse[executorch]" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("name", ["model.int8.onnx", "model.int8.ort", "model.int8.pte"])
def test_run_artifact_example_classifies_a_real_digit_from_the_contract_alone(mobile, name):
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "run_artifact.py"
    r = subprocess.run([sys.executable, str(script), str(mobile.export.out_dir / name)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert lines[0].endswith("(label 7)"), r.stdout
    assert lines[1].split()[0] == "7", r.stdout  # top class


# onnxruntime writes .ort flatbuffers with tables in hash-map order that changes from process to
# process (and within one); their content is checked against the ONNX they came from instead.
NOT_BYTE_STABLE = (".ort", ".ort.json")
LATENCY_KEYS = {"latency", "latency_ratio", "latency_rounds", "speedup", "fp32_ms", "int8_ms", "doctor", "file", "fp32_file",
                "int8_file", "failures", "passed"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in LATENCY_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_exporting_again_gives_the_same_bytes_and_report(mobile, trained_checkpoint, tmp_path):
    """Same inputs, seed and versions -> byte-identical artifacts and identical reports (latency aside)."""
    again = _export_mobile(trained_checkpoint, tmp_path / "again")
    hashes = [{a.file: a.sha256 for a in r.export.artifacts} for r in (mobile, again)]
    assert hashes[0].keys() == hashes[1].keys()
    stable = {f for f in hashes[0] if not f.endswith(NOT_BYTE_STABLE)}
    assert {"model.int8.onnx", "model.fp32.onnx", "model.int8.pte", "required_operators.config"} <= stable
    for f in stable:
        assert hashes[0][f] == hashes[1][f], f"{f} differs between two identical exports"
    reports = [_strip(json.loads((r.export.out_dir / "report.json").read_text())) for r in (mobile, again)]
    assert reports[0] == reports[1]
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    # What it takes to reproduce: versions, seed, quantization config, data fingerprint, source model.
    assert manifest["seed"] == 0 and manifest["versions"]["torch"] and manifest["versions"]["executorch"]
    assert manifest["data"]["digits"]["fingerprint"] and manifest["quantization"]["config"]["calibration"]
    assert manifest["source"]["model"]["name"] == "resnet"
