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
from edgefuse.errors import ExportError, UnsupportedModelError, UsageError, one_line
from edgefuse.export.onnx import DEFAULT_OPSET, export_onnx, opset_of
from edgefuse.runtimes.sidecar import contract_metadata
from edgefuse.export.onnx_checks import (
    compact,
    reduce_mean_to_global_pool,
    restore_module_metadata,
    set_metadata,
    strip_debug_metadata,
    tile_channel_broadcasts,
    weight_summary,
)

FORMATS = ("onnx", "ort", "pte", "torchscript")
#: Formats whose files a phone runtime loads; they get a fixed batch and a JSON contract sidecar.
MOBILE_FORMATS = ("ort", "pte")
MANIFEST = "manifest.json"
#: Temporary folders of runs in progress: ``.edgefuse-export-<pid>-<random>`` inside the target folder.
TEMP_PREFIX = ".edgefuse-export-"
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
        out_dir: the folder holding the artifacts and ``manifest.json`` (the staging folder while staged).
        artifacts: the files, with hashes and sizes.
        notes: what could not be produced, or was changed, and why.
        manifest: the manifest content.
    """

    out_dir: Path
    artifacts: list[Artifact]
    notes: list[str]
    manifest: dict
    #: where a staged set (``out_dir`` is then its staging folder) will be published; None once published
    target: Path | None = None
    #: the target folder did not exist before staging: discarding the set removes it again
    created_target: bool = False

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
    details: dict = {"opset": opset_of(model)}
    before = weight_summary(model)
    if simplify:
        try:
            import onnxsim

            with quiet():
                simplified, ok = onnxsim.simplify(model)
            after = weight_summary(simplified) if ok else None
            if ok and after["int8_weights"] == before["int8_weights"] and after["float_weights"] <= before["float_weights"]:
                restore_module_metadata(model, simplified)
                model = simplified
                details["onnxsim"] = "applied"
            elif ok:
                # onnxsim constant-folds weight DequantizeLinear back to fp32 (onnxsim#216): keep the unsimplified graph.
                details["onnxsim"] = "reverted: it folded int8 weights back to fp32"
                lost = before["int8_weights"] - after["int8_weights"]
                notes.append(f"{path.name}: onnxsim result discarded (it de-quantized {lost} weights)")
            else:
                details["onnxsim"] = "skipped: simplified model failed its check"
        except Exception as e:  # onnxsim is an optimisation; never fail an export on it
            details["onnxsim"] = f"skipped: {type(e).__name__}"
    # onnxsim records its own run in metadata_props; artifacts carry only the contract.
    kept = [p for p in model.metadata_props if not p.key.startswith("onnxsim.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    details["global_pools"] = reduce_mean_to_global_pool(model)
    if precision == "int8":
        details["tiled_gate_multiplies"] = tile_channel_broadcasts(model)
    set_metadata(model, contract_metadata(contract, precision, versions().get("edgefuse", "")))
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


def _remove_stale_temp(out: Path) -> None:
    """Remove temporary folders left by export runs that were killed (their process no longer exists)."""
    for d in out.glob(f"{TEMP_PREFIX}*"):
        pid = d.name[len(TEMP_PREFIX):].split("-")[0]
        try:
            os.kill(int(pid), 0)
            continue  # still running: not ours to remove
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class VerifyResult:
    """What :func:`verify_artifacts` found: ``problems`` make the folder untrustworthy."""

    out_dir: Path
    checked: list[str]
    problems: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_artifacts(out_dir: str | Path) -> VerifyResult:
    """Recheck every file listed in ``manifest.json`` (size and sha256) and every sidecar's hash.

    Raises:
        InputFileError: no folder, no manifest, or a manifest that is not edgefuse's.
    """
    from edgefuse.errors import InputFileError

    out = Path(out_dir)
    if not out.is_dir():
        raise InputFileError(f"{out} is not a folder")
    mpath = out / MANIFEST
    if not mpath.is_file():
        raise InputFileError(f"{out} holds no {MANIFEST}: not an edgefuse artifact folder (or an export was interrupted)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        manifest = None
    entries = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("schema") != "edgefuse.manifest"
            or not isinstance(entries, list) or not all(isinstance(a, dict) for a in entries)):
        raise InputFileError(f"{mpath} is not a readable edgefuse manifest")
    checked, problems, warnings = [], [], []
    listed = {MANIFEST, *REPORT_FILES}
    for a in entries:
        name = a.get("file", "")
        # A hand-edited or damaged manifest may hold anything: only a plain file name of this folder counts.
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..") or "\x00" in name:
            problems.append(f"manifest entry with an invalid file name {name!r}"[:200])
            continue
        listed.add(name)
        p = out / name
        if not p.is_file():
            problems.append(f"{name}: missing")
            continue
        size = p.stat().st_size
        if size != a.get("bytes"):
            problems.append(f"{name}: {size} bytes, manifest says {a.get('bytes')!r}"[:200])
        elif sha256_file(p) != a.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest (the file was changed)")
        checked.append(name)
        if a.get("kind") == "sidecar":
            try:
                side = json.loads(p.read_text())
                target = out / side["file"]
                if target.is_file() and sha256_file(target) != side.get("sha256"):
                    problems.append(f"{name}: its sha256 does not match {side['file']}")
            except Exception:
                problems.append(f"{name}: not a readable sidecar")
    for p in sorted(out.iterdir()):
        if p.name.startswith(TEMP_PREFIX):
            warnings.append(f"{p.name}: temporary folder of an unfinished export")
        elif p.name not in listed:
            warnings.append(f"{p.name}: not listed in the manifest")
    gate = manifest.get("gate")
    if isinstance(gate, dict) and gate.get("passed") is False:
        failures = gate.get("failures")
        failures = failures if isinstance(failures, list) else [] if failures is None else [failures]
        problems.append("this set failed its gate when it was exported"
                        + (": " + "; ".join(map(str, failures)) if failures else ""))
    return VerifyResult(out, checked, problems, warnings)


def check_target(out: Path, force: bool) -> None:
    """Refuse, without ``force``, a folder holding a published set or the files of an unfinished/mixed one."""
    if (out / MANIFEST).exists() and not force:
        raise UsageError(f"{out} already holds exported artifacts; pass --force to replace them")
    leftovers = _unvouched_files(out)
    if leftovers and not force:
        raise UsageError(f"{out} holds files of an unfinished or mixed export and no {MANIFEST} "
                         f"({', '.join(leftovers[:3])}{', ...' if len(leftovers) > 3 else ''}): pass --force to replace them")


def _unvouched_files(out: Path) -> list[str]:
    """Files an export would have written, in a folder with no manifest: an unfinished or mixed set."""
    if not out.is_dir() or (out / MANIFEST).exists():
        return []
    return sorted(p.name for p in out.iterdir() if p.is_file() and (
        p.name.startswith("model.") or p.name in REPORT_FILES or p.name == "required_operators.config"))


def _mobile_sidecar(tmp: Path, a: Artifact, contract: PreprocessContract, input_shape: list[int]) -> Artifact:
    from edgefuse.runtimes.sidecar import sidecar_dict, sidecar_path

    v = versions()
    runtime_keys = {"ort": ("onnxruntime",), "pte": ("executorch", "torch")}[a.kind]
    data = sidecar_dict(a.file, a.kind, a.precision, contract, input_shape, sha256_file(tmp / a.file),
                        {k: v[k] for k in ("edgefuse", *runtime_keys) if k in v})
    path = sidecar_path(tmp / a.file)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Artifact(path.name, "sidecar", a.precision, details={"for": a.file})


def export_artifacts(model: nn.Module, contract: PreprocessContract, out_dir: str | Path, *, force: bool = False,
                     **kwargs) -> ExportResult:
    """:func:`stage_artifacts` then :func:`publish_artifacts`: build, check and move into ``out_dir`` (same args)."""
    return publish_artifacts(stage_artifacts(model, contract, out_dir, force=force, **kwargs), force=force)


def stage_artifacts(
    model: nn.Module,
    contract: PreprocessContract,
    out_dir: str | Path,
    *,
    quantized=None,
    pte_quantized=None,
    formats: tuple[str, ...] = ("onnx", "torchscript"),
    batch: int | None = None,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    force: bool = False,
    check_inputs: torch.Tensor | None = None,
    manifest_extra: dict | None = None,
) -> ExportResult:
    """Build and check fp32 (and, given ``quantized``, int8) artifacts of ``model`` in a staging folder inside
    ``out_dir``; :func:`publish_artifacts` moves them into place (after the gate, for ``export``).

    The result's ``out_dir`` is the staging folder until published (``target`` is where they go). Nothing
    in ``out_dir`` itself changes here, so a kill or a failed check leaves the previous set as it was.

    Args:
        model: the fp32 model (eval mode is set).
        contract: preprocessing contract, stored in every ONNX file's ``metadata_props`` and in a
            ``<file>.json`` sidecar next to every ``.ort`` and ``.pte`` file.
        out_dir: target folder; refused if it already holds a manifest unless ``force``.
        quantized: a :class:`edgefuse.quantize.QuantizedModel` for the int8 ONNX/ORT/TorchScript artifacts.
        pte_quantized: the int8 program for ``pte`` (quantized with ``backend="xnnpack"``).
        formats: any of ``onnx``, ``ort`` (ONNX Runtime Mobile), ``pte`` (ExecuTorch/XNNPACK), ``torchscript``.
        batch: fixed batch size; ``None`` exports ONNX/TorchScript with a dynamic batch dimension and
            mobile formats (which need static shapes) with batch 1.
        opset: ONNX opset.
        simplify: run onnxsim (and keep its result only where it keeps int8 weights int8).
        force: replace existing artifacts.
        check_inputs: a few preprocessed inputs for the load-back checks of mobile files (default: noise).
        manifest_extra: extra manifest entries (source model, quantization report...).

    Raises:
        UsageError: bad arguments or an occupied output folder.
        MissingExtraError: ``pte`` without the ``executorch`` extra.
        ExportError: an artifact could not be produced or failed its check.
    """
    out = Path(out_dir)
    formats = parse_formats(list(formats))
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be >= 1, got {batch}")
    if "pte" in formats:
        from edgefuse._extras import require_executorch

        require_executorch()
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    check_target(out, force)
    model.eval()
    example = torch.zeros((batch or 1, *contract.input_shape[1:]))
    mobile_batch = batch or 1
    mobile_shape = [mobile_batch, *contract.input_shape[1:]]
    if check_inputs is None:
        check_inputs = torch.randn((8, *contract.input_shape[1:]), generator=torch.Generator().manual_seed(0))
    notes: list[str] = []
    arts: list[Artifact] = []
    variants = [("fp32", model)]
    if quantized is not None:
        variants.append(("int8", quantized.program))
    # ORT files are converted from the ONNX files: build those even when only "ort" ships.
    build = [f for f in FORMATS if f in formats or (f == "onnx" and "ort" in formats)]
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp(out)
    except OSError as e:
        raise UsageError(f"cannot write to {out}: {e.strerror or e}") from None
    tmp = None
    # The staging folder is created inside the try whose handler removes it: a signal (Ctrl-C/SIGTERM raise
    # here) arriving right after mkdtemp must not leave it behind, as it did under load.
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=out))
        except OSError as e:
            raise UsageError(f"cannot write to {out}: {e.strerror or e}") from None
        for fmt in build:
            if fmt == "onnx":
                for precision, module in variants:
                    name = f"model.{precision}.onnx"
                    export_onnx(module, (example,), tmp / name, input_names=[contract.input_name],
                                output_names=["logits"], dynamic_batch=batch is None, opset=opset)
                    details = _finish_onnx(tmp / name, contract, precision, simplify, notes)
                    arts.append(Artifact(name, "onnx", precision, details=details))
            elif fmt == "ort":
                from edgefuse.export.ort_mobile import (
                    REQUIRED_OPERATORS,
                    compare_with_onnx,
                    convert_to_ort,
                    mobile_usability,
                    required_operators,
                )

                sources = [tmp / a.file for a in arts if a.kind == "onnx"]
                ort_files, config = convert_to_ort(sources, tmp, mobile_batch)
                for src, ort_file, (precision, _) in zip(sources, ort_files, variants):
                    parity = compare_with_onnx(ort_file, src, check_inputs.numpy())
                    if parity["top1_agreement"] < 0.99:
                        raise ExportError(f"{ort_file.name} disagrees with {src.name} on "
                                          f"{100 * (1 - parity['top1_agreement']):.1f}% of the check inputs")
                    a = Artifact(ort_file.name, "ort", precision, details={
                        "batch": mobile_batch, "converted_from": src.name, "optimization": "all, target arm",
                        "parity_with_onnx": parity, "mobile_usability": mobile_usability(src, mobile_batch)})
                    arts += [a, _mobile_sidecar(tmp, a, contract, mobile_shape)]
                arts.append(Artifact(REQUIRED_OPERATORS, "ort-operators", "any", details={
                    "operators": required_operators(config),
                    "use": "onnxruntime reduced build: build.py --minimal_build --include_ops_by_config " + REQUIRED_OPERATORS}))
            elif fmt == "pte":
                from edgefuse.export.executorch_pte import export_pte

                pte_variants = [("fp32", model)]
                if pte_quantized is not None:
                    pte_variants.append(("int8", pte_quantized.program))
                mobile_example = torch.zeros(mobile_shape)
                for precision, module in pte_variants:
                    name = f"model.{precision}.pte"
                    details = export_pte(module, mobile_example, tmp / name)
                    a = Artifact(name, "pte", precision, details=details)
                    arts += [a, _mobile_sidecar(tmp, a, contract, mobile_shape)]
            elif fmt == "torchscript":
                for precision, module in variants:
                    name = f"model.{precision}.torchscript.pt"
                    try:
                        _torchscript(module, example, tmp / name)
                        arts.append(Artifact(name, "torchscript", precision,
                                             details={"note": "server-side PyTorch only; not a mobile format"}))
                    except Exception as e:
                        if precision == "fp32":
                            raise UnsupportedModelError(f"TorchScript export failed: {one_line(e)}; leave torchscript "
                                                        "out of --format to ship the other formats") from e
                        (tmp / name).unlink(missing_ok=True)
                        notes.append(f"int8 TorchScript not produced: {type(e).__name__}: {one_line(e, 160)}")
        if "onnx" not in formats:
            arts = [a for a in arts if a.kind != "onnx"]
        for a in arts:
            p = tmp / a.file
            a.bytes, a.sha256 = p.stat().st_size, sha256_file(p)
        manifest = {
            "schema": "edgefuse.manifest",
            "schema_version": MANIFEST_VERSION,
            "versions": versions(),
            "contract": contract.to_dict(),
            "export": {"formats": list(formats), "opset": opset, "batch": batch if batch else "dynamic",
                       "mobile_batch": mobile_batch if set(formats) & set(MOBILE_FORMATS) else None,
                       "simplify": simplify},
            "quantization": None if quantized is None else {
                "method": quantized.method, "config": quantized.config.to_dict(),
                "calib_samples": quantized.calib_samples, "qat_history": quantized.history,
            },
            "quantization_pte": None if pte_quantized is None else {
                "method": pte_quantized.method, "config": pte_quantized.config.to_dict(),
                "calib_samples": pte_quantized.calib_samples,
            },
            "cpu": _cpu_record(),
            "artifacts": [asdict(a) for a in arts],
            "notes": notes,
            **(manifest_extra or {}),
        }
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_created_and_empty(out, created)
        raise
    return ExportResult(tmp, arts, notes, manifest, target=out, created_target=created)


def _remove_if_created_and_empty(out: Path, created: bool) -> None:
    # A failed first export leaves no empty --out behind (a folder the user made is kept).
    if created:
        try:
            out.rmdir()
        except OSError:
            pass


#: Files a published folder may hold beside the manifest's artifacts (the gate's reports).
REPORT_FILES = ("report.json", "report.md")


def discard_staged(staged: ExportResult) -> None:
    """Remove a staged set that will not be published (an error or an interruption before the verdict)."""
    if staged.target is not None:
        shutil.rmtree(staged.out_dir, ignore_errors=True)
        _remove_if_created_and_empty(staged.target, staged.created_target)


def publish_artifacts(staged: ExportResult, *, force: bool = False, gate: dict | None = None) -> ExportResult:
    """Move a staged set (and any report files staged beside it) into its target folder, manifest last.

    ``gate`` (the verdict: ``passed``, ``failures``) is recorded in the manifest, so ``verify`` tells a
    set that failed its gate from one that passed. The previous set loses its manifest first, so no
    moment has a manifest vouching for mixed files; a kill inside the move leaves no manifest, which the
    next export refuses without ``--force`` and ``verify`` reports.
    """
    if staged.target is None:
        return staged
    tmp, out, arts = staged.out_dir, staged.target, staged.artifacts
    manifest = staged.manifest
    try:
        if gate is not None:
            manifest = {**manifest, "gate": gate}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if (out / MANIFEST).exists() and not force:
            raise UsageError(f"{out} already holds exported artifacts; pass --force to replace them")
        previous: list[str] = _unvouched_files(out)  # (--force) a manifest-less set's files go too
        if (out / MANIFEST).exists():
            try:
                previous = [a["file"] for a in json.loads((out / MANIFEST).read_text())["artifacts"]]
            except Exception:
                previous = []
            (out / MANIFEST).unlink()
        for stale in REPORT_FILES:
            (out / stale).unlink(missing_ok=True)
        for name in [a.file for a in arts] + [r for r in REPORT_FILES if (tmp / r).exists()]:
            os.replace(tmp / name, out / name)
        os.replace(tmp / MANIFEST, out / MANIFEST)
        for name in set(previous) - {a.file for a in arts}:
            if name and Path(name).name == name:
                (out / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, arts, staged.notes, manifest)
