"""The run ledger: every run, attempt, call, cent and output, in SQLite.

``Ledger.open(path)`` gives the async write API the engine uses and the read API behind
``aoe runs``, ``aoe show``, ``aoe cost-report`` and ``aoe run --resume``, and the run
lease (``Ledger.run_lease``, see ``aoe.ledger.lease``) that keeps a run to one process.
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
    LostCall,
    ResumeState,
    RunDetail,
    RunLeaseHolder,
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
    "LostCall",
    "ResumeState",
    "RunDetail",
    "RunLeaseHolder",
    "RunStart",
    "RunSummary",
    "WorkflowDetail",
    "WorkflowResume",
    "WorkflowStart",
    "default_db_path",
]
