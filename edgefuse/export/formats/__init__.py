"""The export formats, declared in one place.

Each format is one module defining a :class:`~edgefuse.export.formats.base.Format` (its files, runtime,
whether it is mobile, how to build it); this table registers it. Build order is registration order (a
converter comes after the format it converts). A new format is one module plus one line below.
"""

from __future__ import annotations

from edgefuse.errors import UnknownNameError, UsageError
from edgefuse.export.formats import onnx, ort, pte, torchscript
from edgefuse.export.formats.base import Artifact, BuildContext, Format

_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (after the existing ones); a second format of the same name raises."""
    if fmt.name in _FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    unknown = [n for n in fmt.needs if n not in _FORMATS]
    if unknown:
        raise ValueError(f"format {fmt.name!r} needs {', '.join(unknown)}, registered after it")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove a format (for tests and plug-ins replacing one); unknown names raise."""
    get_format(name)
    del _FORMATS[name]


def get_format(name: str) -> Format:
    try:
        return _FORMATS[name]
    except KeyError:
        raise UnknownNameError(f"unknown format {name!r}; choose from: {', '.join(_FORMATS)}") from None


def format_names() -> tuple[str, ...]:
    """Registered formats, in build order."""
    return tuple(_FORMATS)


def parse_formats(spec: str | list[str]) -> tuple[str, ...]:
    """``"onnx,pte"`` -> ``("onnx", "pte")``: known names, duplicates dropped, in the order given."""
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise UsageError("no export format given")
    for s in items:
        get_format(s)
    return tuple(dict.fromkeys(items))


def require_extras(formats: tuple[str, ...]) -> None:
    """Raise :class:`~edgefuse.errors.MissingExtraError` for the first of ``formats`` whose optional extra is absent."""
    for name in formats:
        if get_format(name).requires is not None:
            get_format(name).requires()


def format_of_file(path) -> Format | None:
    """The registered format whose files end like ``path`` (the longest matching suffix), or None."""
    name = str(path).lower()
    found = [(len(s), f) for f in _FORMATS.values() for s in f.suffixes if name.endswith(s)]
    return max(found, key=lambda t: t[0])[1] if found else None


def build_order(formats: tuple[str, ...]) -> list[Format]:
    """The formats to build for ``formats``: those asked for and those they convert, in registration order."""
    wanted = set(formats)
    for name in formats:
        wanted |= set(get_format(name).needs)
    return [f for f in _FORMATS.values() if f.name in wanted]


for _fmt in (onnx.FORMAT, ort.FORMAT, pte.FORMAT, torchscript.FORMAT):
    register_format(_fmt)

__all__ = ["Artifact", "BuildContext", "Format", "build_order", "format_names", "format_of_file", "get_format",
           "parse_formats",
           "register_format", "require_extras", "unregister_format"]
