"""Reading the ledger back: run lists, one run in detail, cost reports, resume state.

Every function takes a connection already inside a read transaction (one snapshot), so
a report never mixes rows from before and after a concurrent write. A run whose
``ended_at`` is empty is RUNNING while its process lives and INTERRUPTED once it is gone
(killed, crashed); its attempts with no end read the same way, and so do its calls that
started and never ended (``started`` while it runs, ``interrupted`` once it is gone),
which count at their reservations as unconfirmed cost. Whether the process lives is its
lease's heartbeat (``aoe.ledger.lease``), or for a run without a lease (recorded by an
older aoe) whether its pid still runs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from aoe.cost.money import from_pusd, parse_decimal
from aoe.errors import UsageError
from aoe.ledger.dialect import Conn, dialect_of
from aoe.ledger.lease import holder_of
from aoe.ledger.records import (
    CALL_INTERRUPTED,
    CALL_STARTED,
    FAILED_STATES,
    INTERRUPTED,
    RUNNING,
    AgentDetail,
    AttemptDetail,
    CallRecord,
    CostGroup,
    CostReport,
    CostRow,
    LostCall,
    ResumeState,
    RunDetail,
    RunLeaseHolder,
    RunSummary,
    WorkflowDetail,
    WorkflowResume,
)

_AgentKey = tuple[str, str]  # (workflow_key, agent_id)


def _alive(pid: int | None, host: str | None) -> bool:
    """Whether the process that owns a run still runs (unknowable on another host: yes)."""
    if pid is None or host is None:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_run_id(conn: Conn, prefix: str) -> str:
    """The full id of the run ``prefix`` names; unknown or ambiguous is a usage error."""
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (prefix,)).fetchone():
        return prefix
    rows = conn.execute(
        "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started_at DESC LIMIT 6",
        (len(prefix), prefix),
    ).fetchall()
    if len(rows) == 1:
        return str(rows[0][0])
    if not rows or not prefix:
        raise UsageError(
            f"no run {prefix!r} in the ledger", hint="see `aoe runs` for the ids of recent runs"
        )
    shown = ", ".join(str(r[0]) for r in rows[:5])
    raise UsageError(
        f"run id prefix {prefix!r} is ambiguous: {shown}",
        hint="give more characters of the id (see `aoe runs`)",
    )


_RUN_COLUMNS = "id, started_at, ended_at, state, command, files, simulate, budget_usd, pid, host"


def _final_states(conn: Conn, run_id: str, live: bool) -> dict[_AgentKey, str]:
    """Each agent's state: that of its latest attempt (an attempt with no end: see above)."""
    rows = conn.execute(
        "SELECT workflow_key, agent_id, state FROM attempts a WHERE run_id = ? AND attempt ="
        " (SELECT MAX(attempt) FROM attempts b WHERE b.run_id = a.run_id"
        " AND b.workflow_key = a.workflow_key AND b.agent_id = a.agent_id)",
        (run_id,),
    ).fetchall()
    return {(w, a): s or (RUNNING if live else INTERRUPTED) for w, a, s in rows}


def _live(conn: Conn, run_id: str, pid: int | None, host: str | None) -> bool:
    """Whether a run without an end still runs: the process that last started it holds its
    lease and keeps it fresh (a run recorded by an older aoe, with no lease: its pid lives).
    A process that took the lease to resume the run but has not started it yet does not
    make it live."""
    held = holder_of(conn, run_id)
    if held is not None:
        mine = (held.pid, held.host) == (pid, host)
        return mine and not held.stale(time.time()) and _alive(pid, host)
    return _alive(pid, host)


def _summary(conn: Conn, row: tuple[Any, ...], mine: RunLeaseHolder | None = None) -> RunSummary:
    """One run's line; ``mine``, a lease the caller holds on it, means its process is gone."""
    run_id, started, ended, state, command, files, simulate, budget, pid, host = row
    held = None if mine is None else holder_of(conn, run_id)
    taken = held is not None and mine is not None and held.token == mine.token
    live = ended is None and not taken and _live(conn, run_id, pid, host)
    if ended is None:
        state = RUNNING if live else INTERRUPTED
    finals = _final_states(conn, run_id, live).values()
    workflows = conn.execute(
        "SELECT COUNT(*) FROM workflows WHERE run_id = ?", (run_id,)
    ).fetchone()[0]
    tin, tout, cost, unconfirmed, in_flight = conn.execute(
        "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
        " SUM(cost_pusd), SUM(CASE WHEN cost_confirmed <> 0 THEN 0 ELSE cost_pusd END),"
        " COALESCE(SUM(CASE WHEN ended_at IS NULL THEN 1 ELSE 0 END), 0)"
        " FROM calls WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return RunSummary(
        run_id=run_id,
        started_at=started,
        ended_at=ended,
        state=state,
        command=command,
        files=tuple(json.loads(files)),
        simulate=bool(simulate),
        budget_usd=parse_decimal(budget),
        workflows=int(workflows),
        agents_completed=sum(1 for s in finals if s == "COMPLETED"),
        agents_failed=sum(1 for s in finals if s in FAILED_STATES),
        input_tokens=int(tin),
        output_tokens=int(tout),
        cost_usd=from_pusd(cost),
        unconfirmed_usd=from_pusd(unconfirmed),
        in_flight_calls=int(in_flight),
    )


def list_runs(conn: Conn, limit: int) -> list[RunSummary]:
    """The newest ``limit`` runs, newest first."""
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_summary(conn, row) for row in rows]


def _run_row(conn: Conn, run_id: str) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert row is not None
    return tuple(row)


_CALL_COLUMNS = (
    "run_id, workflow_key, agent_id, attempt, turn, provider, model, input_tokens,"
    " output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_pusd,"
    " cost_confirmed, started_at, ended_at, status, request_id, tool_calls, estimate_tokens"
)


def _call(row: tuple[Any, ...], live: bool = True) -> CallRecord:
    """A call row; one still ``started`` reads ``interrupted`` once its run is not live."""
    (
        run_id,
        wf,
        agent,
        attempt,
        turn,
        provider,
        model,
        tin,
        tout,
        cread,
        cwrite,
        reasoning,
        cost,
        confirmed,
        started,
        ended,
        status,
        request_id,
        tools,
        estimate,
    ) = row
    return CallRecord(
        run_id=run_id,
        workflow_key=wf,
        agent_id=agent,
        attempt=attempt,
        turn=turn,
        provider=provider,
        model=model,
        input_tokens=tin,
        output_tokens=tout,
        cache_read_tokens=cread,
        cache_write_tokens=cwrite,
        reasoning_tokens=reasoning,
        cost_usd=from_pusd(cost),
        cost_confirmed=bool(confirmed),
        started_at=started,
        ended_at=ended,
        status=CALL_INTERRUPTED if status == CALL_STARTED and not live else status,
        request_id=request_id,
        tool_calls=tuple(json.loads(tools)),
        estimate_tokens=estimate,
    )


def _outputs(conn: Conn, run_id: str) -> dict[tuple[str, str, int], Any]:
    rows = conn.execute(
        "SELECT workflow_key, agent_id, attempt, output FROM outputs WHERE run_id = ?",
        (run_id,),
    ).fetchall()
    return {(w, a, n): json.loads(text) for w, a, n, text in rows}


def get_run(conn: Conn, prefix: str) -> RunDetail:
    """One run with its workflows, agents, attempts, calls and outputs."""
    run_id = resolve_run_id(conn, prefix)
    summary = _summary(conn, _run_row(conn, run_id))
    live = summary.state == RUNNING
    unfinished = RUNNING if live else INTERRUPTED
    calls: dict[_AgentKey, list[CallRecord]] = defaultdict(list)
    for row in conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE run_id = ? ORDER BY id", (run_id,)
    ):
        call = _call(tuple(row), live)
        calls[(call.workflow_key, call.agent_id)].append(call)
    attempts: dict[_AgentKey, list[tuple[AttemptDetail, str | None]]] = defaultdict(list)
    for w, a, n, module, model, started, ended, state, error in conn.execute(
        "SELECT workflow_key, agent_id, attempt, module, model, started_at, ended_at, state,"
        " error FROM attempts WHERE run_id = ? ORDER BY rowid",
        (run_id,),
    ):
        detail = AttemptDetail(n, model, started, ended, state or unfinished, error)
        attempts[(w, a)].append((detail, module))
    outputs = _outputs(conn, run_id)
    workflows = []
    for key, name, path, inputs, budget, state, started, ended, graph in conn.execute(
        "SELECT key, name, path, inputs, budget_usd, state, started_at, ended_at, graph_json"
        " FROM workflows WHERE run_id = ? ORDER BY rowid",
        (run_id,),
    ).fetchall():
        ids = [a for (wk, a) in [*attempts, *calls] if wk == key]
        agents = [
            _agent(
                agent_id,
                tried=attempts.get((key, agent_id), []),
                calls=calls.get((key, agent_id), []),
                outputs=outputs,
                workflow_key=key,
                unfinished=unfinished,
            )
            for agent_id in dict.fromkeys(ids)
        ]
        workflows.append(
            WorkflowDetail(
                workflow_key=key,
                name=name,
                path=path,
                inputs=json.loads(inputs),
                budget_usd=parse_decimal(budget),
                state=unfinished if state == RUNNING else state,
                started_at=started,
                ended_at=ended,
                agents=tuple(agents),
                cost_usd=sum((ag.cost_usd for ag in agents), Decimal(0)),
                needs={a: tuple(d) for a, d in json.loads(graph or "{}").items()},
            )
        )
    return RunDetail(run=summary, workflows=tuple(workflows))


def _agent(
    agent_id: str,
    *,
    tried: list[tuple[AttemptDetail, str | None]],
    calls: list[CallRecord],
    outputs: dict[tuple[str, str, int], Any],
    workflow_key: str,
    unfinished: str,
) -> AgentDetail:
    tried = sorted(tried, key=lambda t: t[0].attempt)
    started = [t for t in tried if t[0].model]
    output = None
    for detail, _ in reversed(tried):
        if (workflow_key, agent_id, detail.attempt) in outputs:
            output = outputs[(workflow_key, agent_id, detail.attempt)]
            break
    return AgentDetail(
        agent_id=agent_id,
        module=next((m for _, m in reversed(started) if m is not None), None),
        model=started[-1][0].model if started else (calls[-1].model if calls else ""),
        state=tried[-1][0].state if tried else unfinished,
        attempts=tuple(t[0] for t in tried),
        input_tokens=sum(c.input_tokens for c in calls),
        output_tokens=sum(c.output_tokens for c in calls),
        cost_usd=sum((c.cost_usd for c in calls), Decimal(0)),
        output=output,
        calls=tuple(calls),
    )


_GROUPS: dict[CostGroup, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "workflow": (("workflow",), ("COALESCE(w.name, c.workflow_key)",)),
    "agent": (("workflow", "agent"), ("COALESCE(w.name, c.workflow_key)", "c.agent_id")),
    "module": (("module",), ("COALESCE(a.module, '')",)),
    "model": (("provider", "model"), ("c.provider", "c.model")),
    "day": (("day",), ("{day}",)),
}
_SUMS = (
    "COUNT(*), COALESCE(SUM(c.input_tokens), 0), COALESCE(SUM(c.output_tokens), 0),"
    " COALESCE(SUM(c.cache_read_tokens), 0), COALESCE(SUM(c.cache_write_tokens), 0),"
    " SUM(c.cost_pusd), SUM(CASE WHEN c.cost_confirmed <> 0 THEN 0 ELSE c.cost_pusd END)"
)


def _row(keys: tuple[str, ...], sums: Iterable[Any]) -> CostRow:
    calls, tin, tout, cread, cwrite, cost, unconfirmed = sums
    return CostRow(
        keys,
        int(calls),
        int(tin),
        int(tout),
        int(cread),
        int(cwrite),
        from_pusd(cost),
        from_pusd(unconfirmed),
    )


def cost_report(
    conn: Conn,
    by: CostGroup,
    run_id: str | None,
    since: float | None,
    until: float | None,
) -> CostReport:
    """Cost grouped ``by``; the total is summed from the calls, not from the rows."""
    if by not in _GROUPS:
        raise UsageError(
            f"cannot group a cost report by {by!r}", hint="use --by " + "|".join(_GROUPS)
        )
    names, exprs = _GROUPS[by]
    where: list[str] = ["1 = 1"]
    params: list[str | float] = []
    if run_id is not None:
        run_id = resolve_run_id(conn, run_id)
        where.append("c.run_id = ?")
        params.append(run_id)
    if since is not None:
        where.append("c.started_at >= ?")
        params.append(since)
    if until is not None:
        where.append("c.started_at < ?")
        params.append(until)
    cond = " AND ".join(where)
    keys = ", ".join(exprs).replace("{day}", dialect_of(conn).day("c.started_at"))
    order = keys if by == "day" else f"SUM(c.cost_pusd) DESC, {keys}"
    rows = conn.execute(
        f"SELECT {keys}, {_SUMS} FROM calls c"
        " LEFT JOIN workflows w ON w.run_id = c.run_id AND w.key = c.workflow_key"
        " LEFT JOIN attempts a ON a.run_id = c.run_id AND a.workflow_key = c.workflow_key"
        " AND a.agent_id = c.agent_id AND a.attempt = c.attempt"
        f" WHERE {cond} GROUP BY {keys} ORDER BY {order}",
        params,
    ).fetchall()
    n = len(names)
    total = conn.execute(f"SELECT {_SUMS} FROM calls c WHERE {cond}", params).fetchone()
    return CostReport(
        by=by,
        key_names=names,
        rows=tuple(_row(tuple(str(k) for k in r[:n]), r[n:]) for r in rows),
        total=_row(("total",), total),
        run_id=run_id,
        since=since,
        until=until,
    )


def resume_state(conn: Conn, prefix: str, lease: RunLeaseHolder | None = None) -> ResumeState:
    """What ``aoe run --resume`` needs: finished outputs, spend so far, next attempt numbers.

    ``lease`` is the run's lease the resuming process took: then whoever ran the run last
    is gone, even if its pid (a container's pid 1) is the resumer's own.
    """
    run_id = resolve_run_id(conn, prefix)
    summary = _summary(conn, _run_row(conn, run_id), lease)
    outputs = _outputs(conn, run_id)
    completed: dict[str, dict[str, Any]] = defaultdict(dict)
    next_attempt: dict[str, dict[str, int]] = defaultdict(dict)
    fingerprints: dict[str, dict[str, str | None]] = defaultdict(dict)
    for w, a, n, state, fingerprint in conn.execute(
        "SELECT workflow_key, agent_id, attempt, state, fingerprint FROM attempts"
        " WHERE run_id = ? ORDER BY attempt",
        (run_id,),
    ):
        next_attempt[w][a] = max(next_attempt[w].get(a, 1), n + 1)
        if state == "COMPLETED":
            completed[w][a] = outputs.get((w, a, n))
            fingerprints[w][a] = fingerprint
    spent: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for w, a, top, cost in conn.execute(
        "SELECT workflow_key, agent_id, MAX(attempt), SUM(cost_pusd) FROM calls"
        " WHERE run_id = ? GROUP BY workflow_key, agent_id",
        (run_id,),
    ):
        spent[w][a] = from_pusd(cost)
        next_attempt[w][a] = max(next_attempt[w].get(a, 1), top + 1)
    lost = (
        tuple(
            LostCall(w, a, n, t, from_pusd(cost), started)
            for w, a, n, t, cost, started in conn.execute(
                "SELECT workflow_key, agent_id, attempt, turn, cost_pusd, started_at FROM calls"
                " WHERE run_id = ? AND ended_at IS NULL AND status = ? ORDER BY id",
                (run_id, CALL_STARTED),
            )
        )
        if summary.state != RUNNING
        else ()
    )
    workflows = {}
    for key, name, path, inputs, budget, state in conn.execute(
        "SELECT key, name, path, inputs, budget_usd, state FROM workflows WHERE run_id = ?"
        " ORDER BY rowid",
        (run_id,),
    ).fetchall():
        workflows[key] = WorkflowResume(
            workflow_key=key,
            name=name,
            path=path,
            inputs=json.loads(inputs),
            budget_usd=parse_decimal(budget),
            state=state if state != RUNNING else summary.state,
            completed=dict(completed.get(key, {})),
            spent_usd=sum(spent.get(key, {}).values(), Decimal(0)),
            agent_spent_usd=dict(spent.get(key, {})),
            next_attempt=dict(next_attempt.get(key, {})),
            fingerprints=dict(fingerprints.get(key, {})),
        )
    return ResumeState(
        run_id=run_id,
        command=summary.command,
        files=summary.files,
        simulate=summary.simulate,
        budget_usd=summary.budget_usd,
        state=summary.state,
        spent_usd=summary.cost_usd,
        workflows=workflows,
        lost_calls=lost,
    )
