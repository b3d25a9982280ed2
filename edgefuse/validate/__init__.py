"""Validation: fp32 vs int8 in their runtimes (accuracy, agreement, SQNR, size, latency) and the CI gate."""

from edgefuse._versions import cpu_name
from edgefuse.validate.core import validate_models, write_report
from edgefuse.validate.gate import GateFailure, GateResult, judge
from edgefuse.validate.latency import interleaved_latency
from edgefuse.validate.report import REPORT_SCHEMA_VERSION, Budgets, ValidationReport
from edgefuse.runtimes import OrtModel

__all__ = ["Budgets", "GateFailure", "GateResult", "OrtModel", "REPORT_SCHEMA_VERSION", "ValidationReport", "cpu_name",
           "interleaved_latency", "judge", "validate_models", "write_report"]
