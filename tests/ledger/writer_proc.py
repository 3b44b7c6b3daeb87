"""A real aoe-like process writing to a ledger, for the concurrency and SIGKILL tests.

    python writer_proc.py concurrent DB RUN_ID CALLS READY_DIR PEERS
    python writer_proc.py agents DB RUN_ID

``concurrent`` waits until PEERS processes are ready, then records CALLS calls.
``agents`` resumes RUN_ID if it exists and runs agents forever (three calls each),
printing what it wrote once a commit covers it: what it prints is committed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal
from pathlib import Path

from aoe.errors import UsageError
from aoe.ledger import (
    AttemptEnd,
    AttemptStart,
    CallRecord,
    CallStart,
    Ledger,
    RunStart,
    WorkflowStart,
)

COST = Decimal("0.000123")


def _call(run_id: str, agent: str, attempt: int, turn: int) -> CallRecord:
    now = time.time()
    return CallRecord(
        run_id,
        "wf",
        agent,
        attempt,
        turn,
        "openai",
        "gpt-4o-mini",
        100,
        10,
        0,
        0,
        0,
        COST,
        True,
        now,
        now,
        "ok",
        None,
        (),
        None,
    )


async def concurrent(db: Path, run_id: str, calls: int, ready: Path, peers: int) -> None:
    ledger = Ledger.open(db)
    await ledger.start_run(RunStart(run_id, time.time(), "aoe run", ("wf.yaml",), True, None))
    await ledger.start_workflow(WorkflowStart(run_id, "wf", "wf", "wf.yaml"))
    await ledger.start_attempt(AttemptStart(run_id, "wf", "a", 1, None, "openai/x", time.time()))
    (ready / run_id).touch()
    deadline = time.monotonic() + 20
    # a barrier across processes: no asyncio.Event can cross them, so poll the directory
    while len(list(ready.iterdir())) < peers and time.monotonic() < deadline:  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.005)
    for start in range(0, calls, 10):  # ten agents' calls in flight at a time
        await asyncio.gather(
            *(
                ledger.record_call(_call(run_id, "a", 1, t))
                for t in range(start, min(start + 10, calls))
            )
        )
    await ledger.finish_attempt(AttemptEnd(run_id, "wf", "a", 1, "COMPLETED", time.time()))
    await ledger.finish_run(run_id, "COMPLETED", time.time())
    await ledger.aclose()
    print("done", flush=True)


async def agents(db: Path, run_id: str) -> None:
    """Agents of three calls each, written as the engine writes them: the attempt's start,
    each call's end and the attempt's end are queued (nobody waits); each call's start is
    waited for, and its commit is that of everything queued before it. So a line saying a
    queued write happened is printed only after the next call start returns."""
    ledger = Ledger.open(db)
    try:
        state = ledger.resume_state(run_id)
        done = set(state.workflows["wf"].completed) if "wf" in state.workflows else set()
        next_attempt = dict(state.workflows["wf"].next_attempt) if "wf" in state.workflows else {}
    except UsageError:
        done, next_attempt = set(), {}
    started = RunStart(run_id, time.time(), "aoe run", ("wf.yaml",), True, Decimal("5.0"))
    await ledger.start_run(started)
    flow = WorkflowStart(run_id, "wf", "wf", "wf.yaml", {"n": 1}, Decimal("1.0"))
    await ledger.start_workflow(flow)
    print("started", flush=True)
    queued: list[str] = []  # lines of queued writes, printed once a later commit covers them
    for k in range(10**6):
        agent = f"agent-{k}"
        if agent in done:
            continue
        attempt = next_attempt.get(agent, 1)
        await ledger.start_attempt(
            AttemptStart(run_id, "wf", agent, attempt, "m", "openai/x", time.time())
        )
        for turn in (1, 2, 3):
            await ledger.start_call(
                CallStart(run_id, "wf", agent, attempt, turn, "openai", "x", COST, 100, time.time())
            )
            print("".join(queued) + f"start {agent} {attempt} {turn}", flush=True)
            queued.clear()
            await ledger.record_call(_call(run_id, agent, attempt, turn))
            queued.append(f"call {agent} {attempt} {turn}\n")
        await ledger.finish_attempt(
            AttemptEnd(run_id, "wf", agent, attempt, "COMPLETED", time.time(), None, {"k": k})
        )
        queued.append(f"completed {agent} {attempt}\n")


def main(argv: list[str]) -> None:
    if argv[0] == "concurrent":
        asyncio.run(concurrent(Path(argv[1]), argv[2], int(argv[3]), Path(argv[4]), int(argv[5])))
    else:
        asyncio.run(agents(Path(argv[1]), argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
