"""The native runner (examples/native, C++17 against the executorch wheel's SDK) runs an exported .pte the way
an app does, and computes what edgefuse computes: its preprocessing equals the contract's bit for bit (every
colour rule, each resize filter, odd sizes, PNG and JPEG), and its logits equal the Python ExecuTorch
runtime's on the digits test images.

Needs cmake, a C++17 compiler, libpng, libjpeg-turbo and nlohmann-json (Debian: ``apt-get install cmake g++
libpng-dev libjpeg62-turbo-dev nlohmann-json3-dev``; .ci/run installs what is missing)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefuse.data import PreprocessContract, load_data

ROOT = Path(__file__).resolve().parents[1]
JSON_HEADER = Path("/usr/include/nlohmann/json.hpp")
pytestmark = [pytest.mark.executorch, pytest.mark.slow]
if not (shutil.which("cmake") and shutil.which("c++") and JSON_HEADER.exists()):
    pytest.skip("needs cmake, c++ and nlohmann-json3-dev (see the module docstring)", allow_module_level=True)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    import executorch

    build = tmp_path_factory.mktemp("native")
    prefix = Path(list(executorch.__path__)[0])
    subprocess.run(["cmake", "-S", ROOT / "examples" / "native", "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build, "-j2"], check=True, capture_output=True)
    return build / "edgefuse_run"


@pytest.fixture(scope="module")
def pte(tiny_checkpoint, tmp_path_factory) -> Path:
    from edgefuse.api import export_model
    from edgefuse.validate import Budgets

    out = tmp_path_factory.mktemp("pte")
    export_model(tiny_checkpoint, out, int8=True, calib="digits", runs=5, formats=("pte",),
                 budgets=Budgets(max_drop=None, max_latency_ratio=None))
    return out / "model.int8.pte"


def _run(runner: Path, model: Path, images, *flags) -> list[dict]:
    out = subprocess.run([runner, model, *images, *flags], check=True, capture_output=True, text=True, timeout=300)
    return [json.loads(line) for line in out.stdout.splitlines()]


def _images(folder: Path) -> list[Path]:
    """Every colour rule and decoder path: grey, RGB, RGBA, LA, palette (+transparency), 16-bit grey, 48-bit
    RGB, JPEG grey and colour; sizes smaller, larger and not square."""
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    made = []

    def save(name, img, **kw):
        img.save(folder / name, **kw)
        made.append(folder / name)

    grad = (np.add.outer(np.arange(23), np.arange(41)) * 4 % 256).astype(np.uint8)
    save("grey.png", Image.fromarray(grad, "L"))
    save("rgb.png", Image.fromarray(rng.integers(0, 256, (19, 57, 3), dtype=np.uint8), "RGB"))
    rgba = rng.integers(0, 256, (40, 33, 4), dtype=np.uint8)
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("la.png", Image.fromarray(rgba[..., :2], "LA"))
    pal = Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), "RGB").quantize(16)
    save("palette.png", pal)
    save("palette_t.png", pal, transparency=3)
    save("grey16.png", Image.fromarray(rng.integers(0, 65536, (17, 25), dtype=np.uint16)))
    save("large.png", Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8), "RGB"))
    save("photo.jpg", Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB"), quality=90)
    save("grey.jpg", Image.fromarray(grad, "L"), quality=85)
    return made


def _rgb48(path: Path) -> Path:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    a = (np.random.default_rng(1).integers(0, 65536, (9, 14, 3))).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in a)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 14, 9, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


SHAPES = [dict(input_size=24), dict(input_size=(48, 192), resize="shorter-side", crop_pct=0.875),
          dict(input_size=224, resize="shorter-side", crop_pct=0.875), dict(input_size=(30, 40), resize="letterbox",
                                                                               pad_value=114)]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_native_preprocessing_is_the_contract_bit_for_bit(runner, pte, tmp_path, channels, interpolation, shape):
    contract = PreprocessContract(channels=channels, mean=[0.3] * channels, std=[0.27] * channels,
                                  interpolation=interpolation, **SHAPES[shape])
    model = tmp_path / "m.pte"  # the runner reads model.pte.json; --preprocess-only never opens the program
    model.write_bytes(b"")
    side = json.loads(Path(str(pte) + ".json").read_text())
    side["contract"] = json.loads(contract.to_json())
    Path(str(model) + ".json").write_text(json.dumps(side))
    images = _images(tmp_path / "img") + [_rgb48(tmp_path / "img" / "rgb48.png")]
    rows = _run(runner, model, images, "--preprocess-only")
    assert [Path(r["image"]).name for r in rows] == [p.name for p in images]
    # a v1 sidecar (as older exports wrote it) means a stretch with its "resize" as the filter
    if shape == 0:
        v1 = {**side["contract"], "version": 1, "resize": interpolation}
        Path(str(model) + ".json").write_text(json.dumps({**side, "contract": v1}))
        assert _run(runner, model, images, "--preprocess-only") == rows
    for path, row in zip(images, rows):
        with Image.open(path) as img:
            want = contract.preprocess(img)
        got = np.asarray(row["input"], dtype=np.float32).reshape(want.shape)
        assert np.array_equal(got, want), (path.name, np.abs(got - want).max())


def test_native_logits_match_the_python_executorch_runtime(runner, pte, tmp_path):
    from edgefuse.runtimes import PteModel

    side = json.loads(Path(str(pte) + ".json").read_text())
    contract = PreprocessContract.from_json(json.dumps(side["contract"]))
    test = load_data("digits").test
    paths = []
    for i in range(64):
        p = tmp_path / f"digit{i:02d}.png"
        Image.fromarray(test.items[i]).save(p)
        paths.append(p)
    rows = _run(runner, pte, paths, "--logits", "--topk", "1")
    native = np.asarray([r["logits"] for r in rows], dtype=np.float32)
    x = np.stack([contract.preprocess(Image.open(p)) for p in paths])
    python = PteModel(pte).run(x)
    assert native.shape == python.shape == (64, len(contract.class_names))
    assert (native.argmax(1) == python.argmax(1)).all()
    diff = float(np.abs(native - python).max())
    print(f"native vs Python ExecuTorch: 64 images, top-1 identical, max |logit diff| {diff:.3g}")
    assert diff <= 1e-4 * max(1.0, float(np.abs(python).max())), diff
    assert [r["top"][0][1] for r in rows] == [contract.class_names[c] for c in python.argmax(1)]


def test_bad_input_is_one_line_and_exit_2(runner, pte, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    for args, needle in (([pte, bad], "unreadable PNG"), ([pte, tmp_path / "x.gif"], "not a .png"),
                         ([tmp_path / "none.pte", bad], "no sidecar")):
        r = subprocess.run([runner, *args], capture_output=True, text=True)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edgefuse_run")]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
