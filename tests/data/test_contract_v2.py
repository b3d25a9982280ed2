"""Contract v2: height x width inputs, the resize modes, v1 contracts read as what they meant, and the
Python preprocessing equal to torchvision's and timm's evaluation transforms on the same PIL images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgefuse.data import PreprocessContract
from edgefuse.errors import MissingExtraError, UsageError


def _photos():
    rng = np.random.default_rng(0)
    sizes = [(375, 500), (500, 375), (256, 256), (224, 300), (97, 411), (600, 180), (33, 47)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for h, w in sizes]


def test_a_v1_contract_reads_as_the_stretch_it_meant():
    v1 = {"input_size": 32, "channels": 1, "mean": [0.3], "std": [0.3], "resize": "bicubic", "version": 1}
    c = PreprocessContract.from_dict(v1)
    assert (c.resize, c.interpolation, c.version, c.input_shape) == ("stretch", "bicubic", 2, (1, 1, 32, 32))
    img = Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10))
    want = np.asarray(img.resize((32, 32), Image.Resampling.BICUBIC), np.float32) / 1  # what v1 computed
    got = c.fit(img)
    assert np.array_equal(np.asarray(got, np.float32), want)


def test_height_by_width_round_trips_and_apps_get_both_sides():
    c = PreprocessContract((48, 192), 3, [0.5] * 3, [0.25] * 3, resize="letterbox", pad_value=114)
    d = json.loads(c.to_json())
    assert d["input_size"] == [48, 192] and (d["height"], d["width"]) == (48, 192) and d["version"] == 2
    assert PreprocessContract.from_json(c.to_json()) == c
    assert c.input_shape == (1, 3, 48, 192) and c.preprocess(np.zeros((10, 20, 3), np.uint8)).shape == (3, 48, 192)
    assert PreprocessContract((7, 7), 1, [0], [1]).input_size == 7  # a square stays one side


@pytest.mark.parametrize("bad,needle", [
    ({"resize": "crop"}, "resize must be one of"), ({"interpolation": "lanczos"}, "interpolation must be"),
    ({"crop_pct": 0.0}, "crop_pct"), ({"crop_pct": 1.2}, "crop_pct"), ({"pad_value": 300}, "pad_value"),
    ({"input_size": (4, 5, 6)}, "input size"), ({"version": 3}, "version 3"),
])
def test_bad_contract_fields_are_refused(bad, needle):
    with pytest.raises(UsageError, match=needle):
        PreprocessContract(**{"input_size": 8, "channels": 1, "mean": [0], "std": [1], **bad})


def test_letterbox_keeps_the_aspect_ratio_and_pads():
    c = PreprocessContract((48, 192), 1, [0.0], [1 / 255], scale=1.0, resize="letterbox", pad_value=7)
    img = Image.fromarray(np.full((100, 100), 200, np.uint8))
    x = c.preprocess(img)[0] / 255  # back to levels
    assert np.allclose(x[:, :72], 7) and np.allclose(x[:, 120:], 7) and np.allclose(x[:, 72:120], 200)


def _torchvision():
    try:
        from edgefuse.models.third_party import import_torchvision

        return import_torchvision()
    except MissingExtraError:
        pytest.skip("needs the thirdparty extra (torchvision)")


@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("crop_pct", [0.875, 0.95, 1.0])
def test_shorter_side_equals_torchvision_resize_and_center_crop(interp, crop_pct):
    import math

    tv = _torchvision()
    T = tv.transforms
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
            "nearest": T.InterpolationMode.NEAREST}[interp]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    c = PreprocessContract(224, 3, mean, std, resize="shorter-side", crop_pct=crop_pct, interpolation=interp)
    crop = T.Compose([T.Resize(math.floor(224 / crop_pct), interpolation=mode), T.CenterCrop(224)])
    norm = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    for img in _photos():
        want = crop(img)
        assert np.array_equal(np.asarray(c.fit(img)), np.asarray(want)), img.size  # the same pixels
        # ToTensor divides by 255 where the contract multiplies by 1/255: a float32 ulp apart at most
        assert np.abs(c.preprocess(img) - norm(want).numpy()).max() < 1e-5


@pytest.mark.parametrize("size", [(48, 192), (256, 192), 224])
def test_shorter_side_equals_timm_eval_transforms(size):
    try:
        from edgefuse.models.third_party import _timm

        _timm()
        from timm.data import create_transform
    except MissingExtraError:
        pytest.skip("needs the thirdparty extra (timm)")
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    t = create_transform(input_size=(3, *size) if isinstance(size, tuple) else size, crop_pct=0.875,
                         interpolation="bicubic", mean=mean, std=std)
    crop = type(t)(t.transforms[:-2])  # everything before ToTensor + Normalize
    c = PreprocessContract(size, 3, mean, std, resize="shorter-side", crop_pct=0.875, interpolation="bicubic")
    for img in _photos():
        assert np.array_equal(np.asarray(c.fit(img)), np.asarray(crop(img))), (img.size, size)


@pytest.mark.parametrize("kw", [dict(input_size=(48, 192), resize="letterbox", pad_value=9),
                                dict(input_size=(48, 192), resize="shorter-side", crop_pct=0.9),
                                dict(input_size=64, resize="shorter-side", crop_pct=0.875, interpolation="bicubic"),
                                dict(input_size=(20, 30), interpolation="nearest")])
def test_the_app_example_fits_images_as_the_contract_does(kw):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "run_artifact.py"
    spec = importlib.util.spec_from_file_location("run_artifact", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    c = PreprocessContract(channels=3, mean=[0.5] * 3, std=[0.5] * 3, **kw)
    d = json.loads(c.to_json())
    for img in _photos():
        assert np.array_equal(np.asarray(example.fit(img, d)), np.asarray(c.fit(img))), (img.size, kw)
