"""report.html beside report.md: self-contained, every section there, the verdict as the gate has it, and a
page that headless Chromium (Debian's ``chromium``) renders to a screenshot that is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from edgefuse.pipeline.validate import validate_files
from edgefuse.reports.html import overlaid_histograms
from edgefuse.training import GateMonitor
from edgefuse.validate import Budgets
from tests.conftest import damage_int8_onnx

SECTIONS = ("gate-verdict", "files", "latency-distribution", "accuracy", "latency-aware-precision",
            "accuracy-fallback", "doctor")


@pytest.fixture(scope="module")
def build(tiny_checkpoint, tmp_path_factory):
    from edgefuse.api import export_model

    out = tmp_path_factory.mktemp("html")
    export_model(tiny_checkpoint, out, int8=True, calib="digits", runs=20, formats=("onnx",),
                 budgets=Budgets(max_drop=None, max_latency_ratio=None))
    return out


def _sections(page: str) -> list[str]:
    return re.findall(r"<section id='([a-z0-9-]+)'>", page)


def test_export_writes_a_self_contained_report_html_with_every_section(build):
    page = (build / "report.html").read_text()
    assert _sections(page) == list(SECTIONS)
    assert "PASSED" in page and "model.int8.onnx" in page
    # nothing fetched when opened: no scripts, stylesheets, images or fonts from anywhere
    assert not re.search(r"<(script|link|img|iframe)\b|url\(|@import", page)
    assert not re.search(r"(src|href)=", page)
    # the latency distribution is drawn from every timed run, not only the medians
    assert page.count("fill-opacity") >= 2


def test_a_failing_gate_reads_failed_with_its_checks(build, tmp_path):
    bad = damage_int8_onnx(build / "model.int8.onnx", tmp_path / "bad.int8.onnx")
    report = validate_files(build / "model.fp32.onnx", bad, data="digits", runs=5, out_dir=tmp_path / "out",
                            budgets=Budgets(max_drop=1.0))
    assert not report.passed
    page = (tmp_path / "out" / "report.html").read_text()
    assert "FAILED" in page and "accuracy_drop" in page and _sections(page) == list(SECTIONS)


def test_gate_histograms_are_zoomed_to_the_data():
    gate = torch.nn.Sigmoid()
    with GateMonitor(torch.nn.Sequential(gate)) as mon:
        gate(0.02 * torch.randn(4000))  # a nearly collapsed gate: std ~0.005 around 0.5
    s = mon.stats()["0"]
    z = s["zoom"]
    assert 0.45 < z["min"] < 0.5 < z["max"] < 0.55 and sum(z["counts"]) == 4000
    assert sum(1 for c in z["counts"] if c) >= 10  # many bars, not the two of a [0, 1] axis
    assert sum(1 for c in s["hist"] if c) <= 2


def test_overlaid_histograms_share_one_range():
    svg = overlaid_histograms({"a": [1.0, 1.5, 2.0], "b": [3.0, 3.4]}, title="t", xlabel="ms", bins=12)
    assert svg.count("<rect") == 5  # one bar per occupied bin of the shared 1.0 .. 3.4 range
    assert "median 1.5" in svg and "median 3.2" in svg and ">1<" in svg and ">3.4<" in svg


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
def test_headless_chromium_renders_the_report(build, tmp_path):
    shot = tmp_path / "report.png"
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"]
    subprocess.run(args + ["--window-size=1100,2600", f"--screenshot={shot}", (build / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (2600, 1100)
    ink = (img.sum(axis=2) < 600).mean()  # share of pixels that are not (near) white
    assert ink > 0.02, ink
    green = ((img[..., 1] > 100) & (img[..., 0] < 60) & (img[..., 2] < 60)).sum()  # the PASSED verdict (#080)
    assert green > 50, green
    dom = subprocess.run(args + ["--dump-dom", (build / "report.html").as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert _sections(dom.replace('"', "'")) == list(SECTIONS)
