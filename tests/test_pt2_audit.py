"""A .pt2 never runs code from the file unless --trust-pickle: every pickle in it is audited first."""

import io
import json
import subprocess
import sys
import zipfile

import pytest
import torch

from edgefuse.api import load_model_source
from edgefuse.errors import CheckpointError, InputFileError
from edgefuse.models import create_model
from edgefuse.pt2_audit import audit_pt2


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory):
    p = tmp_path_factory.mktemp("pt2") / "good.pt2"
    m = create_model("resnet", 10, width=0.5).eval()
    torch.export.save(torch.export.export(m, (torch.randn(2, 1, 32, 32),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), p)
    return p


def _rewrite(src, dst, edit):
    """Copy the archive member by member; ``edit(name, data, add)`` returns new bytes (or None to keep)."""
    extra = {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            new = edit(info.filename, data, extra)
            zout.writestr(info.filename, data if new is None else new)
        for name, data in extra.items():
            zout.writestr(name, data)
    return dst


def _sample_inputs(marker):
    return lambda name, data, extra: _saved(_Payload(marker)) if "/data/sample_inputs/" in name else None


def _pickled_weight(marker):
    def edit(name, data, extra):
        if name.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            first = next(iter(cfg["config"].values()))
            first["use_pickle"] = True
            extra["path"] = first["path_name"]
            return json.dumps(cfg).encode()
        return None

    def twice(src, dst):
        tmp = dst.with_suffix(".step.pt2")
        found = {}
        _rewrite(src, tmp, lambda n, d, e: (edit(n, d, found)))
        return _rewrite(tmp, dst, lambda n, d, e: _saved(_Payload(marker)) if n.endswith(f"/weights/{found['path']}") else None)

    return twice


def _opaque_constant(marker):
    def edit(name, data, extra):
        if name.endswith("model_constants_config.json"):
            prefix = name.rsplit("/", 1)[0]
            extra[f"{prefix}/opaque_obj_0"] = __import__("pickle").dumps(_Payload(marker))
            cfg = json.loads(data)
            cfg["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}
            return json.dumps(cfg).encode()
        return None

    return edit


@pytest.mark.parametrize("kind", ["sample_inputs", "use_pickle_weight", "opaque_constant"])
def test_payload_in_a_pt2_is_refused_and_never_runs(good_pt2, tmp_path, kind):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt2"
    if kind == "sample_inputs":
        _rewrite(good_pt2, evil, _sample_inputs(marker))
    elif kind == "use_pickle_weight":
        _pickled_weight(marker)(good_pt2, evil)
    else:
        _rewrite(good_pt2, evil, _opaque_constant(marker))
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        load_model_source(evil, input_size=32, channels=1)
    assert not marker.exists()
    for cmd in (["export", str(evil), "--int8", "--out", str(tmp_path / "o")], ["analyze", str(evil)]):
        r = subprocess.run([sys.executable, "-m", "edgefuse.cli.main", *cmd, "--input-size", "32", "--channels", "1"],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and "--trust-pickle" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not marker.exists()
    assert not (tmp_path / "o").exists()


def test_a_clean_pt2_passes_the_audit_and_an_inflation_bomb_does_not(good_pt2, tmp_path, monkeypatch):
    import edgefuse.pt2_audit as audit

    audit_pt2(good_pt2)
    monkeypatch.setattr(audit, "MAX_UNCOMPRESSED_BYTES", 32 << 20)  # the same check as at 4 GiB, faster
    bomb = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("m/data/weights/weight_0", b"\0" * (64 << 20))  # 64 MiB of zeros: ~64 KB on disk
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(InputFileError, match="inflates to"):
        audit_pt2(bomb, trust_pickle=True)


def test_a_model_pt_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    import edgefuse._files as files
    from edgefuse.checkpoint import read_checkpoint

    monkeypatch.setattr(files, "MAX_UNCOMPRESSED_BYTES", 32 << 20)
    bomb = tmp_path / "model.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (64 << 20))
    with pytest.raises(InputFileError, match="inflates to"):
        read_checkpoint(bomb)
