"""Every command takes paths relative to the working directory (issue: doctor once changed directory first),
and none changes the working directory. Run in-process from a folder that is not the repository."""

from __future__ import annotations

import json
import os

import pytest

from edgefuse.cli.main import main


def _run(argv, capsys, ok=(0,)):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code in ok, (argv, err)
    assert "not found" not in err and "internal error" not in err, (argv, err)
    return err


def test_every_command_with_relative_paths_from_another_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "work" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    fast = ["--runs", "3", "--quiet"]
    _run(["train", "--epochs", "1", "--width", "0.25", "--input-size", "16", "--out", "sub/m.pt", "--quiet"], capsys)
    _run(["inspect", "sub/m.pt"], capsys)
    # exit 1 allowed: a 1-epoch model may fail a budget; the point is that every path resolved
    _run(["export", "sub/m.pt", "--int8", "--format", "onnx", "--calib-samples", "64", "--out", "sub/build", *fast],
         capsys, ok=(0, 1))
    assert json.loads((tmp_path / "work" / "sub" / "build" / "report.json").read_text())["schema"] == "edgefuse.report"
    _run(["inspect", "sub/build/model.int8.onnx"], capsys)
    _run(["validate", "--fp32", "sub/build/model.fp32.onnx", "--int8", "sub/build/model.int8.onnx", "--out", "sub/rep",
          *fast], capsys, ok=(0, 1))
    assert (tmp_path / "work" / "sub" / "rep" / "report.json").is_file()
    _run(["doctor", "sub/build/model.int8.onnx", "--runs", "3"], capsys)
    _run(["verify", "sub/build"], capsys, ok=(0, 1))
    _run(["analyze", "sub/m.pt", "--samples", "16", "--calib-samples", "32", "--out", "sub/an", "--quiet"], capsys)
    assert (tmp_path / "work" / "sub" / "an" / "analysis.html").is_file()
    _run(["ablate", "--fusions", "add,se", "--epochs", "1", "--width", "0.25", "--input-size", "16", "--out", "sub/ab",
          *fast], capsys)
    assert (tmp_path / "work" / "sub" / "ab" / "ablation.json").is_file()
    assert os.getcwd() == str(tmp_path / "work")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["sub"]  # nothing written beside the paths
