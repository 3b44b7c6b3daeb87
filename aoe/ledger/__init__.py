"""The run ledger: every run, attempt, call, cent and output, in SQLite or PostgreSQL.

``Ledger.open(path)`` (a file, or a ``postgresql://`` URL for a ledger many machines
share: ``aoe.ledger.postgres``, the differences in ``aoe.ledger.dialect``) gives the
async write API the engine uses and the read API behind ``aoe runs``, ``aoe show``,
``aoe cost-report`` and ``aoe run --resume``, and the run lease (``Ledger.run_lease``,
see ``aoe.ledger.lease``) that keeps a run to one process.

Which writes are waited for, and why
------------------------------------
One writer thread commits every write in the order it was made, a transaction for
everything queued (``aoe.ledger.writer``; the same for both databases): when a write is
committed, so is every write made before it. A queued write that fails stops the ledger
(it and every later write fail, and the run with them), so that order is never broken.
Per agent the engine writes:

=================  ==========================  ============================================
write              waited for?                 why
=================  ==========================  ============================================
attempt start      no                          it precedes the call start, which commits it
call start         yes, before the request     the rule of issue 10: a call is on record
                   leaves (not for a call      (spent at its reservation, unconfirmed)
                   that cannot cost money)     before the provider can bill it; its commit
                                               also commits every result written before it
call end           no                          see below
attempt end        no                          see below
=================  ==========================  ============================================

So an agent's dependents start as soon as its answer is back, without waiting for its
result's commit, and a request waits for exactly one commit: its own call start.
Nothing can be paid twice for it. The result of agent A is queued before its dependent
B's call start, so B's request cannot leave before A's result is committed. If the
process dies between A's answer and that commit, the ledger holds A's call as started
and never ended: ``--resume`` counts it at its reservation (an upper bound of what it was
billed), warns that it was lost in flight, and runs A again, since its answer was
truly lost; B never sent anything. An agent the ledger recorded as completed is never run
again. A call that cannot cost money (the simulator, a model priced at zero) does not
wait even for its start: a crash can lose nothing that was paid for, and a simulated run
waits for no commit from its first agent to its last. The writer commits a queued write
as soon as it gets to it (within a batch, typically well under a millisecond), so
"not waited for" never means "kept back"; and ``finish_run`` returns only once
everything is committed, so a run's result, its summary and ``--json`` are never ahead
of the ledger. An agent's ``agent_finished`` event (and its progress line) may be.

Run, workflow and lease writes are few and are waited for. A read sees every write the
same ``Ledger`` was handed before it; ``Ledger.flush`` waits for every queued write.
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
