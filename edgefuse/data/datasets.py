"""Labelled image sources: the bundled digits, image folders and ``.npz`` files.

A source becomes :class:`DataSplits` of raw uint8 images (train / val / test, fixed by a seed);
:class:`ImageDataset` applies a :class:`PreprocessContract` lazily, one image at a time, so memory
stays bounded by the raw data, not by the model's input size.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edgefuse.data.contract import PreprocessContract
from edgefuse.errors import DataError, InputFileError

#: Where Debian's ``dataset-fashion-mnist`` package puts the official IDX files (``EDGEFUSE_FASHION_MNIST``
#: names another folder holding them).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
#: Named sources :func:`load_data` knows besides paths.
NAMED_SOURCES = ("digits", "fashion-mnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_DIRS = ("train", "val", "test")


@dataclass
class RawImages:
    """Images (uint8 arrays in memory, or file paths read on demand) with integer labels."""

    items: Sequence[np.ndarray | Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray | Image.Image:
        item = self.items[i]
        if isinstance(item, Path):
            return _open_image(item)
        return item

    def subset(self, idx: Sequence[int]) -> "RawImages":
        return RawImages([self.items[i] for i in idx], self.labels[np.asarray(idx, dtype=int)])


@dataclass
class DataSplits:
    """A labelled data set split into train, validation and test parts.

    Attributes:
        train, val, test: the parts; ``test`` is what accuracy is reported on.
        class_names: label of each class index.
        source: where the data came from.
        fingerprint: sha256 over the source's content and the split, for manifests.
    """

    train: RawImages
    val: RawImages
    test: RawImages
    class_names: tuple[str, ...]
    source: str
    fingerprint: str
    default_channels: int = 3

    def split(self, name: str) -> RawImages:
        if name not in SPLIT_DIRS:
            raise DataError(f"unknown split {name!r}; choose one of: {', '.join(SPLIT_DIRS)}")
        return getattr(self, name)


#: An evaluation split whose preprocessed images fit in this many bytes is preprocessed once and kept
#: (:class:`ImageDataset`'s ``keep_bytes``): ``export`` reads its test split three times (the PyTorch fp32
#: model, the int8 program, the files in onnxruntime) and the fp32 fallback reads the validation split once
#: per candidate; resizing digits' 269 test images to 224x224 takes ~0.5 s a pass, and they are 162 MiB.
EVAL_KEEP_BYTES = 256 * 2**20


class ImageDataset(torch.utils.data.Dataset):
    """``(input tensor, label)`` pairs: raw images through a contract, preprocessed on access.

    Args:
        raw: the images and labels.
        contract: the preprocessing.
        keep_bytes: keep every preprocessed image after its first access when the whole split takes at most
            this many bytes (0: never). Each access returns its own copy.
    """

    def __init__(self, raw: RawImages, contract: PreprocessContract, *, keep_bytes: int = 0) -> None:
        self.raw, self.contract = raw, contract
        nbytes = len(raw) * int(np.prod(contract.input_shape[1:])) * 4
        self._kept: dict[int, np.ndarray] | None = {} if nbytes <= keep_bytes else None

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self._kept.get(i) if self._kept is not None else None
        if x is None:
            try:
                x = self.contract.preprocess(self.raw.image(i))
            except DataError as e:
                item = self.raw.items[i]
                raise DataError(f"{item}: {e}" if isinstance(item, Path) else str(e)) from None
            if self._kept is not None:
                self._kept[i] = x
        return torch.from_numpy(x.copy() if self._kept is not None else x), int(self.raw.labels[i])


#: Input elements per evaluation batch. Whole-split evaluation runs fastest when a batch's activations stay
#: near the caches: MobileNetV3-large at 224x224 evaluates 2x faster in PyTorch (and 1.2x in onnxruntime)
#: in batches of 16 than of 256; small inputs still go 256 at a time.
EVAL_BATCH_ELEMENTS = 2**21


def eval_batch_size(dataset, cap: int = 256) -> int:
    """Images per batch for evaluating a model over ``dataset`` (see :data:`EVAL_BATCH_ELEMENTS`)."""
    if len(dataset) == 0:
        return 1
    first = dataset[0]
    x = first[0] if isinstance(first, (tuple, list)) else first
    return max(1, min(cap, EVAL_BATCH_ELEMENTS // max(1, int(np.prod(np.shape(x))))))


def load_data(
    source: str | Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataSplits:
    """Load a labelled data set and split it reproducibly.

    Args:
        source: ``"digits"`` (scikit-learn's bundled 8x8 handwritten digits, 1,797 real images, no
            download: the smoke-test data), ``"fashion-mnist"`` (Zalando's 70,000 28x28 grey images in 10
            classes from Debian's ``dataset-fashion-mnist`` package; the official 10,000 test images are the
            test split), a folder of IDX files (the MNIST family's ``*-images-idx3-ubyte[.gz]`` and
            ``*-labels-idx1-ubyte[.gz]``; a ``t10k``/``test`` pair is the test split), a folder with one
            sub-folder per class (or ``train/``, ``val/``, ``test/`` folders of those), or an ``.npz`` file
            with ``x`` (N,H,W[,C] uint8, or float in [0, 1]) and ``y`` (N integers), optionally ``class_names``.
        seed: seed of the stratified split; the same seed gives the same split.
        val_fraction, test_fraction: shares of each class held out when the source is not pre-split
            (a pre-split source without a validation part gets ``val_fraction`` of its training part).

    Raises:
        InputFileError: the path does not exist or is not a folder/``.npz``.
        DataError: no images, fewer than two classes, unreadable images, bad array shapes.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError("val and test fractions must be in (0, 1) and sum to less than 1")
    src = str(source)
    if src == "digits":
        return _digits(seed, val_fraction, test_fraction)
    if src == "fashion-mnist":
        return _fashion_mnist(seed, val_fraction)
    path = Path(src)
    if not path.exists():
        raise InputFileError(f"data not found: {path} (give {' or '.join(map(repr, NAMED_SOURCES))}, an image folder, "
                             "a folder of IDX files or an .npz file)")
    if path.is_dir():
        if _idx_pairs(path):
            return _idx_folder(path, seed, val_fraction, test_fraction)
        return _folder(path, seed, val_fraction, test_fraction)
    if path.suffix.lower() == ".npz":
        return _npz(path, seed, val_fraction, test_fraction)
    raise InputFileError(f"unsupported data source {path}: give {' or '.join(map(repr, NAMED_SOURCES))}, an image "
                         "folder, a folder of IDX files or an .npz file")


def _few(items, n: int = 6) -> str:
    """The first ``n`` of ``items``, comma-separated, and how many more there are."""
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def check_same_classes(model_classes, data_classes, data_source: str) -> None:
    """Refuse data whose class list differs from the model's, saying exactly how (labels index classes by
    position, so the same names in another order are a mismatch too).

    Raises:
        DataError: the lists differ; the message names what is only in one of them, or the first position
            where the order differs.
    """
    model_classes, data_classes = tuple(model_classes), tuple(data_classes)
    if not model_classes or model_classes == data_classes:
        return
    only_model = [c for c in model_classes if c not in data_classes]
    only_data = [c for c in data_classes if c not in model_classes]
    if only_model or only_data:
        detail = "; ".join(part for part in (
            f"only in the model: {_few(only_model)}" if only_model else "",
            f"only in the data: {_few(only_data)}" if only_data else "") if part)
    else:
        i = next(i for i, (a, b) in enumerate(zip(model_classes, data_classes)) if a != b)
        detail = f"same names in another order: class {i} is {model_classes[i]!r} in the model, {data_classes[i]!r} in the data"
    raise DataError(f"the classes of {data_source} ({len(data_classes)}) differ from the model's "
                    f"({len(model_classes)}): {detail}")


def _stratified_split(labels: np.ndarray, seed: int, val_fraction: float, test_fraction: float):
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = max(1, int(round(len(idx) * test_fraction))) if test_fraction > 0 else 0  # 0: pre-split test
        n_val = max(1, int(round(len(idx) * val_fraction)))
        if len(idx) < n_test + n_val + 1:
            raise DataError(f"class {c} has {len(idx)} image(s); at least 3 are needed to split it")
        test += idx[:n_test].tolist()
        val += idx[n_test : n_test + n_val].tolist()
        train += idx[n_test + n_val :].tolist()
    return sorted(train), sorted(val), sorted(test)


def _fingerprint(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


def _arrays_splits(x: np.ndarray, y: np.ndarray, names, source, seed, vf, tf, channels) -> DataSplits:
    tr, va, te = _stratified_split(y, seed, vf, tf)
    raw = RawImages(list(x), y)
    fp = _fingerprint(x.tobytes(), y.tobytes(), f"seed={seed},val={vf},test={tf}")
    return DataSplits(raw.subset(tr), raw.subset(va), raw.subset(te), tuple(names), source, fp, channels)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1,797 8x8 images, pixel values 0..16, and their labels), read from the CSV file
    scikit-learn ships, without importing scikit-learn: its import (with SciPy) takes 2-3 s, which every
    command on the default data paid. ``load_digits`` reads the same file the same way; it is the fallback
    where the file is not where scikit-learn 1.x keeps it."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            data = np.loadtxt(csv, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def _digits(seed: int, vf: float, tf: float) -> DataSplits:
    images, y = _digits_arrays()
    # Pixel values are 0..16; as uint8 0..255 they go through the same contract as any image file.
    x = np.round(images * (255.0 / 16.0)).astype(np.uint8)
    return _arrays_splits(x, y, [str(i) for i in range(10)], "digits", seed, vf, tf, channels=1)


_IDX_TYPES = {0x08: np.uint8}
_IDX_NAME = re.compile(r"^(?P<part>.+?)[-.](?P<kind>images|labels)[-.]idx(?P<ndim>[13])[-.]ubyte(?P<gz>\.gz)?$")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array (the MNIST family's format: magic ``00 00 08 ndim``, big-endian int32 sizes, uint8
    data), gzipped or not.

    Raises:
        DataError: not an IDX file, another element type or rank than ``ndim`` uint8, or a size that does not
            match the header.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: IDX element type 0x{raw[2]:02x} is not supported (only unsigned bytes, 0x08)")
    if raw[3] != ndim:
        raise DataError(f"{path}: an IDX file of {raw[3]} dimension(s), expected {ndim}")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path}: IDX header cut short")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - head != int(np.prod(dims)):
        raise DataError(f"{path}: the header says {' x '.join(map(str, dims))} = {int(np.prod(dims))} bytes of data, "
                        f"the file holds {len(raw) - head}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _idx_pairs(root: Path) -> dict[str, dict[str, Path]]:
    """``{part: {"images": path, "labels": path}}`` for the IDX files in ``root`` (part = the name's prefix)."""
    pairs: dict[str, dict[str, Path]] = {}
    for f in sorted(root.iterdir()):
        m = _IDX_NAME.match(f.name)
        if f.is_file() and m and int(m["ndim"]) == (3 if m["kind"] == "images" else 1):
            pairs.setdefault(m["part"], {})[m["kind"]] = f
    return pairs


def _idx_folder(root: Path, seed: int, vf: float, tf: float, class_names=None, source: str | None = None) -> DataSplits:
    pairs = _idx_pairs(root)
    unpaired = sorted(f"{part}-{'labels' if 'images' in kinds else 'images'}" for part, kinds in pairs.items()
                      if len(kinds) != 2)
    if unpaired:
        raise DataError(f"{root}: IDX file(s) missing: {_few(unpaired)} (each *-images-idx3-ubyte needs its "
                        "*-labels-idx1-ubyte)")
    arrays = {}
    h = hashlib.sha256()
    for part, kinds in sorted(pairs.items()):
        x, y = read_idx(kinds["images"], 3), read_idx(kinds["labels"], 1)
        if len(x) != len(y) or len(x) == 0:
            raise DataError(f"{root}: {kinds['images'].name} holds {len(x)} images, {kinds['labels'].name} "
                            f"{len(y)} labels")
        h.update(f"{part}:{x.shape}".encode())
        h.update(x.tobytes())
        h.update(y.tobytes())
        arrays[part] = (x, y.astype(np.int64))
    test_parts = [p for p in arrays if p in ("t10k", "test")]
    train_parts = [p for p in arrays if p not in test_parts]
    if len(test_parts) > 1 or len(train_parts) > 1:
        raise DataError(f"{root}: IDX files of {', '.join(sorted(arrays))}: give one training pair and at most one "
                        "test pair (t10k-* or test-*)")
    shapes = {a[0].shape[1:] for a in arrays.values()}
    if len(shapes) > 1:
        raise DataError(f"{root}: IDX image sizes differ between files: {sorted(shapes)}")
    labels = np.concatenate([a[1] for a in arrays.values()])
    n_classes = int(labels.max()) + 1
    gaps = sorted(set(range(n_classes)) - set(np.unique(labels).tolist()))
    if n_classes < 2 or gaps:
        raise DataError(f"{root}: IDX labels must cover the classes 0..K-1 (K >= 2); "
                        f"missing {_few(gaps, 8) or 'all but one'}")
    names = tuple(class_names) if class_names is not None and len(class_names) == n_classes else \
        tuple(str(i) for i in range(n_classes))
    src = source or str(root)
    if not test_parts:  # one pair: split it like any unsplit source
        x, y = arrays[train_parts[0]]
        return _arrays_splits(x, y, names, src, seed, vf, tf, channels=1)
    if not train_parts:
        raise DataError(f"{root}: only a test pair of IDX files; add the training pair")
    (x_train, y_train), (x_test, y_test) = arrays[train_parts[0]], arrays[test_parts[0]]
    # the official test set stays the test split; validation is a seeded stratified share of training
    tr, va, _ = _stratified_split(y_train, seed, vf, 0.0)
    h.update(f"seed={seed},val={vf}".encode())
    train = RawImages(list(x_train), y_train)
    return DataSplits(train.subset(tr), train.subset(va), RawImages(list(x_test), y_test), names, src,
                      h.hexdigest(), 1)


def _fashion_mnist(seed: int, vf: float) -> DataSplits:
    root = Path(os.environ.get("EDGEFUSE_FASHION_MNIST", FASHION_MNIST_DIR))
    if not root.is_dir() or not _idx_pairs(root):
        raise InputFileError(f"fashion-mnist is not installed (no IDX files in {root}): run "
                             "'sudo apt-get install dataset-fashion-mnist', or pass the folder of its IDX files")
    return _idx_folder(root, seed, vf, 0.0, class_names=FASHION_MNIST_CLASSES, source="fashion-mnist")


def _npz(path: Path, seed: int, vf: float, tf: float) -> DataSplits:
    if path.stat().st_size == 0:
        raise InputFileError(f"{path} is empty")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"x", "y"} <= keys:
                raise DataError(f"{path} must hold arrays 'x' and 'y' (found: {', '.join(sorted(keys)) or 'none'})")
            x, y = f["x"], f["y"]
            names = [str(n) for n in f["class_names"]] if "class_names" in keys else None
    except DataError:
        raise
    except Exception as e:  # zip/format errors, pickled object arrays
        raise InputFileError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    if x.ndim == 4 and x.shape[-1] not in (1, 3, 4):
        raise DataError(f"{path}: x must be N x H x W or N x H x W x C (C = 1, 3 or 4), got shape {x.shape}")
    if x.ndim not in (3, 4) or len(x) == 0:
        raise DataError(f"{path}: x must be a non-empty N x H x W[ x C] image array, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must be {len(x)} integer labels, got {y.dtype} of shape {y.shape}")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{path}: x holds NaN or Inf values")
        if x.min() < 0 or x.max() > 1:
            raise DataError(f"{path}: float images must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
        x = np.round(x * 255).astype(np.uint8)
    elif x.dtype != np.uint8:
        raise DataError(f"{path}: x must be uint8 or float in [0, 1], got {x.dtype}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"{path}: labels hold {len(classes)} class; at least 2 are needed")
    if classes.min() < 0 or (names is None and classes.max() > 10_000):
        raise DataError(f"{path}: labels must be class indices >= 0")
    n_classes = int(classes.max()) + 1
    gaps = sorted(set(range(n_classes)) - set(classes.tolist()))
    if gaps:
        # A label index no image has becomes a class the model can never learn (a dead output).
        raise DataError(f"{path}: labels run 0..{n_classes - 1} but no image has label {_few(gaps, 8)}: renumber the "
                        "labels 0..K-1 (and class_names with them)")
    if names is None:
        names = [str(i) for i in range(n_classes)]
    elif len(names) < n_classes:
        raise DataError(f"{path}: {len(names)} class_names for labels up to {n_classes - 1}")
    channels = 1 if x.ndim == 3 or x.shape[-1] == 1 else 3
    return _arrays_splits(x, y.astype(np.int64), names, str(path), seed, vf, tf, channels)


def _list_class_images(root: Path) -> tuple[list[str], list[Path], list[int]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    empty = []
    for ci, c in enumerate(classes):
        n = len(paths)
        for f in sorted((root / c).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                labels.append(ci)
        if len(paths) == n:
            empty.append(c)
    if empty and paths:
        # An empty class folder would become a class the model can never learn (a dead output).
        raise DataError(f"class folder(s) {_few(empty)} in {root} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES)}): add images or remove the folder(s)")
    return classes, paths, labels


def _folder(root: Path, seed: int, vf: float, tf: float) -> DataSplits:
    pre_split = (root / "train").is_dir() and (root / "test").is_dir()
    if pre_split:
        parts = {}
        for name in SPLIT_DIRS:
            if (root / name).is_dir():
                parts[name] = _list_class_images(root / name)
        classes = parts["train"][0]
        for name, (cls, paths, _) in parts.items():
            if not paths:
                raise DataError(f"{root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            missing = sorted(set(classes) - set(cls))
            if missing:
                raise DataError(f"class(es) {', '.join(missing)} missing from {root / name}")
            extra = sorted(set(cls) - set(classes))
            if extra:
                raise DataError(f"class(es) {', '.join(extra)} in {root / name} but not in {root / 'train'}")
        all_paths = [p for n in parts for p in parts[n][1]]
    else:
        classes, all_paths, labels = _list_class_images(root)
        if not all_paths:
            raise DataError(
                f"{root} holds no images: expected one sub-folder per class with {', '.join(IMAGE_SUFFIXES)} files"
            )
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); at least 2 are needed")
    _check_images(all_paths)
    h = hashlib.sha256()
    for p in all_paths:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    h.update(f"seed={seed},val={vf},test={tf}".encode())
    if pre_split:
        splits = {
            n: RawImages(list(parts[n][1]), np.asarray(parts[n][2], dtype=np.int64)) for n in parts
        }
        if "val" not in splits:  # carve validation out of train
            tr = splits["train"]
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(tr))
            n_val = max(len(classes), int(round(len(tr) * vf)))
            splits["val"] = tr.subset(sorted(order[:n_val].tolist()))
            splits["train"] = tr.subset(sorted(order[n_val:].tolist()))
        train, val, test = splits["train"], splits["val"], splits["test"]
    else:
        y = np.asarray(labels, dtype=np.int64)
        tr, va, te = _stratified_split(y, seed, vf, tf)
        raw = RawImages(all_paths, y)
        train, val, test = raw.subset(tr), raw.subset(va), raw.subset(te)
    channels = 1 if all(_open_image(p).mode in ("L", "1", "I;16", "I") for p in all_paths[:16]) else 3
    return DataSplits(train, val, test, tuple(classes), str(root), h.hexdigest(), channels)


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"unreadable image {path}: {e}") from None


def _check_images(paths: list[Path]) -> None:
    for p in paths:
        if p.stat().st_size == 0:
            raise DataError(f"empty (0-byte) image file {p}: remove it or replace it")
    for p in paths:
        try:
            with Image.open(p) as img:
                img.verify()
        except Exception as e:
            raise DataError(f"unreadable image {p} ({e}): remove it or replace it") from None


def norm_stats(raw: RawImages, channels: int, input_size, limit: int = 2000, **shape) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``raw`` after scaling to [0, 1] (the first ``limit`` images), prepared as a
    contract of ``input_size`` (a side or ``(height, width)``) and ``shape`` (resize, interpolation,
    crop_pct, pad_value) would prepare them."""
    probe = PreprocessContract(input_size, channels, [0.0] * channels, [1.0] * channels, **shape)
    n = min(len(raw), limit)
    if n == 0:
        raise DataError("cannot compute normalisation statistics of an empty split")
    s = np.zeros(channels)
    s2 = np.zeros(channels)
    count = 0
    for i in range(n):
        a = probe.preprocess(raw.image(i)).reshape(channels, -1).astype(np.float64)
        s += a.sum(1)
        s2 += (a * a).sum(1)
        count += a.shape[1]
    mean = s / count
    std = np.sqrt(np.maximum(s2 / count - mean * mean, 1e-12))
    return [round(float(v), 4) for v in mean], [round(float(max(v, 1e-3)), 4) for v in std]
