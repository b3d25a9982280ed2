"""Write a model's deployable artifacts atomically, with a manifest.

Every artifact is written into a temporary folder beside the target, checked, and only then
moved into place; the manifest is written last. A failed export leaves the target folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from edgefuse._versions import cpu_name, sha256_file, versions
from edgefuse.data.contract import PreprocessContract
from edgefuse.errors import InputFileError, UsageError
from edgefuse.export.formats import Artifact, BuildContext, build_order, get_format, parse_formats, require_extras
from edgefuse.export.onnx import DEFAULT_OPSET
from edgefuse.quantize.targets import detect_target
from edgefuse.runtimes.sidecar import sidecar_dict, sidecar_path

MANIFEST = "manifest.json"
#: Temporary folders of runs in progress: ``.edgefuse-export-<pid>-<random>`` inside the target folder.
TEMP_PREFIX = ".edgefuse-export-"
MANIFEST_VERSION = 1


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


def _cpu_record() -> dict:
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


def _export_files(out: Path) -> list[str]:
    """Files in ``out`` named as an export names its files (``model.*``, reports, the operator list)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.is_file() and (
        p.name.startswith("model.") or p.name in REPORT_FILES or p.name == "required_operators.config"))


def _unvouched_files(out: Path) -> list[str]:
    """Files an export would have written, in a folder with no manifest: an unfinished or mixed set."""
    return [] if (out / MANIFEST).exists() else _export_files(out)


def _mobile_sidecar(tmp: Path, a: Artifact, contract: PreprocessContract, input_shape: list[int]) -> Artifact:
    v = versions()
    runtime_keys = get_format(a.kind).sidecar_versions
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
    latency_threads: int | None = None,
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
        latency_threads: measure the int8 ONNX file's latency-aware precision with this many threads (None:
            all int8, nothing measured); see :mod:`edgefuse.export.kernel_choice`.
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
    require_extras(formats)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    check_target(out, force)
    model.eval()
    mobile_batch = batch or 1
    mobile_shape = [mobile_batch, *contract.input_shape[1:]]
    if check_inputs is None:
        check_inputs = torch.randn((8, *contract.input_shape[1:]), generator=torch.Generator().manual_seed(0))
    notes: list[str] = []
    arts: list[Artifact] = []
    variants = [("fp32", model)] + ([("int8", quantized.program)] if quantized is not None else [])
    xnnpack_variants = [("fp32", model)] + ([("int8", pte_quantized.program)] if pte_quantized is not None else [])
    order = build_order(formats)  # with the formats the asked ones convert (ort needs onnx)
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
        example = torch.zeros((batch or 1, *contract.input_shape[1:]))
        ctx = BuildContext(tmp, contract, variants, xnnpack_variants, example, mobile_shape, batch is None, opset,
                           simplify, check_inputs, notes, built=[], latency_threads=latency_threads)
        for fmt in order:
            files = fmt.build(ctx)
            if fmt.mobile:  # every phone file carries its contract beside it
                files += [_mobile_sidecar(tmp, a, contract, mobile_shape) for a in list(files) if a.kind == fmt.name]
            ctx.built.extend(files)
            if fmt.name in formats:  # a format built only to be converted (onnx for ort) is not shipped
                arts.extend(files)
        for a in arts:
            p = tmp / a.file
            a.bytes, a.sha256 = p.stat().st_size, sha256_file(p)
        manifest = {
            "schema": "edgefuse.manifest",
            "schema_version": MANIFEST_VERSION,
            "versions": versions(),
            "contract": contract.to_dict(),
            "export": {"formats": list(formats), "opset": opset, "batch": batch if batch else "dynamic",
                       "mobile_batch": mobile_batch if any(get_format(f).mobile for f in formats) else None,
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
REPORT_FILES = ("report.json", "report.md", "report.html")


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
        # (--force) what the previous manifest lists, and any export-named file no manifest lists (left by a
        # kill after an earlier publish had moved its manifest in, or by a manifest-less mix): all of it goes.
        previous = set(_export_files(out))
        if (out / MANIFEST).exists():
            try:
                previous |= {a["file"] for a in json.loads((out / MANIFEST).read_text())["artifacts"]
                             if isinstance(a, dict) and isinstance(a.get("file"), str)}
            except Exception:
                pass
            (out / MANIFEST).unlink()
        for stale in REPORT_FILES:
            (out / stale).unlink(missing_ok=True)
        for name in [a.file for a in arts] + [r for r in REPORT_FILES if (tmp / r).exists()]:
            os.replace(tmp / name, out / name)
        os.replace(tmp / MANIFEST, out / MANIFEST)
        for name in previous - {a.file for a in arts} - set(REPORT_FILES):
            if name and Path(name).name == name:
                (out / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, arts, staged.notes, manifest)
