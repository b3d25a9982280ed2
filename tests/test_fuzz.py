"""Property-based tests: random bytes, shapes, dtypes and arguments never escape as an unhandled error.

Every failure must be an ``EdgefuseError`` (one line, exit 2 at the command line), never a traceback.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgefuse.errors import EdgefuseError

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# Real file headers followed by noise reach deeper into each parser than pure noise.
HEADERS = [b"", b"PK\x03\x04", b"\x80\x02", b"\x08\x07\x12\x00", b"ORTM", b"\x93NUMPY"]
blobs = st.tuples(st.sampled_from(HEADERS), st.binary(min_size=0, max_size=512)).map(lambda t: t[0] + t[1])


@FUZZ
@given(data=blobs)
def test_checkpoint_loader_on_random_bytes(tmp_path, data):
    from edgefuse.checkpoint import load_checkpoint

    with pytest.raises(EdgefuseError):
        load_checkpoint(_write(tmp_path, "m.pt", data))


@FUZZ
@given(data=blobs, suffix=st.sampled_from([".onnx", ".ort"]))
def test_onnxruntime_loader_on_random_bytes(tmp_path, data, suffix):
    from edgefuse.runtimes import OrtModel

    with pytest.raises(EdgefuseError):
        OrtModel(_write(tmp_path, "m" + suffix, data))


@FUZZ
@given(data=blobs)
def test_pt2_loader_on_random_bytes(tmp_path, data):
    from edgefuse.api import load_model_source

    with pytest.raises(EdgefuseError):
        load_model_source(_write(tmp_path, "m.pt2", data), input_size=8, channels=1)


@FUZZ
@given(data=blobs)
def test_npz_loader_on_random_bytes(tmp_path, data):
    from edgefuse.data import load_data

    with pytest.raises(EdgefuseError):
        load_data(_write(tmp_path, "d.npz", data))


_dtypes = st.sampled_from([np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64])


@FUZZ
@given(
    x_shape=st.lists(st.integers(0, 6), min_size=0, max_size=5),
    y_len=st.integers(0, 8),
    x_dtype=_dtypes,
    y_dtype=_dtypes,
    special=st.sampled_from([None, np.nan, np.inf, -1.0]),
)
def test_npz_loader_on_random_shapes_and_dtypes(tmp_path, x_shape, y_len, x_dtype, y_dtype, special):
    from edgefuse.data import load_data

    rng = np.random.default_rng(0)
    x = (rng.random(x_shape) * 255).astype(x_dtype)
    y = rng.integers(0, 3, y_len).astype(y_dtype)
    if special is not None and x.size and np.issubdtype(x.dtype, np.floating):
        x.flat[0] = special
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    try:
        splits = load_data(_write(tmp_path, "d.npz", buf.getvalue()))
    except EdgefuseError:
        return
    assert len(splits.class_names) >= 2  # accepted data is usable data


@FUZZ
@given(d=st.dictionaries(
    st.sampled_from(["input_size", "channels", "mean", "std", "class_names", "scale", "resize", "layout",
                     "input_name", "version", "other"]),
    st.one_of(st.none(), st.integers(-3, 300), st.floats(allow_nan=True), st.text(max_size=5),
              st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4)),
))
@example(d={"input_size": None, "resize": []})  # found by this test: a list where v1 named the filter
def test_contract_from_random_dicts(d):
    from edgefuse.data import PreprocessContract

    try:
        c = PreprocessContract.from_dict(d)
    except EdgefuseError:
        return
    assert c.channels in (1, 3) and c.input_size >= 1 and all(s > 0 for s in c.std)


_tokens = st.sampled_from([
    "--out", "--data", "--format", "--max-drop", "--max-latency-ratio", "--threads", "--runs", "--split", "--json",
    "--quiet", "--fp32", "--int8", "--input-size", "--channels", "--mean", "--std", "--seed", "--batch", "--top",
    "onnx", "pte", "digits", "-1", "0", "1e9", "nan", "abc", "", "--", "/nonexistent/model.onnx", "x,y,z",
])


@FUZZ
@given(cmd=st.sampled_from(["inspect", "validate", "doctor", "verify", "list", "export", "nope"]),
       args=st.lists(_tokens, max_size=6))
def test_cli_never_crashes_on_random_arguments(cmd, args, capsys):
    from edgefuse.cli.main import main

    if cmd == "export":
        args = ["/nonexistent/model.pt", *args]  # must fail on input before any long work
    with pytest.raises(SystemExit) as e:
        main([cmd, *args])
    err = capsys.readouterr().err
    assert e.value.code in (0, 1, 2), err
    assert "Traceback" not in err and "internal error" not in err, err


# JSON values of any shape: what a damaged or hand-edited manifest, sidecar or report holds.
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=12)
# ... near-valid ones reach deeper: the real keys with values of any shape.
_manifests = st.fixed_dictionaries(
    {"schema": st.sampled_from(["edgefuse.manifest", "x"])},
    optional={"artifacts": st.lists(st.one_of(_json, st.fixed_dictionaries(
        {}, optional={"file": st.one_of(st.sampled_from(["model.fp32.onnx", "a/../b", "x\x00y", "..", 5, ["a"], None]),
                                        _json),
                      "bytes": _json, "sha256": _json, "kind": st.sampled_from(["sidecar", "onnx", None])})),
        max_size=3),
        "gate": st.one_of(_json, st.fixed_dictionaries({"passed": st.just(False), "failures": _json}))})
FUZZ_MORE = settings(FUZZ, max_examples=150)


@FUZZ_MORE
@given(manifest=st.one_of(_manifests, _json), extra=st.sampled_from([None, b"", b"{}", b"\x00\xff"]))
def test_verify_on_random_manifests(tmp_path, manifest, extra):
    import json
    import shutil

    from edgefuse.export import verify_artifacts

    out = tmp_path / "build"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(manifest))
    if extra is not None:
        (out / "model.fp32.onnx").write_bytes(extra)
        (out / "model.fp32.onnx.json").write_bytes(extra)
    try:
        res = verify_artifacts(out)
    except EdgefuseError:
        return
    assert isinstance(res.problems, list) and isinstance(res.warnings, list)


_CONTRACT = {"input_size": 8, "channels": 1, "mean": [0.0], "std": [1.0]}


@FUZZ_MORE
@given(sidecar=st.one_of(_json, st.fixed_dictionaries(
    {"schema": st.just("edgefuse.sidecar")}, optional={"contract": st.one_of(st.just(_CONTRACT), _json),
                                                        "sha256": _json, "precision": _json, "versions": _json})),
       raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_sidecar_reader_on_random_json(tmp_path, sidecar, raw):
    import json

    from edgefuse.runtimes.sidecar import SIDECAR_SCHEMA, read_sidecar_metadata

    if isinstance(sidecar, dict) and sidecar.get("schema") == "edgefuse.sidecar":
        sidecar["schema"] = SIDECAR_SCHEMA
    art = _write(tmp_path, "m.pte", b"\x00" * 16)
    side = tmp_path / "m.pte.json"
    if raw is not None:
        side.write_bytes(raw)
    else:
        side.write_text(json.dumps(sidecar))
    try:
        meta = read_sidecar_metadata(art)
    except EdgefuseError:
        return
    assert isinstance(meta, dict)


_num = st.one_of(_json, st.floats(-2, 2), st.just(float("nan")), st.just(float("inf")))


@FUZZ_MORE
@given(report=st.one_of(_json, st.fixed_dictionaries(
    {"schema": st.just("edgefuse.report")},
    optional={"models": st.one_of(_json, st.fixed_dictionaries({"int8": st.fixed_dictionaries({"top1": _num})})),
              "comparison": st.one_of(_json, st.fixed_dictionaries({"latency_ratio": _num})),
              "data": st.one_of(_json, st.fixed_dictionaries({"samples": _num}, optional={"source": _json}))})),
       raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_baseline_reader_on_random_json(tmp_path, report, raw):
    import json

    from edgefuse.validate.report import REPORT_SCHEMA
    from edgefuse.validate.stats import compare_baseline, load_baseline

    if isinstance(report, dict) and report.get("schema") == "edgefuse.report":
        report["schema"] = REPORT_SCHEMA
    p = tmp_path / "old.json"
    p.write_bytes(raw) if raw is not None else p.write_text(json.dumps(report))
    try:
        base = load_baseline(p)
        compare_baseline(base, int8_top1=0.9, latency_ratio=0.5, samples=10, source="digits")
    except EdgefuseError:
        return


@FUZZ
@given(data=st.tuples(st.sampled_from([b"", b"\x00\x00\x00\x00ET12", b"\x1c\x00\x00\x00ET12\x00\x00"]),
                      st.binary(max_size=512)).map(lambda t: t[0] + t[1]))
def test_pte_loader_on_random_bytes(tmp_path, data):
    pytest.importorskip("executorch")
    from edgefuse.runtimes import load_runtime

    with pytest.raises(EdgefuseError):
        load_runtime(_write(tmp_path, "m.pte", data))
