"""Write a model's deployable artifacts atomically, with a manifest.

Every artifact is written into a temporary folder beside the target, checked, and only then
moved into place; the manifest is written last. A failed export leaves the target folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from edgefuse._quiet import quiet
from edgefuse._versions import cpu_name, sha256_file, versions
from edgefuse.data.contract import PreprocessContract
from edgefuse.errors import ExportError, UsageError
from edgefuse.export.onnx import DEFAULT_OPSET, export_onnx
from edgefuse.export.onnx_checks import (
    compact,
    reduce_mean_to_global_pool,
    set_metadata,
    strip_debug_metadata,
    weight_summary,
)

FORMATS = ("onnx", "torchscript")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class Artifact:
    """One exported file."""

    file: str
    kind: str
    precision: str
    bytes: int = 0
    sha256: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class ExportResult:
    """What :func:`export_artifacts` wrote.

    Attributes:
        out_dir: the folder holding the artifacts and ``manifest.json``.
        artifacts: the files, with hashes and sizes.
        notes: what could not be produced, or was changed, and why.
        manifest: the manifest content.
    """

    out_dir: Path
    artifacts: list[Artifact]
    notes: list[str]
    manifest: dict

    def path(self, kind: str, precision: str) -> Path | None:
        for a in self.artifacts:
            if a.kind == kind and a.precision == precision:
                return self.out_dir / a.file
        return None


def parse_formats(spec: str | list[str]) -> tuple[str, ...]:
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise UsageError("no export format given")
    for s in items:
        if s not in FORMATS:
            raise UsageError(f"unknown format {s!r}; choose from: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def _finish_onnx(path: Path, contract: PreprocessContract, precision: str, simplify: bool, notes: list[str]) -> dict:
    model = onnx.load(str(path))
    strip_debug_metadata(model)
    details: dict = {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)}
    before = weight_summary(model)
    if simplify:
        try:
            import onnxsim

            with quiet():
                simplified, ok = onnxsim.simplify(model)
            after = weight_summary(simplified) if ok else None
            if ok and after["int8_weights"] == before["int8_weights"] and after["float_weights"] <= before["float_weights"]:
                model = simplified
                details["onnxsim"] = "applied"
            elif ok:
                # onnxsim constant-folds weight DequantizeLinear back to fp32 (onnxsim#216): keep the unsimplified graph.
                details["onnxsim"] = "reverted: it folded int8 weights back to fp32"
                notes.append(f"{path.name}: onnxsim result discarded (it de-quantized {before['int8_weights'] - after['int8_weights']} weights)")
            else:
                details["onnxsim"] = "skipped: simplified model failed its check"
        except Exception as e:  # onnxsim is an optimisation; never fail an export on it
            details["onnxsim"] = f"skipped: {type(e).__name__}"
    details["global_pools"] = reduce_mean_to_global_pool(model)
    set_metadata(model, {
        "edgefuse.contract": contract.to_json(),
        "edgefuse.precision": precision,
        "edgefuse.version": versions().get("edgefuse", ""),
        "class_names": json.dumps(list(contract.class_names)),
    })
    model.producer_name = "edgefuse"
    compact(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    summary = weight_summary(model)
    # fp32 weights are legitimate where the quantizer kept a conv wholly fp32 (stem, --exclude); what
    # must never happen is fewer int8 weights than the exporter produced (folded back to fp32).
    if precision == "int8" and (summary["int8_weights"] == 0 or summary["int8_weights"] < before["int8_weights"]
                                or summary["float_weights"] > before["float_weights"]):
        raise ExportError(
            f"{path.name}: int8 check failed: {summary['int8_weights']} int8 and {summary['float_weights']} fp32 weight "
            f"tensors feed Conv/Gemm (exported: {before['int8_weights']} and {before['float_weights']})"
        )
    details.update({k: v for k, v in summary.items() if k != "float_weight_nodes"})
    return details


def _torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
        got, ref = loaded(example), module(example)
    if not torch.allclose(got, ref, atol=1e-3, rtol=1e-3):
        raise ExportError(f"{path.name}: TorchScript output differs from PyTorch by {float((got - ref).abs().max()):.3g}")


def _cpu_record() -> dict:
    from edgefuse.quantize.targets import detect_target

    t = detect_target()
    return {"name": cpu_name(), "detected_target": t.name, "why": t.why}


def export_artifacts(
    model: nn.Module,
    contract: PreprocessContract,
    out_dir: str | Path,
    *,
    quantized=None,
    formats: tuple[str, ...] = FORMATS,
    batch: int | None = None,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    force: bool = False,
    manifest_extra: dict | None = None,
) -> ExportResult:
    """Export fp32 (and, given ``quantized``, int8) artifacts of ``model`` into ``out_dir``.

    Args:
        model: the fp32 model (eval mode is set).
        contract: preprocessing contract, stored in every ONNX file's ``metadata_props``.
        out_dir: target folder; refused if it already holds a manifest unless ``force``.
        quantized: a :class:`edgefuse.quantize.QuantizedModel` for the int8 artifacts.
        formats: ``onnx`` and/or ``torchscript``.
        batch: fixed batch size; ``None`` exports a dynamic batch dimension.
        opset: ONNX opset.
        simplify: run onnxsim (and keep its result only where it keeps int8 weights int8).
        force: replace existing artifacts.
        manifest_extra: extra manifest entries (source model, quantization report...).

    Raises:
        UsageError: bad arguments or an occupied output folder.
        ExportError: an artifact could not be produced or failed its check.
    """
    out = Path(out_dir)
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be >= 1, got {batch}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if (out / MANIFEST).exists() and not force:
        raise UsageError(f"{out} already holds exported artifacts; pass --force to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".edgefuse-export-", dir=out))
    except OSError as e:
        raise UsageError(f"cannot write to {out}: {e.strerror or e}") from None
    model.eval()
    example = torch.zeros((batch or 1, *contract.input_shape[1:]))
    notes: list[str] = []
    arts: list[Artifact] = []
    variants = [("fp32", model)]
    if quantized is not None:
        variants.append(("int8", quantized.program))
    try:
        for fmt in formats:
            for precision, module in variants:
                if fmt == "onnx":
                    name = f"model.{precision}.onnx"
                    export_onnx(module, (example,), tmp / name, input_names=[contract.input_name],
                                output_names=["logits"], dynamic_batch=batch is None, opset=opset)
                    details = _finish_onnx(tmp / name, contract, precision, simplify, notes)
                    arts.append(Artifact(name, "onnx", precision, details=details))
                elif fmt == "torchscript":
                    name = f"model.{precision}.torchscript.pt"
                    try:
                        _torchscript(module, example, tmp / name)
                        arts.append(Artifact(name, "torchscript", precision,
                                             details={"note": "server-side PyTorch only; not a mobile format"}))
                    except Exception as e:
                        if precision == "fp32":
                            raise ExportError(f"TorchScript export failed: {str(e).splitlines()[0][:200]}") from e
                        (tmp / name).unlink(missing_ok=True)
                        notes.append(f"int8 TorchScript not produced: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
        for a in arts:
            p = tmp / a.file
            a.bytes, a.sha256 = p.stat().st_size, sha256_file(p)
        manifest = {
            "schema": "edgefuse.manifest",
            "schema_version": MANIFEST_VERSION,
            "versions": versions(),
            "contract": contract.to_dict(),
            "export": {"formats": list(formats), "opset": opset, "batch": batch if batch else "dynamic",
                       "simplify": simplify},
            "quantization": None if quantized is None else {
                "method": quantized.method, "config": quantized.config.to_dict(),
                "calib_samples": quantized.calib_samples, "qat_history": quantized.history,
            },
            "cpu": _cpu_record(),
            "artifacts": [asdict(a) for a in arts],
            "notes": notes,
            **(manifest_extra or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        # Move into place: artifacts first, the manifest (which vouches for them) last.
        if force and (out / MANIFEST).exists():
            (out / MANIFEST).unlink()
        for a in arts:
            os.replace(tmp / a.file, out / a.file)
        os.replace(tmp / MANIFEST, out / MANIFEST)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, arts, notes, manifest)
