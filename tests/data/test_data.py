import numpy as np
import pytest
from PIL import Image

from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.errors import DataError, InputFileError, UsageError


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_data("digits", seed=0), load_data("digits", seed=0)
    assert a.fingerprint == b.fingerprint
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(part).labels, b.split(part).labels)
    ids = lambda raw: {arr.tobytes() + bytes([lab]) for arr, lab in zip(raw.items, raw.labels)}
    assert not ids(a.train) & ids(a.test)
    assert set(np.unique(a.test.labels)) == set(range(10))
    assert load_data("digits", seed=1).fingerprint != a.fingerprint


def test_contract_preprocess_is_exact():
    c = PreprocessContract(4, 1, [0.5], [0.25])
    img = np.full((4, 4), 255, np.uint8)
    np.testing.assert_allclose(c.preprocess(img), np.full((1, 4, 4), 2.0, np.float32))
    assert c.preprocess(np.zeros((8, 8), np.uint8)).shape == (1, 4, 4)


def test_contract_round_trips_and_validates():
    c = PreprocessContract(32, 3, [0.1, 0.2, 0.3], [0.5, 0.5, 0.5], ("a", "b"))
    assert PreprocessContract.from_dict(c.to_dict()) == c
    with pytest.raises(UsageError):
        PreprocessContract(32, 3, [0.1], [0.5])
    with pytest.raises(UsageError):
        PreprocessContract(32, 1, [0.1], [0.0])


def _write_folder(root, classes=("cat", "dog"), n=6, modes=("RGB",)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            mode = modes[i % len(modes)]
            arr = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
            img = Image.fromarray(arr, "RGB")
            img = img.convert(mode) if mode != "P" else img.convert("P", palette=Image.Palette.ADAPTIVE)
            img.save(root / c / f"{i}.png")


def test_image_folder_with_mixed_modes(tmp_path):
    _write_folder(tmp_path, modes=("L", "RGB", "RGBA", "P"))
    d = load_data(tmp_path)
    assert d.class_names == ("cat", "dog")
    c = PreprocessContract(16, 3, [0.5] * 3, [0.5] * 3)
    x, y = ImageDataset(d.train, c)[0]
    assert tuple(x.shape) == (3, 16, 16) and y in (0, 1)
    assert len(d.train) + len(d.val) + len(d.test) == 12


def test_presplit_folder_checks_missing_class(tmp_path):
    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "test", classes=("cat",))
    with pytest.raises(DataError, match="dog"):
        load_data(tmp_path)


def test_bad_folders(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_data(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_data(tmp_path / "empty")
    _write_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="at least 2"):
        load_data(tmp_path / "one")
    _write_folder(tmp_path / "zero")
    (tmp_path / "zero" / "cat" / "bad.png").write_bytes(b"")
    with pytest.raises(DataError, match="0-byte"):
        load_data(tmp_path / "zero")
    _write_folder(tmp_path / "junk")
    (tmp_path / "junk" / "dog" / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="unreadable"):
        load_data(tmp_path / "junk")


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 9, 9)).astype(np.float32)
    y = np.repeat([0, 1, 2], 10)
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    d = load_data(tmp_path / "ok.npz")
    assert d.default_channels == 1 and len(d.class_names) == 3
    np.savez(tmp_path / "keys.npz", images=x, y=y)
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_data(tmp_path / "keys.npz")
    np.savez(tmp_path / "shape.npz", x=x[:, 0], y=y)
    with pytest.raises(DataError, match="x must"):
        load_data(tmp_path / "shape.npz")
    x_nan = x.copy()
    x_nan[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x_nan, y=y)
    with pytest.raises(DataError, match="NaN"):
        load_data(tmp_path / "nan.npz")
    np.savez(tmp_path / "ylab.npz", x=x, y=y.astype(np.float32))
    with pytest.raises(DataError, match="integer labels"):
        load_data(tmp_path / "ylab.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(InputFileError, match="not a readable"):
        load_data(tmp_path / "corrupt.npz")
