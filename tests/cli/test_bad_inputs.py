"""The bad-input matrix: every case gets one line on stderr naming the problem, exit code 2, no traceback,
and leaves no output behind. Run in-process through ``edgefuse.cli.main.main`` (the console entry point)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgefuse.cli.main import main


def _folder(root: Path, classes=("cat", "dog"), n=6, size=12) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _ckpt_with(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


class _Module(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


# Each case: name -> function(tmp_path, ckpt) returning (argv, expected substrings).
def _missing(t, c):
    return ["export", str(t / "nope.pt"), "--out", str(t / "out")], ["not found"]


def _empty(t, c):
    (t / "empty.pt").write_bytes(b"")
    return ["export", str(t / "empty.pt"), "--out", str(t / "out")], ["empty"]


def _oversized_model(t, c):
    with open(t / "huge.onnx", "wb") as f:  # sparse: no disk used, but stat() says > 2 GiB
        f.truncate((2 << 30) + 1)
    return ["inspect", str(t / "huge.onnx")], ["over the 2048 MiB limit"]


def _truncated_ckpt(t, c):
    data = Path(c).read_bytes()
    (t / "trunc.pt").write_bytes(data[: len(data) // 2])
    return ["export", str(t / "trunc.pt"), "--out", str(t / "out")], ["corrupt"]


def _corrupt_onnx(t, c):
    (t / "a.onnx").write_bytes(b"\x08\x07garbage" * 50)
    return ["validate", "--fp32", str(t / "a.onnx"), "--int8", str(t / "a.onnx"), "--out", str(t / "out")], \
        ["cannot load"]


def _truncated_onnx_inspect(t, c):
    (t / "b.onnx").write_bytes(b"\x0a\x05hello")
    return ["inspect", str(t / "b.onnx")], ["cannot load"]


def _corrupt_pt2(t, c):
    (t / "m.pt2").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    return ["export", str(t / "m.pt2"), "--input-size", "32", "--channels", "1", "--out", str(t / "out")], \
        ["not a torch.export archive"]


def _state_dict_mismatch(t, c):
    def edit(ck):
        ck["state_dict"].pop(next(iter(ck["state_dict"])))

    return ["export", str(_ckpt_with(c, t / "mm.pt", edit)), "--out", str(t / "out")], ["does not match"]


def _nan_weights(t, c):
    def edit(ck):
        k = next(k for k, v in ck["state_dict"].items() if v.is_floating_point())
        ck["state_dict"][k] = ck["state_dict"][k].clone().fill_(float("nan"))

    return ["export", str(_ckpt_with(c, t / "nan.pt", edit)), "--out", str(t / "out")], ["NaN or Inf"]


def _pickled_module(t, c):
    torch.save(_Module(), t / "pickled.pt")
    return ["export", str(t / "pickled.pt"), "--out", str(t / "out")], ["pickled", "--trust-pickle"]


def _unknown_model(t, c):
    return ["train", "--model", "vgg", "--out", str(t / "out" / "m.pt")], ["unknown model", "resnet"]


def _unknown_fusion(t, c):
    return ["train", "--fusion", "gcn", "--out", str(t / "out" / "m.pt")], ["unknown fusion", "effatt"]


def _unknown_format(t, c):
    return ["export", str(c), "--format", "tflite", "--out", str(t / "out")], ["unknown format", "pte"]


def _empty_folder(t, c):
    (t / "imgs").mkdir()
    return ["train", "--data", str(t / "imgs"), "--out", str(t / "out" / "m.pt")], ["no images"]


def _one_class(t, c):
    return ["train", "--data", str(_folder(t / "imgs", classes=("only",))), "--out", str(t / "out" / "m.pt")], \
        ["at least 2"]


def _zero_byte_image(t, c):
    root = _folder(t / "imgs")
    (root / "cat" / "zero.png").write_bytes(b"")
    return ["train", "--data", str(root), "--out", str(t / "out" / "m.pt")], ["0-byte"]


def _unreadable_image(t, c):
    root = _folder(t / "imgs")
    (root / "dog" / "junk.jpg").write_bytes(b"this is not a jpeg")
    return ["train", "--data", str(root), "--out", str(t / "out" / "m.pt")], ["unreadable"]


def _class_missing_from_split(t, c):
    _folder(t / "imgs" / "train")
    _folder(t / "imgs" / "test", classes=("cat",))
    return ["train", "--data", str(t / "imgs"), "--out", str(t / "out" / "m.pt")], ["dog"]


def _npz_wrong_keys(t, c):
    np.savez(t / "d.npz", images=np.zeros((20, 8, 8), np.float32), y=np.repeat([0, 1], 10))
    return ["train", "--data", str(t / "d.npz"), "--out", str(t / "out" / "m.pt")], ["'x' and 'y'"]


def _npz_wrong_shape(t, c):
    np.savez(t / "d.npz", x=np.zeros((20, 8), np.float32), y=np.repeat([0, 1], 10))
    return ["train", "--data", str(t / "d.npz"), "--out", str(t / "out" / "m.pt")], ["x must"]


def _npz_wrong_dtype(t, c):
    np.savez(t / "d.npz", x=np.zeros((20, 8, 8), np.float32), y=np.repeat([0.0, 1.0], 10))
    return ["train", "--data", str(t / "d.npz"), "--out", str(t / "out" / "m.pt")], ["integer labels"]


def _nan_calibration(t, c):
    x = np.random.default_rng(0).random((60, 8, 8)).astype(np.float32)
    x[3, 2, 2] = np.inf
    np.savez(t / "d.npz", x=x, y=np.repeat(np.arange(10), 6))
    return ["export", str(c), "--int8", "--calib", str(t / "d.npz"), "--out", str(t / "out")], ["NaN"]


def _calibration_too_small(t, c):
    return ["export", str(c), "--int8", "--calib-samples", "100000", "--out", str(t / "out")], \
        ["calibration needs 100000 images"]


def _input_too_small(t, c):
    return ["train", "--input-size", "2", "--epochs", "1", "--out", str(t / "out" / "m.pt")], ["input"]


def _negative_max_drop(t, c):
    return ["export", str(c), "--int8", "--max-drop", "-1", "--out", str(t / "out")], ["--max-drop"]


def _zero_latency_ratio(t, c):
    return ["export", str(c), "--int8", "--max-latency-ratio", "0", "--out", str(t / "out")], ["--max-latency-ratio"]


def _output_not_writable(t, c):
    (t / "afile").write_text("x")
    return ["export", str(c), "--out", str(t / "afile" / "out")], ["cannot write"]


def _output_is_a_file(t, c):
    (t / "out").write_text("x")
    return ["export", str(c), "--out", str(t / "out")], ["not a folder"]


def _output_holds_artifacts(t, c):
    (t / "out").mkdir()
    (t / "out" / "manifest.json").write_text("{}")
    return ["export", str(c), "--out", str(t / "out")], ["already holds exported artifacts", "--force"]


def _verify_not_a_folder(t, c):
    return ["verify", str(t / "nothing")], ["not a folder"]


def _zero_runs(t, c):
    return ["export", str(c), "--int8", "--runs", "0", "--out", str(t / "out")], ["--runs must be between 1"]


def _negative_threads(t, c):
    return ["export", str(c), "--int8", "--threads", "-1", "--out", str(t / "out")], ["--threads must be between 1"]


def _more_threads_than_cores(t, c):
    return (["validate", "--fp32", str(c), "--int8", str(c), "--threads", "10000"],
            ["--threads must be between 1 and this machine's"])


def _zero_batch(t, c):
    return ["export", str(c), "--int8", "--batch", "0", "--out", str(t / "out")], ["--batch must be between 1"]


def _huge_input_size(t, c):
    return (["train", "--model", "resnet", "--input-size", "100000", "--out", str(t / "m.pt")],
            ["--input-size must be between 1 and 2048", "EDGEFUSE_MAX_INPUT_SIZE"])


def _opset_too_old(t, c):
    return ["export", str(c), "--int8", "--opset", "3", "--out", str(t / "out")], ["--opset must be between 18"]


def _validate_out_is_a_file(t, c):
    (t / "rep").write_text("x")
    return (["validate", "--fp32", str(c), "--int8", str(c), "--out", str(t / "rep")],
            ["--out", "exists and is not a folder"])


def _train_out_under_a_file(t, c):
    (t / "f").write_text("x")
    return (["train", "--model", "resnet", "--epochs", "1", "--out", str(t / "f" / "model.pt")],
            ["not a folder"])


def _evil_pickle(t: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (t / "pwned",))  # the matrix's snapshot shows a created marker

    torch.save({"payload": Evil()}, t / "evil.pt")
    return t / "evil.pt"


def _trust_pickle_without_input_size(t, c):
    # The missing flag is reported before the user's pickle runs (no marker appears).
    return ["export", str(_evil_pickle(t)), "--trust-pickle", "--out", str(t / "out")], ["--input-size"]


def _state_dict_without_factory(t, c):
    torch.save(torch.load(c, weights_only=True)["state_dict"], t / "sd.pt")
    return ["export", str(t / "sd.pt"), "--out", str(t / "out")], ["--factory package.module:function"]


def _sd(t) -> str:
    from tests.cli._factories import cumprod_net

    torch.save(cumprod_net().state_dict(), t / "sd.pt")
    return str(t / "sd.pt")


_CONTRACT = ["--input-size", "8", "--channels", "1"]


def _factory_missing_module(t, c):
    return (["export", _sd(t), "--factory", "no_such_models_pkg:build", *_CONTRACT, "--out", str(t / "out")],
            ["cannot import factory", "current folder", "PYTHONPATH"])


def _factory_not_callable(t, c):
    return (["export", _sd(t), "--factory", "tests.cli._factories:NOT_CALLABLE", *_CONTRACT, "--out", str(t / "out")],
            ["has no function 'NOT_CALLABLE'"])


def _factory_raises(t, c):
    return (["export", _sd(t), "--factory", "tests.cli._factories:raising", *_CONTRACT, "--out", str(t / "out")],
            ["raised RuntimeError: the weights server is down"])


def _factory_not_a_module(t, c):
    return (["export", _sd(t), "--factory", "tests.cli._factories:not_a_module", *_CONTRACT, "--out", str(t / "out")],
            ["returned a dict, not an nn.Module"])


def _factory_without_contract(t, c):
    # a factory's model without a pretrained_cfg and no contract flags: refused, naming the flags
    return (["export", _sd(t), "--factory", "tests.cli._factories:cumprod_net", "--out", str(t / "out")],
            ["--input-size and --channels"])


def _factory_with_a_bad_contract_flag(t, c):
    # flag values are checked before the factory runs: the flag's error, not "raised"
    return (["export", _sd(t), "--factory", "tests.cli._factories:raising", "--crop-pct", "1.5", "--out",
             str(t / "out")], ["crop_pct must be in (0, 1]"])


def _input_size_not_hxw(t, c):
    return (["export", _sd(t), "--factory", "tests.cli._factories:raising", "--input-size", "48by192", "--out",
             str(t / "out")], ["--input-size takes a side (224) or HEIGHTxWIDTH"])


def _pte_lowering_fails(t, c):
    return (["export", _sd(t), "--factory", "tests.cli._factories:cumprod_net", *_CONTRACT, "--format", "pte",
             "--out", str(t / "out")],
            ["ExecuTorch lowering failed", "cumprod", "leave pte out of --format"])


def _empty_class_folder(t, c):
    root = _folder(t / "imgs")
    (root / "bird").mkdir()
    return ["train", "--data", str(root), "--out", str(t / "out" / "m.pt")], ["bird", "hold no images"]


def _empty_class_folder_presplit(t, c):
    _folder(t / "imgs" / "train")
    _folder(t / "imgs" / "test")
    (t / "imgs" / "train" / "bird").mkdir()
    (t / "imgs" / "test" / "bird").mkdir()
    return ["train", "--data", str(t / "imgs"), "--out", str(t / "out" / "m.pt")], ["bird", "hold no images"]


def _label_gaps(t, c):
    np.savez(t / "d.npz", x=np.zeros((30, 8, 8), np.float32), y=np.repeat([0, 2, 5], 10))
    return (["train", "--data", str(t / "d.npz"), "--out", str(t / "out" / "m.pt")],
            ["no image has label 1, 3, 4", "renumber"])


def _classes_differ(t, c):
    return (["export", str(c), "--int8", "--data", str(_folder(t / "imgs")), "--out", str(t / "out")],
            ["only in the model: 0, 1, 2, 3, 4, 5 (+4 more)", "only in the data: cat, dog"])


def _classes_reordered(t, c):
    x = np.random.default_rng(0).random((60, 8, 8)).astype(np.float32)
    np.savez(t / "d.npz", x=x, y=np.repeat(np.arange(10), 6), class_names=[str(9 - i) for i in range(10)])
    return (["export", str(c), "--int8", "--data", str(t / "d.npz"), "--out", str(t / "out")],
            ["same names in another order", "class 0 is '0' in the model, '9' in the data"])


def _flag_not_an_integer(t, c):
    return ["export", str(c), "--runs", "abc", "--out", str(t / "out")], ["Invalid value for '--runs'", "--help"]


def _unknown_option(t, c):
    return ["export", str(c), "--frobnicate", "--out", str(t / "out")], ["No such option: --frobnicate"]


def _missing_argument(t, c):
    return ["export", "--out", str(t / "out")], ["Missing argument"]


def _unknown_command(t, c):
    return ["exprot", str(c)], ["No such command 'exprot'"]


def _opset_too_new(t, c):
    return ["export", str(c), "--opset", "99", "--out", str(t / "out")], ["--opset must be between 18"]


def _contract_flag_on_checkpoint(t, c):
    return (["export", str(c), "--input-size", "16", "--out", str(t / "out")],
            ["carries its preprocessing contract", "may not change it"])


def _baseline_not_json(t, c):
    (t / "old.json").write_text("{not json")
    return (["export", str(c), "--int8", "--baseline", str(t / "old.json"), "--out", str(t / "out")],
            ["old.json"])


def _verify_garbage_manifest(t, c):
    (t / "build").mkdir()
    (t / "build" / "manifest.json").write_text("[1, 2")
    return ["verify", str(t / "build")], ["manifest.json"]


def _zero_calib_samples(t, c):
    return ["export", str(c), "--int8", "--calib-samples", "0", "--out", str(t / "out")], ["--calib-samples"]


def _inspect_garbage_pte(t, c):
    (t / "m.pte").write_bytes(b"\x00" * 64)
    return ["inspect", str(t / "m.pte")], ["m.pte"]


def _inspect_truncated_pte_with_sidecar(t, c):
    import json

    from edgefuse.data import PreprocessContract
    from edgefuse.runtimes.sidecar import sidecar_dict

    (t / "m.pte").write_bytes(b"\x1c\x00\x00\x00ET12" + b"\x00" * 40)  # ExecuTorch's header, then nothing
    side = sidecar_dict("m.pte", "pte", "int8", PreprocessContract(8, 1, [0.0], [1.0]), [1, 1, 8, 8], "", {})
    (t / "m.pte.json").write_text(json.dumps(side))
    return ["inspect", str(t / "m.pte")], ["ExecuTorch cannot load", "m.pte"]


def _doctor_missing_file(t, c):
    return ["doctor", str(t / "nope.onnx")], ["not found"]


def _analyze_zero_samples(t, c):
    return ["analyze", str(c), "--samples", "0", "--out", str(t / "an")], ["--samples"]


def _ablate_unknown_fusion(t, c):
    return ["ablate", "--fusions", "add,gcn", "--out", str(t / "ab")], ["unknown fusion", "gcn"]


def _negative_baseline_latency_tolerance(t, c):
    return (["export", str(c), "--int8", "--baseline-latency-tolerance", "-0.1", "--out", str(t / "out")],
            ["--baseline-latency-tolerance must be a fraction >= 0"])


def _train_zero_epochs(t, c):
    return ["train", "--epochs", "0", "--out", str(t / "out" / "m.pt")], ["--epochs"]


CASES = {f.__name__.lstrip("_"): f for f in [
    _zero_runs, _negative_threads, _more_threads_than_cores, _zero_batch, _huge_input_size, _opset_too_old,
    _validate_out_is_a_file, _train_out_under_a_file,
    _missing, _empty, _oversized_model, _truncated_ckpt, _corrupt_onnx, _truncated_onnx_inspect, _corrupt_pt2,
    _state_dict_mismatch,
    _nan_weights, _pickled_module, _unknown_model, _unknown_fusion, _unknown_format, _empty_folder, _one_class,
    _zero_byte_image, _unreadable_image, _class_missing_from_split, _npz_wrong_keys, _npz_wrong_shape,
    _npz_wrong_dtype, _nan_calibration, _calibration_too_small, _input_too_small, _negative_max_drop,
    _zero_latency_ratio, _output_not_writable, _output_is_a_file, _output_holds_artifacts, _verify_not_a_folder,
    _trust_pickle_without_input_size, _state_dict_without_factory, _factory_missing_module, _factory_not_callable,
    _factory_raises, _factory_not_a_module, _factory_without_contract, _factory_with_a_bad_contract_flag,
    _input_size_not_hxw, _pte_lowering_fails, _empty_class_folder,
    _empty_class_folder_presplit, _label_gaps, _classes_differ, _classes_reordered, _flag_not_an_integer,
    _unknown_option, _missing_argument, _unknown_command, _opset_too_new, _contract_flag_on_checkpoint,
    _baseline_not_json, _verify_garbage_manifest, _zero_calib_samples, _inspect_garbage_pte, _inspect_truncated_pte_with_sidecar,
    _doctor_missing_file,
    _analyze_zero_samples, _ablate_unknown_fusion, _train_zero_epochs, _negative_baseline_latency_tolerance,
]}


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_line_exit_2_and_leaves_nothing(case, tiny_checkpoint, tmp_path, capsys):
    argv, needles = CASES[case](tmp_path, tiny_checkpoint)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert e.value.code == 2, (case, err)
    assert len(lines) == 1 and lines[0].startswith("edgefuse: error: "), (case, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (case, n, lines[0])
    assert _snapshot(tmp_path) == before, f"{case} left files behind"


def test_pickle_is_never_executed_without_trust_pickle_and_is_with_it(tiny_checkpoint, tmp_path, capsys):
    """A pickle whose loading creates a file: refused unread without the flag; the flag is a real opt-in."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": "x", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "--trust-pickle" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "evil.pt"), "--trust-pickle", "--input-size", "8", "--channels", "1",
              "--out", str(tmp_path / "out")])
    assert marker.exists()  # the user vouched for the file, and its code ran
    assert "not an nn.Module" in capsys.readouterr().err


def test_trusted_pickled_module_exports(tmp_path, capsys):
    from edgefuse.models import create_model

    model = create_model("resnet", 10, width=0.25).eval()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "whole.pt"), "--trust-pickle", "--input-size", "32", "--channels", "1",
              "--format", "onnx", "--out", str(tmp_path / "out"), "--quiet"])
    assert e.value.code == 0, capsys.readouterr().err
    import json

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source"]["trust_pickle"] is True
    shutil.rmtree(tmp_path / "out")
