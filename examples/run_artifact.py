"""Run an exported model the way an app does: from the file and its preprocessing contract alone.

    python examples/run_artifact.py build/model.int8.pte  [image.png|.jpg]
    python examples/run_artifact.py build/model.int8.ort  [image]
    python examples/run_artifact.py build/model.int8.onnx [image]

The contract comes from the ONNX/ORT ``metadata_props`` (key ``edgefuse.contract``) or from the JSON
sidecar next to a ``.pte`` (``model.int8.pte.json``). Preprocessing is written out here with PIL and
NumPy only -- the same steps docs/mobile.md shows in Kotlin and Swift. Without an image, one of
scikit-learn's bundled digits is written to a PNG file and classified.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}


def load_contract(model: Path) -> dict:
    if model.suffix == ".pte":
        return json.loads(model.with_name(model.name + ".json").read_text())["contract"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map["edgefuse.contract"])


def fit(img: Image.Image, c: dict) -> Image.Image:
    """Bring the image to the contract's height x width by its resize mode (contract v2; a v1 contract's
    "resize" named the filter and always stretched)."""
    size = c["input_size"]
    h, w = (size, size) if isinstance(size, int) else size
    mode, interp = ("stretch", c["resize"]) if c.get("version", 1) == 1 else (c["resize"], c["interpolation"])
    filt = RESAMPLE[interp]
    w0, h0 = img.size
    if mode == "stretch":
        return img if (w0, h0) == (w, h) else img.resize((w, h), filt)
    if mode == "letterbox":  # fit inside, centre on pad_value
        r = min(h / h0, w / w0)
        nw, nh = max(1, min(w, round(w0 * r))), max(1, min(h, round(h0 * r)))
        canvas = Image.new(img.mode, (w, h), c["pad_value"] if img.mode == "L" else (c["pad_value"],) * 3)
        canvas.paste(img if (nw, nh) == (w0, h0) else img.resize((nw, nh), filt), ((w - nw) // 2, (h - nh) // 2))
        return canvas
    sh, sw = math.floor(h / c["crop_pct"]), math.floor(w / c["crop_pct"])  # shorter-side + centre crop
    if sh == sw:  # torchvision's Resize(int)
        short, long = (w0, h0) if w0 <= h0 else (h0, w0)
        nw, nh = (sh, int(sh * long / short)) if w0 <= h0 else (int(sh * long / short), sh)
    else:  # timm's ResizeKeepRatio
        ratio = min(h0 / sh, w0 / sw)
        nw, nh = round(w0 / ratio), round(h0 / ratio)
    if (nw, nh) != (w0, h0):
        img = img.resize((nw, nh), filt)
    top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def preprocess(image_path: Path, c: dict) -> np.ndarray:
    """Image file -> float32 NCHW batch of one, exactly as the contract says."""
    img = Image.open(image_path)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # alpha is composited over black
        img = Image.new("RGB", rgba.size)
        img.paste(rgba, mask=rgba.split()[-1])
    img = fit(img.convert(c["color"]), c)
    x = np.asarray(img, dtype=np.float32) * np.float32(c["scale"])
    if x.ndim == 2:
        x = x[:, :, None]
    x = (x - np.asarray(c["mean"], np.float32)) / np.asarray(c["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])  # HWC -> NCHW


@contextlib.contextmanager
def native_stderr_muted():
    """ExecuTorch's runtime logs its CPU probing straight to file descriptor 2; keep the output readable."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run(model: Path, x: np.ndarray) -> np.ndarray:
    if model.suffix == ".pte":
        logging.getLogger("torchao").setLevel(logging.ERROR)
        with native_stderr_muted():
            import torch
            from executorch.runtime import Runtime

            method = Runtime.get().load_program(str(model)).load_method("forward")
        return method.execute([torch.from_numpy(x)])[0].numpy()[0]
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0][0]


def sample_digit(folder: Path) -> tuple[Path, int]:
    from sklearn.datasets import load_digits

    d = load_digits()
    i = 7
    pixels = (d.images[i] * (255.0 / 16.0)).round().astype(np.uint8)  # 8x8, values 0..16
    path = folder / f"digit_{d.target[i]}.png"
    Image.fromarray(pixels, "L").save(path)
    return path, int(d.target[i])


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    model = Path(argv[0])
    with tempfile.TemporaryDirectory() as tmp:
        image, truth = (Path(argv[1]), None) if len(argv) > 1 else sample_digit(Path(tmp))
        contract = load_contract(model)
        logits = run(model, preprocess(image, contract))
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    names = contract["class_names"] or [str(i) for i in range(len(probs))]
    print(f"{model.name}: {image.name}" + (f" (label {truth})" if truth is not None else ""))
    for i in np.argsort(-probs)[:3]:
        print(f"  {names[i]:>10}  {probs[i]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
