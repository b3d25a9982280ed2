"""The preprocessing contract: how pixels become the model's input tensor.

One contract travels with a model from training to calibration, evaluation and every exported
artifact, so all of them see identically prepared inputs (calibrating on differently
preprocessed data than evaluation is a classic silent int8 bug).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from edgefuse.errors import DataError, UsageError

#: v2 added height x width inputs, resize modes (stretch, shorter-side + centre crop, letterbox) and
#: ``interpolation`` (v1's ``resize`` named the interpolation and always stretched). v1 contracts still load.
CONTRACT_VERSION = 2
#: How an image reaches the input size.
RESIZE_MODES = ("stretch", "shorter-side", "letterbox")
#: How images of other modes become 8-bit ``color`` (see :meth:`PreprocessContract.to_image`); an app must do the same.
IMAGE_MODE_RULES = {
    "alpha": "composite over black (RGBA, LA, PA, palette with transparency); content only in alpha is refused",
    "16-bit grey": "round(value / 257) to 8 bits (I;16, I with 0..65535)",
    "16-bit RGB": "Pillow opens 48-bit PNGs as 8-bit RGB: the high byte of each value (within one level of value / 257)",
    "float": "refused (no standard range)",
    "CMYK": "PIL's CMYK -> RGB conversion",
}


@dataclass(frozen=True)
class PreprocessContract:
    """What a runtime must do to an image before calling the model.

    Steps, in order: convert to ``color`` ("L" grey or "RGB"; alpha is composited over black), bring it to
    ``height`` x ``width`` by ``resize`` with ``interpolation`` (Pillow's), scale uint8 pixels by ``scale``,
    subtract ``mean`` and divide by ``std`` per channel, lay out as ``layout``. The resize modes:

    * ``stretch``: resize to height x width, ignoring the aspect ratio.
    * ``shorter-side``: torchvision/timm evaluation: resize keeping the aspect ratio so the image covers
      ``floor(height / crop_pct)`` x ``floor(width / crop_pct)`` (square inputs: the shorter side becomes
      ``floor(side / crop_pct)`` and the longer ``int(that * long / short)``, as ``Resize(int)``; otherwise
      timm's ``ResizeKeepRatio``: each side ``round(side / min(side / target))``), then crop the centre
      (offsets ``int(round((size - crop) / 2))``, as ``CenterCrop``).
    * ``letterbox``: resize keeping the aspect ratio to fit inside (sides ``round(side * min(target /
      side))``), then centre it (offsets ``(target - side) // 2``) on a ``pad_value`` background.

    Attributes:
        input_size: side length in pixels of a square input, or ``(height, width)``.
        channels: 1 or 3.
        mean: per-channel mean, after scaling.
        std: per-channel standard deviation, after scaling.
        class_names: label of each output index.
        scale: multiplier from uint8 pixels to [0, 1].
        resize: one of :data:`RESIZE_MODES`.
        layout: tensor layout of the model input ("NCHW").
        input_name: name of the model input in exported graphs.
        interpolation: Pillow filter: "nearest", "bilinear" or "bicubic".
        crop_pct: share of the resized image the centre crop keeps (``shorter-side``; in (0, 1]).
        pad_value: background level 0..255 (``letterbox``).
    """

    input_size: int | tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=())
    scale: float = 1.0 / 255.0
    resize: str = "stretch"
    layout: str = "NCHW"
    input_name: str = "input"
    version: int = CONTRACT_VERSION
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    pad_value: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "class_names", tuple(str(v) for v in self.class_names))
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not (
                np.isfinite(self.scale) and self.scale > 0):
            raise UsageError(f"scale must be a finite number > 0, got {self.scale!r}")
        if self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 or 3, got {self.channels}")
        size = self.input_size
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in size):
                raise UsageError(f"input size must be a side or (height, width) in whole pixels, got {size!r}")
            size = (int(size[0]), int(size[1])) if size[0] != size[1] else int(size[0])
            object.__setattr__(self, "input_size", size)
        elif isinstance(size, bool) or not isinstance(size, int):
            raise UsageError(f"input size must be a whole number of pixels, got {size!r}")
        if min(self.height, self.width) < 1:
            raise UsageError(f"input size must be >= 1, got {self.input_size}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UsageError(
                f"mean and std need {self.channels} value(s) each, got {len(self.mean)} and {len(self.std)}"
            )
        if any(not np.isfinite(v) for v in self.mean + self.std) or any(s <= 0 for s in self.std):
            raise UsageError("mean must be finite and std finite and > 0")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.interpolation not in _RESAMPLE:
            raise UsageError(f"interpolation must be one of {', '.join(_RESAMPLE)}, got {self.interpolation!r}")
        if isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, (int, float)) or not 0 < self.crop_pct <= 1:
            raise UsageError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, int) or not 0 <= self.pad_value <= 255:
            raise UsageError(f"pad_value must be an integer 0..255, got {self.pad_value!r}")
        if self.version not in (1, CONTRACT_VERSION):
            raise UsageError(f"contract version {self.version} is not supported (1 or {CONTRACT_VERSION})")
        object.__setattr__(self, "version", CONTRACT_VERSION)  # a v1 contract is read as the v2 it means
        if self.layout != "NCHW":
            raise UsageError(f"only NCHW layout is supported, got {self.layout!r}")

    @property
    def color(self) -> str:
        """PIL mode the image is converted to: "L" or "RGB"."""
        return "L" if self.channels == 1 else "RGB"

    @property
    def height(self) -> int:
        return self.input_size if isinstance(self.input_size, int) else self.input_size[0]

    @property
    def width(self) -> int:
        return self.input_size if isinstance(self.input_size, int) else self.input_size[1]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.channels, self.height, self.width)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"], d["class_names"] = list(self.mean), list(self.std), list(self.class_names)
        d["input_size"] = self.input_size if isinstance(self.input_size, int) else list(self.input_size)
        d["height"], d["width"] = self.height, self.width  # for apps: always both
        d["color"] = self.color
        d["image_modes"] = IMAGE_MODE_RULES
        return d

    def summary(self) -> dict:
        """What ``edgefuse inspect`` shows of the contract: the input, the preprocessing, the classes."""
        return {
            "input": f"{self.input_name}: {'x'.join(map(str, self.input_shape))} {self.layout}, {self.color}",
            "preprocessing": {"resize": self.resize, "interpolation": self.interpolation,
                              **({"crop_pct": self.crop_pct} if self.resize == "shorter-side" else {}),
                              **({"pad_value": self.pad_value} if self.resize == "letterbox" else {}),
                              "scale": round(self.scale, 8), "mean": list(self.mean), "std": list(self.std)},
            "classes": list(self.class_names),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessContract":
        if not isinstance(d, dict):
            raise UsageError(f"invalid preprocessing contract: expected an object, got {type(d).__name__}")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if known.get("version", 1) == 1 and isinstance(known.get("resize"), str) and known["resize"] in _RESAMPLE:
            # v1: "resize" named the filter
            known["interpolation"], known["resize"] = known["resize"], "stretch"
        try:
            for key in ("channels", "version", "pad_value"):
                if key in known and (isinstance(known[key], bool) or not isinstance(known[key], int)):
                    raise TypeError(f"{key} must be an integer, got {known[key]!r}")
            size = known.get("input_size")
            if isinstance(size, list):
                known["input_size"] = tuple(size)
            elif size is not None and (isinstance(size, bool) or not isinstance(size, int)):
                raise TypeError(f"input_size must be an integer or [height, width], got {size!r}")
            for key in ("mean", "std", "class_names"):
                if key in known and not isinstance(known[key], (list, tuple)):
                    raise TypeError(f"{key} must be a list, got {known[key]!r}")
            for key in ("resize", "layout", "input_name", "interpolation"):
                if key in known and not isinstance(known[key], str):
                    raise TypeError(f"{key} must be a string, got {known[key]!r}")
            return cls(**known)
        except UsageError:
            raise
        except (TypeError, ValueError) as e:
            raise UsageError(f"invalid preprocessing contract: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> "PreprocessContract":
        """Parse a contract stored as JSON (ONNX ``metadata_props``); malformed text is a UsageError."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise UsageError(f"invalid preprocessing contract: not JSON ({e})") from None
        return cls.from_dict(d)

    def to_image(self, pixels: np.ndarray | Image.Image) -> Image.Image:
        """Convert raw pixels (uint8 HxW or HxWxC, or a PIL image of any mode) to the contract's mode.

        The rules (:data:`IMAGE_MODE_RULES`, written into every sidecar): 16-bit greyscale (PIL modes
        ``I;16*`` and ``I`` with values in 0..65535) is scaled to 8 bits by 1/257, so 65535 becomes 255
        (PIL's own conversion clips everything above 255 to white); alpha (RGBA, LA, PA, palettes with
        transparency) is composited over black; CMYK uses PIL's conversion. Refused (DataError):
        32-bit float images (no standard range), ``I`` values outside 0..65535, and images whose content
        is only in the alpha channel (the colour channels are constant, so compositing would erase it).
        """
        img = pixels if isinstance(pixels, Image.Image) else _array_to_image(pixels)
        if img.mode == "F":
            raise DataError("32-bit float images have no standard pixel range; save them as 8- or 16-bit PNG")
        if img.mode.startswith("I"):
            a = np.asarray(img, dtype=np.int64)
            if a.size and (a.min() < 0 or a.max() > 65535):
                raise DataError(f"{img.mode} image values {a.min()}..{a.max()} are outside the 16-bit range 0..65535")
            img = Image.fromarray(np.round(a / 257.0).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            colour, alpha = np.asarray(rgba)[..., :3], np.asarray(rgba)[..., 3]
            if alpha.size and alpha.min() != alpha.max() and colour.min() == colour.max():
                raise DataError("the image's content is only in its alpha channel (its colour is constant); the "
                                "contract composites alpha over black, which would erase it: save it as greyscale")
            img = Image.new("RGB", rgba.size)
            img.paste(rgba, mask=rgba.split()[-1])
        return img.convert(self.color)

    def fit(self, img: Image.Image) -> Image.Image:
        """Bring an image in the contract's colour to ``width`` x ``height`` by the resize mode (class
        docstring); the same integer arithmetic as torchvision's ``Resize``/``CenterCrop`` and timm's
        ``ResizeKeepRatio`` on PIL images."""
        h, w = self.height, self.width
        filt = _RESAMPLE[self.interpolation]
        if self.resize == "stretch":
            return img if img.size == (w, h) else img.resize((w, h), filt)
        w0, h0 = img.size
        if self.resize == "letterbox":
            r = min(h / h0, w / w0)
            nw, nh = max(1, min(w, round(w0 * r))), max(1, min(h, round(h0 * r)))
            canvas = Image.new(img.mode, (w, h), self.pad_value if img.mode == "L" else (self.pad_value,) * 3)
            canvas.paste(img if (nw, nh) == (w0, h0) else img.resize((nw, nh), filt), ((w - nw) // 2, (h - nh) // 2))
            return canvas
        sh, sw = math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)
        if sh == sw:  # torchvision Resize(int): the shorter side becomes sh, the longer int(sh * long / short)
            short, long = (w0, h0) if w0 <= h0 else (h0, w0)
            new_short, new_long = sh, int(sh * long / short)
            nw, nh = (new_short, new_long) if w0 <= h0 else (new_long, new_short)
        else:  # timm's ResizeKeepRatio: cover the scaled target, each side round(side / ratio)
            ratio = min(h0 / sh, w0 / sw)
            nw, nh = round(w0 / ratio), round(h0 / ratio)
        if (nw, nh) != (w0, h0):
            img = img.resize((nw, nh), filt)
        top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
        return img.crop((left, top, left + w, top + h))

    def preprocess(self, pixels: np.ndarray | Image.Image) -> np.ndarray:
        """One image (uint8 array or PIL image) -> float32 CHW array, exactly as the model expects."""
        img = self.fit(self.to_image(pixels))
        arr = np.asarray(img, dtype=np.float32) * np.float32(self.scale)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _array_to_image(a: np.ndarray) -> Image.Image:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise UsageError(f"raw pixels must be uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(a, "L")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return Image.fromarray(a, "RGB" if a.shape[2] == 3 else "RGBA")
    raise UsageError(f"raw pixels must be HxW or HxWx(1|3|4), got shape {a.shape}")
