"""The library's face: one function per command, each returning data and never printing.

Each stage lives in :mod:`edgefuse.pipeline` (one module per command); this module only names them, so a
caller needs one import. Layers below never import it.
"""

from __future__ import annotations

from pathlib import Path

from edgefuse.distributed import joins_process_group as _joins_process_group
from edgefuse.pipeline.ablate import ablate_models
from edgefuse.pipeline.analyze import analyze_model
from edgefuse.pipeline.arm import verify_arm
from edgefuse.pipeline.export import ExportOutcome, ExportRequest, run_export
from edgefuse.pipeline.inspect import describe_artifact, describe_checkpoint
from edgefuse.pipeline.source import contract_from_flags, load_model_source
from edgefuse.pipeline.train import check_model_args, gate_log_path, train_model
from edgefuse.pipeline.validate import validate_files
from edgefuse.progress import NullProgress, Progress


@_joins_process_group
def export_model(source: str | Path, out_dir: str | Path, *, progress: Progress = NullProgress(), dist=None,
                 **request) -> ExportOutcome:
    """``edgefuse export``: load, quantize (PTQ or QAT), export, validate, gate, publish.

    ``request`` holds the fields of :class:`edgefuse.pipeline.export.ExportRequest` (``int8``, ``calib``,
    ``data``, ``formats``, ``budgets``, ...); the stages are :func:`edgefuse.pipeline.export.run_export`'s. The
    gate's verdict is in ``outcome.report.passed``; a failed gate does not raise.

    With ``budgets.max_drop`` and ``fallback``, an int8 build whose top-1 drop on the *validation* split
    exceeds the budget is rebuilt with its most sensitive modules in fp32 (greedy by measured
    sensitivity) until it fits; the *test* split then judges the result, so the choice is not fitted to
    the data that gates it. The kept modules and the latency each costs go to the manifest and report.

    Under ``torchrun`` the QAT step runs data-parallel on every process (DistributedDataParallel);
    everything else -- export, validation, every file written -- happens on rank 0 only, and the other
    ranks return an outcome with ``rank`` set and no ``export``/``report``. ``dist`` is set by the decorator.
    """
    return run_export(ExportRequest(source, out_dir, **request), progress=progress, dist=dist)


__all__ = ["ExportOutcome", "ExportRequest", "ablate_models", "analyze_model", "check_model_args", "contract_from_flags",
           "describe_artifact", "describe_checkpoint", "export_model", "gate_log_path", "load_model_source",
           "train_model", "validate_files", "verify_arm"]
