"""The run ledger: every run, attempt, call, cent and output, in SQLite.

``Ledger.open(path)`` gives the async write API the engine uses and the read API behind
``aoe runs``, ``aoe show``, ``aoe cost-report`` and ``aoe run --resume``.
"""

from aoe.ledger.records import (
    AgentDetail,
    AttemptDetail,
    AttemptEnd,
    AttemptStart,
    CallRecord,
    CallStart,
    CostReport,
    CostRow,
    ResumeState,
    RunDetail,
    RunStart,
    RunSummary,
    WorkflowDetail,
    WorkflowResume,
    WorkflowStart,
)
from aoe.ledger.store import Ledger, default_db_path

__all__ = [
    "AgentDetail",
    "AttemptDetail",
    "AttemptEnd",
    "AttemptStart",
    "CallRecord",
    "CallStart",
    "CostReport",
    "CostRow",
    "Ledger",
    "ResumeState",
    "RunDetail",
    "RunStart",
    "RunSummary",
    "WorkflowDetail",
    "WorkflowResume",
    "WorkflowStart",
    "default_db_path",
]
