"""ARM parity: a digits build's .onnx/.ort files (the default x86 target and --target arm64) run in onnxruntime's
aarch64 kernels on two emulated cores (plain NEON, and NEON with dot product) and compare with x86 image for
image; a missing Debian tool is one line naming its package.

Needs Debian's qemu-user-static and mmdebstrap, the Debian mirror and PyPI (the arm64 environment is made
once and cached; .ci/run installs the tools)."""

from __future__ import annotations

import json
import shutil

import pytest

from edgefuse.pipeline.arm import MIN_FP32_SQNR_DB, verify_arm
from edgefuse.runtimes.arm64 import EmulationError
from tests.cli._run import run_cli

pytestmark = pytest.mark.slow
if not (shutil.which("qemu-aarch64-static") and shutil.which("mmdebstrap")):
    pytest.skip("needs qemu-user-static and mmdebstrap (apt-get install qemu-user-static mmdebstrap)",
                allow_module_level=True)


@pytest.fixture(scope="module", params=["x86", "arm64"])
def build(request, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"build-{request.param}")
    # --target arm64 writes the .onnx only: the export's own .ort-vs-.onnx check runs on x86, where the ARM-
    # optimised .ort of this barely trained model flips a near-tie (see the issue notes)
    target = ["--format", "onnx,ort"] if request.param == "x86" else ["--target", "arm64", "--format", "onnx"]
    ran = run_cli("export", tiny_checkpoint, "--int8", *target, "--runs", "5",
                  "--max-latency-ratio", "100", "--out", out)
    assert ran.returncode == 0, ran.stderr
    return out


def test_int8_files_compute_the_same_on_arm_as_on_x86(build, tmp_path):
    # the default (x86) target must hold parity; the arm64 target's signed activations run other x86 kernels,
    # so there the check reports (SQNR bound below) rather than gates: its home is ARM
    x86_target = build.name.startswith("build-x86")
    out = tmp_path / "reports" / "arm"  # created by the command
    ran = run_cli("verify-arm", build, "--cpus", "cortex-a53,cortex-a76", "--samples", "48", "--quiet", "--out",
                  out, *(["--require-arm-parity"] if x86_target else []))
    assert ran.returncode == 0, ran.stderr
    res = json.loads((out / "arm_report.json").read_text())
    assert res["cpus"] == ["cortex-a53", "cortex-a76"] and res["samples"] == 48
    files = {r["file"] for r in res["rows"]}
    assert {"model.fp32.onnx", "model.int8.onnx"} <= files <= {"model.fp32.onnx", "model.int8.onnx", "model.fp32.ort",
                                                               "model.int8.ort"}
    for r in res["rows"]:
        if r["precision"] == "fp32":
            assert r["parity"] and r["sqnr_db"] >= MIN_FP32_SQNR_DB, r
        else:
            assert r["sqnr_db"] >= 30, r
            assert r["parity"] or not x86_target, r
            # what the phone sees: int8 agrees with fp32 on ARM as it does on x86 (within one image)
            assert abs(r["int8_vs_fp32_agreement_arm"] - r["int8_vs_fp32_agreement_x86"]) <= 1 / 48 + 2e-4, r  # 4-digit rounding
        if r["max_abs_diff"] > 0 and r["precision"] == "int8":
            assert any("requantization" in n for n in res["notes"])  # a difference comes with its reason
    print({(r["file"], r["cpu"]): (r["agreement"], r["sqnr_db"], r["max_abs_diff"]) for r in res["rows"]})


def test_parity_can_be_required_and_fails_the_gate(build):
    from edgefuse.errors import GateFailed

    with pytest.raises(GateFailed, match="ARM parity"):  # an impossible bound: any rounding difference fails
        verify_arm(build, cpus=["cortex-a76"], samples=8, require_parity=True, min_sqnr=500.0)


def test_a_missing_tool_is_one_line_naming_the_debian_package(build, monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulationError, match="apt-get install qemu-user-static"):
        verify_arm(build, cpus=["cortex-a53"], samples=4)
    ran = run_cli("verify-arm", build, "--cpus", "cortex-a53", "--quiet")
    lines = [ln for ln in ran.stderr.splitlines() if ln.strip()]
    assert ran.returncode == 2 and len(lines) == 1 and "qemu-user-static" in lines[0], ran.stderr


def test_an_out_that_is_a_file_is_refused_before_any_emulation(build, tmp_path):
    (tmp_path / "f").write_text("x")
    ran = run_cli("verify-arm", build, "--cpus", "cortex-a53", "--quiet", "--out", tmp_path / "f")
    lines = [ln for ln in ran.stderr.splitlines() if ln.strip()]
    assert ran.returncode == 2 and len(lines) == 1 and "not a folder" in lines[0], ran.stderr


def test_unknown_cores_are_refused(build):
    from edgefuse.errors import UsageError

    with pytest.raises(UsageError, match="unknown emulated CPU"):
        verify_arm(build, cpus=["pentium"])
