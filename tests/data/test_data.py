import numpy as np
import torch
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


def test_digits_are_scikit_learns_read_without_importing_it():
    """The CSV read gives load_digits' arrays exactly, and the default data costs no scikit-learn import."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from edgefuse.data.datasets import _digits_arrays

    images, labels = _digits_arrays()
    d = load_digits()
    assert np.array_equal(images, d.images) and images.dtype == d.images.dtype
    assert np.array_equal(labels, d.target)
    code = ("import sys; from edgefuse.data import load_data; load_data('digits'); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


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


def _modes_contract(channels=1):
    from edgefuse.data import PreprocessContract

    return PreprocessContract(4, channels, [0.0] * channels, [1.0] * channels)


def test_16_bit_grey_is_scaled_not_clipped():
    from PIL import Image

    eight = np.array([[0, 1, 128, 255]] * 4, np.uint8)
    want = _modes_contract().preprocess(Image.fromarray(eight, "L"))
    for mode in ("I;16", "I"):
        img = Image.fromarray(eight.astype(np.uint16) * 257)
        if mode == "I":
            img = img.convert("I")
        assert img.mode == mode
        np.testing.assert_array_equal(_modes_contract().preprocess(img), want)


def test_16_bit_png_on_disk_scores_like_its_8_bit_twin(tmp_path):
    from PIL import Image

    from edgefuse.data import ImageDataset, load_data

    for depth in (8, 16):
        for c in ("a", "b"):
            (tmp_path / f"d{depth}" / c).mkdir(parents=True)
            for i in range(6):
                px = np.random.default_rng(i + 10 * (c == "b")).integers(0, 256, (8, 8)).astype(np.uint8)
                img = Image.fromarray(px, "L") if depth == 8 else Image.fromarray(px.astype(np.uint16) * 257)
                img.save(tmp_path / f"d{depth}" / c / f"{i}.png")
    a, b = load_data(str(tmp_path / "d8")), load_data(str(tmp_path / "d16"))
    c = _modes_contract()
    x8 = [ImageDataset(a.train, c)[i][0] for i in range(len(a.train))]
    x16 = [ImageDataset(b.train, c)[i][0] for i in range(len(b.train))]
    assert b.default_channels == 1
    for u, v in zip(x8, x16):
        torch.testing.assert_close(u, v)


def _png_rgb16(path, values: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (Pillow reads them but cannot write them)."""
    import struct
    import zlib

    h, w, _ = values.shape

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_rgb_png_on_disk_matches_its_8_bit_twin_within_one_level(tmp_path):
    from PIL import Image

    from edgefuse.data import ImageDataset, load_data

    for depth in (8, 16):
        for c in ("a", "b"):
            (tmp_path / f"d{depth}" / c).mkdir(parents=True)
            for i in range(6):
                rng = np.random.default_rng(i + 10 * (c == "b"))
                wide = rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
                if depth == 8:
                    Image.fromarray(np.round(wide / 257).astype(np.uint8), "RGB").save(tmp_path / "d8" / c / f"{i}.png")
                else:
                    _png_rgb16(tmp_path / "d16" / c / f"{i}.png", wide)
    a, b = load_data(str(tmp_path / "d8")), load_data(str(tmp_path / "d16"))
    assert Image.open(next((tmp_path / "d16" / "a").iterdir())).mode == "RGB"
    assert b.default_channels == 3
    c = _modes_contract(3)
    for i in range(len(a.train)):
        u, v = ImageDataset(a.train, c)[i][0], ImageDataset(b.train, c)[i][0]
        assert float((u - v).abs().max()) <= 1 / 255 + 1e-6  # the high byte vs value/257: one level at most
        assert float((u - v).abs().mean()) < 0.5 / 255


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_content_only_in_alpha_is_refused(mode):
    from PIL import Image

    from edgefuse.errors import DataError

    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 3] = np.arange(16).reshape(4, 4) * 16
    img = Image.fromarray(a, "RGBA").convert(mode)
    with pytest.raises(DataError, match="only in its alpha channel"):
        _modes_contract().preprocess(img)
    a[..., :3] = (np.arange(16).reshape(4, 4, 1) * 10 + 50).astype(np.uint8)  # colour too: composited over black
    out = _modes_contract().preprocess(Image.fromarray(a, "RGBA").convert(mode))
    assert out.max() <= 200 / 255 + 1e-6 and out.min() == 0


def test_float_palette_and_cmyk_images():
    from PIL import Image

    from edgefuse.errors import DataError

    with pytest.raises(DataError, match="float"):
        _modes_contract().preprocess(Image.fromarray(np.ones((4, 4), np.float32), "F"))
    p = Image.fromarray(np.array([[0, 1] * 2] * 4, np.uint8), "P")
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.info["transparency"] = 0
    out = _modes_contract(3).preprocess(p)
    assert out[:, :, 0].max() == 0 and out[1].max() == 1.0  # the transparent red index became black
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    assert _modes_contract(3).preprocess(cmyk).min() == 1.0  # no ink is white
    from edgefuse.data.contract import IMAGE_MODE_RULES

    assert _modes_contract().to_dict()["image_modes"] == IMAGE_MODE_RULES


def test_an_evaluation_split_within_its_budget_is_preprocessed_once(monkeypatch):
    test = load_data("digits").test
    contract = PreprocessContract(64, 3, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    calls = []
    real = PreprocessContract.preprocess
    monkeypatch.setattr(PreprocessContract, "preprocess", lambda self, px: calls.append(1) or real(self, px))
    need = len(test) * 3 * 64 * 64 * 4
    plain, kept, over = (ImageDataset(test, contract), ImageDataset(test, contract, keep_bytes=need),
                         ImageDataset(test, contract, keep_bytes=need - 1))
    for ds, per_pass in ((plain, len(test)), (kept, 0), (over, len(test))):
        first = [ds[i] for i in range(len(ds))]
        calls.clear()
        again = [ds[i] for i in range(len(ds))]
        assert len(calls) == per_pass
        assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again))
    ref = plain[5][0]
    kept[5][0].mul_(0)  # a caller writing into its batch does not change what the next one reads
    assert torch.equal(kept[5][0], ref)
