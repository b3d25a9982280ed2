"""IDX folders (the MNIST family's format) and the named ``fashion-mnist`` source, on small IDX files the
tests write; the real package is read by the accuracy benchmark."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgefuse.cli.main import main
from edgefuse.data import load_data
from edgefuse.data.datasets import FASHION_MNIST_CLASSES, read_idx
from edgefuse.errors import DataError, InputFileError
from tests.cli._run import run_cli


def write_idx(path: Path, a: np.ndarray) -> Path:
    """An IDX file of uint8 ``a`` (gzipped when the name ends in .gz)."""
    raw = bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">i", d) for d in a.shape) + a.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def idx_folder(root: Path, n_train=60, n_test=20, classes=10, size=12, gz=True, seed=0) -> Path:
    """A Fashion-MNIST-shaped folder: train-* and t10k-* pairs of class-dependent images."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % classes
        x = (rng.random((n, size, size)) * 60 + (y * 19)[:, None, None]).astype(np.uint8)
        write_idx(root / f"{part}-images-idx3-ubyte{ext}", x)
        write_idx(root / f"{part}-labels-idx1-ubyte{ext}", y)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_folder_keeps_its_test_set_and_carves_a_seeded_validation_split(tmp_path, gz):
    root = idx_folder(tmp_path / "idx", gz=gz)
    d = load_data(root, seed=3, val_fraction=0.2)
    test_x = read_idx(root / f"t10k-images-idx3-ubyte{'.gz' if gz else ''}", 3)
    assert len(d.test) == 20 and all(np.array_equal(d.test.items[i], test_x[i]) for i in range(20))
    assert len(d.train) + len(d.val) == 60 and len(d.val) == 10  # 20 % of each class's 6 images, rounded
    assert sorted(np.unique(d.val.labels).tolist()) == list(range(10))  # stratified
    assert d.class_names == tuple(str(i) for i in range(10)) and d.default_channels == 1
    again, other = load_data(root, seed=3, val_fraction=0.2), load_data(root, seed=4, val_fraction=0.2)
    assert again.fingerprint == d.fingerprint and other.fingerprint != d.fingerprint
    assert [np.array_equal(a, b) for a, b in zip(again.val.items, d.val.items)] == [True] * 10


def test_the_fingerprint_follows_the_content(tmp_path):
    a = load_data(idx_folder(tmp_path / "a", seed=0))
    b = load_data(idx_folder(tmp_path / "b", seed=1))
    assert a.fingerprint != b.fingerprint


def test_a_single_idx_pair_is_split_like_any_unsplit_source(tmp_path):
    root = idx_folder(tmp_path / "idx")
    for f in root.glob("t10k-*"):
        f.unlink()
    d = load_data(root, val_fraction=0.2, test_fraction=0.2)
    assert len(d.train) + len(d.val) + len(d.test) == 60 and len(d.test) > 0


def test_the_named_source_reads_the_package_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFUSE_FASHION_MNIST", str(idx_folder(tmp_path / "fm")))
    d = load_data("fashion-mnist")
    assert d.class_names == FASHION_MNIST_CLASSES and d.source == "fashion-mnist" and len(d.test) == 20


def _corrupt(root: Path, name: str, data: bytes) -> None:
    (root / name).write_bytes(data)


@pytest.mark.parametrize("damage,needle", [
    (lambda r: _corrupt(r, "train-images-idx3-ubyte", b"\x01\x02\x08\x03" + b"\0" * 20), "bad magic"),
    (lambda r: _corrupt(r, "train-images-idx3-ubyte", (r / "train-images-idx3-ubyte").read_bytes()[:-5]), "the header says"),
    (lambda r: _corrupt(r, "train-labels-idx1-ubyte", b"\0\0\x0d\x01" + struct.pack(">i", 60) + b"\0" * 240),
     "element type 0x0d"),
    (lambda r: (r / "t10k-labels-idx1-ubyte").unlink(), "t10k-labels"),
    (lambda r: write_idx(r / "train-labels-idx1-ubyte", np.arange(59) % 10), "60 images"),
    (lambda r: [write_idx(r / f"{p}-labels-idx1-ubyte", np.arange(n) % 3 * 2) for p, n in (("train", 60), ("t10k", 20))],
     "must cover the classes"),
])
def test_a_damaged_idx_folder_gets_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, damage, needle):
    root = idx_folder(tmp_path / "idx", gz=False)
    damage(root)
    with pytest.raises(DataError, match=needle):
        load_data(root)
    out = tmp_path / "m.pt"
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(root), "--epochs", "1", "--out", str(out)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEFUSE_FASHION_MNIST", str(tmp_path / "none"))
    with pytest.raises(InputFileError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist")
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "fashion-mnist", "--epochs", "1", "--out", str(tmp_path / "m.pt")])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(lines) == 1 and "dataset-fashion-mnist" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_train_export_and_validate_run_on_an_idx_folder(tmp_path, capsys):
    root = idx_folder(tmp_path / "idx", n_train=200, n_test=60, size=16)
    ckpt = tmp_path / "m.pt"
    assert run_cli("train", "--data", root, "--epochs", "2", "--input-size", "16", "--out", ckpt).returncode == 0
    ran = run_cli("export", ckpt, "--int8", "--calib", root, "--calib-samples", "64", "--format", "onnx",
                  "--runs", "3", "--max-latency-ratio", "100", "--out", tmp_path / "build")
    assert ran.returncode == 0, ran.stderr
    manifest = json.loads((tmp_path / "build" / "manifest.json").read_text())
    assert manifest["data"] == {str(root): {"fingerprint": load_data(root).fingerprint}}
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["data"]["samples"] == 60  # the whole t10k file is the test split
