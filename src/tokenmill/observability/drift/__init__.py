"""Drift detection: is live traffic still like the reference? A library, no HTTP.

Per request: `observe(record, embedding)` -> Observation -> `DriftMonitor.observe`.
On demand: `DriftMonitor.check()` -> DriftReport. Offline: `build_profile` from a JSONL
file of past requests (`read_records`), saved and loaded as JSON (`Profile`).
"""

from tokenmill.observability.drift.monitor import DriftMonitor, DriftReport, SignalReport
from tokenmill.observability.drift.profile import Profile, build_profile
from tokenmill.observability.drift.records import (
    REFUSAL_PATTERNS,
    DriftRecord,
    Observation,
    answer_kind,
    observe,
    read_records,
)
from tokenmill.observability.drift.script import script_category
from tokenmill.observability.drift.signals import SIGNALS

__all__ = [
    "REFUSAL_PATTERNS",
    "SIGNALS",
    "DriftMonitor",
    "DriftRecord",
    "DriftReport",
    "Observation",
    "Profile",
    "SignalReport",
    "answer_kind",
    "build_profile",
    "observe",
    "read_records",
    "script_category",
]
