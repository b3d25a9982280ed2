"""The JSON sidecar that travels next to a mobile artifact (``model.int8.pte.json``).

ONNX files carry the preprocessing contract in ``metadata_props``; ``.pte`` programs have no room
for it and app code reads JSON more easily than flatbuffer metadata, so every ``.ort`` and ``.pte``
file gets ``<file>.json``: the contract (input name, shape, layout, channel order, scale, mean/std,
class labels), the format and precision, the file's sha256 and the versions that produced it.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefuse._versions import sha256_file
from edgefuse.data.contract import PreprocessContract
from edgefuse.errors import InputFileError

SIDECAR_SCHEMA = "edgefuse.sidecar"
SIDECAR_VERSION = 1


def sidecar_path(artifact: str | Path) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def sidecar_dict(file_name: str, fmt: str, precision: str, contract: PreprocessContract, input_shape: list[int],
                 sha256: str, versions: dict[str, str]) -> dict:
    """The sidecar's content (see the module docstring)."""
    return {
        "schema": SIDECAR_SCHEMA,
        "schema_version": SIDECAR_VERSION,
        "file": file_name,
        "format": fmt,
        "precision": precision,
        "sha256": sha256,
        "input": {"name": contract.input_name, "shape": list(input_shape), "dtype": "float32",
                  "layout": contract.layout},
        "output": {"name": "logits", "shape": [input_shape[0], len(contract.class_names)] if contract.class_names
                   else None},
        "contract": contract.to_dict(),
        "versions": versions,
    }


def read_sidecar(artifact: str | Path) -> dict:
    """Load and check the sidecar of ``artifact``.

    Raises:
        InputFileError: missing, unreadable or not an edgefuse sidecar.
    """
    path = sidecar_path(artifact)
    if not path.is_file():
        raise InputFileError(f"{Path(artifact).name} has no contract sidecar ({path.name}); re-export it with edgefuse")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"{path}: not a readable JSON sidecar ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SIDECAR_SCHEMA or not isinstance(data.get("contract"), dict):
        raise InputFileError(f"{path}: not an edgefuse sidecar")
    PreprocessContract.from_dict(data["contract"])  # validates
    for key, kind in (("sha256", str), ("precision", str), ("file", str), ("versions", dict)):
        if key in data and not isinstance(data[key], kind):
            raise InputFileError(f"{path}: '{key}' must be a {kind.__name__}, got {type(data[key]).__name__}")
    return data


def contract_metadata(contract: PreprocessContract, precision: str, edgefuse_version: str) -> dict[str, str]:
    """The keys edgefuse writes into ONNX ``metadata_props`` (and reads back from any artifact)."""
    return {
        "edgefuse.contract": contract.to_json(),
        "edgefuse.precision": precision,
        "edgefuse.version": edgefuse_version,
        "class_names": json.dumps(list(contract.class_names)),
    }


def read_sidecar_metadata(artifact: str | Path) -> dict[str, str]:
    """The sidecar flattened to the keys edgefuse writes into ONNX ``metadata_props``."""
    try:
        data = read_sidecar(artifact)
    except InputFileError:
        return {}

    if data.get("sha256") and data["sha256"] != sha256_file(artifact):
        # a contract that describes another build must not preprocess this one's inputs
        raise InputFileError(f"{sidecar_path(artifact).name} belongs to another file (its sha256 differs from "
                             f"{Path(artifact).name}'s): re-export, or copy the pair together")
    return contract_metadata(PreprocessContract.from_dict(data["contract"]), str(data.get("precision", "")),
                             str(data.get("versions", {}).get("edgefuse", "")))
