"""A run killed with SIGKILL at any moment resumes without paying again for finished agents.

The processes are real: each ``aoe run`` is a child forked from a process that imported
aoe once (``forker.py``), so twenty kill-and-resume trials take seconds, not a minute of
interpreter starts. Each child has its own ledger connections, writer thread, event loop
and HTTP client, and is SIGKILLed like any other process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.fakeprovider import FakeProvider

FORKER = Path(__file__).with_name("forker.py")
REPO = Path(__file__).resolve().parents[2]

# gpt-4o-mini list prices, USD per million tokens, written out so the check is independent
INPUT_PER_MTOK = Decimal("0.15")
OUTPUT_PER_MTOK = Decimal("0.60")
PUSD = Decimal(10) ** -12
ROUNDING = Decimal("0.000000001")

#: The children renew their run lease every 20 ms: a killed one's lease is stale 60 ms on.
HEARTBEAT = "0.02"


@dataclass
class Child:
    """One aoe process forked by the fork server."""

    forker: Forker
    pid: int
    out: Path
    err: Path
    code: int | None = None

    def kill(self) -> None:
        """SIGKILL it, unless it ended (and was reaped) already: its pid is no longer its."""
        if self.code is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.code is None:
            self.code = int(self.forker.ask(f"wait {self.pid}"))
        return self.code

    def poll(self) -> int | None:
        if self.code is None:
            answer = self.forker.ask(f"poll {self.pid}")
            self.code = None if answer == "running" else int(answer)
        return self.code

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()


class Forker:
    """The fork server (``forker.py``), started with no API key and no ledger of the user's."""

    def __init__(self, tmp: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "AOE_DB"}
        self.tmp = tmp
        self.count = 0
        self.proc = subprocess.Popen(
            [sys.executable, str(FORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert self.ask(None) == "ready"

    def ask(self, line: str | None) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def spawn(self, *args: str, db: Path, key: str | None = None) -> Child:
        self.count += 1
        out, err = self.tmp / f"{self.count}.out", self.tmp / f"{self.count}.err"
        env = {"AOE_DB": str(db), "CI": "true"}
        if key is not None:
            env["OPENAI_API_KEY"] = key
        spec = {"args": list(args), "env": env, "out": str(out), "err": str(err)}
        return Child(self, int(self.ask("run " + json.dumps(spec))), out, err)

    def close(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def forker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forker]:
    server = Forker(tmp_path_factory.mktemp("forked"))
    yield server
    server.close()


def _query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def _completed(db: Path) -> set[str]:
    return {r[0] for r in _query(db, "select agent_id from attempts where state = 'COMPLETED'")}


def _in_flight(db: Path) -> int:
    return len(_query(db, "select 1 from calls where ended_at is null"))


def _until(
    condition: Callable[[], bool], child: Child | None = None, timeout_s: float = 20
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return
        time.sleep(0.003)


def _lease_stale(db: Path) -> bool:
    rows = _query(db, "select heartbeat_at + stale_after_s from leases")
    return all(expires < time.time() for (expires,) in rows)


def _run_id(db: Path) -> str:
    (row,) = _query(db, "select id from runs")
    return str(row[0])


# --- every agent once, after kills at random moments --------------------------------------


def _simulated_workflow(tmp: Path, agents: int, latency_s: float = 0.12) -> Path:
    lines = [
        "version: 1",
        "name: close",
        "defaults:",
        "  model: openai/gpt-4o-mini",
        "  max_tokens: 100",
        "agents:",
    ]
    for i in range(agents):
        needs = f"[a{i - 1:02d}]" if i % 3 else "[]"
        lines += [
            f"  a{i:02d}:",
            f"    needs: {needs}",
            f"    prompt: 'step {i}'",
            f"    simulate: {{latency_s: {latency_s}, output_tokens: 20}}",
        ]
    path = tmp / "close.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_pays_each_agent_once(
    tmp_path: Path, forker: Forker
) -> None:
    """Killed three times mid-run, resumed each time: every agent completes exactly once."""
    rng = random.Random(1234)
    agents = 24
    db = tmp_path / "ledger.db"
    wf = _simulated_workflow(tmp_path, agents)
    run = forker.spawn(
        "run", str(wf), "--simulate", "--no-live", "--lease-heartbeat", HEARTBEAT, db=db
    )
    _until(lambda: len(_completed(db)) >= 3, run)
    time.sleep(rng.uniform(0, 0.1))  # land anywhere: mid-call, mid-write, between agents
    run.kill()
    run.wait()
    run_id = _run_id(db)
    for target in (9, 15):
        _until(lambda: _lease_stale(db))
        again = forker.spawn(
            "run", "--resume", run_id, "--no-live", "--lease-heartbeat", HEARTBEAT, db=db
        )
        _until(lambda t=target: len(_completed(db)) >= t, again)
        time.sleep(rng.uniform(0, 0.1))
        again.kill()
        again.wait()
        assert _query(db, "pragma integrity_check") == [("ok",)]
    before = _completed(db)
    _until(lambda: _lease_stale(db))
    final = forker.spawn("run", "--resume", run_id, "--no-live", "--json", db=db)
    assert final.wait() == 0, final.stderr()
    doc = json.loads(final.stdout())
    states = doc["workflows"][0]["agents"]
    assert {a["state"] for a in states.values()} == {"COMPLETED"}
    assert {a for a, v in states.items() if v["resumed"]} == before
    assert _query(db, "pragma integrity_check") == [("ok",)]
    completed = _query(
        db, "select agent_id, count(*) from attempts where state = 'COMPLETED' group by agent_id"
    )
    assert sorted(completed) == [(f"a{i:02d}", 1) for i in range(agents)]
    ok_calls = _query(
        db,
        "select agent_id, count(*) from calls c where status = 'ok' and exists ("
        " select 1 from attempts a where a.run_id = c.run_id and a.agent_id = c.agent_id"
        " and a.attempt = c.attempt and a.state = 'COMPLETED') group by agent_id",
    )
    assert sorted(ok_calls) == [(f"a{i:02d}", 1) for i in range(agents)]
    assert _query(db, "select count(*) from leases") == [(0,)]  # released by the last run


# --- what the provider billed is what the ledger holds ----------------------------------


def _billing_workflow(tmp: Path, server: FakeProvider, agents: int) -> Path:
    (tmp / "aoe.yaml").write_text(
        "providers:\n  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
        f" base_url: '{server.openai_base_url}'}}\n"
    )
    body = "".join(
        f"  a{i:02d}:\n    needs: {f'[a{i - 1:02d}]' if i % 3 else '[]'}\n    prompt: 'step {i}'\n"
        for i in range(agents)
    )
    path = tmp / "close.yaml"
    path.write_text(
        "version: 1\nname: close\n"
        "defaults:\n  model: openai/gpt-4o-mini\n  max_tokens: 100\n  timeout_s: 10\n"
        "  retry: {max_retries: 2, strategy: constant, base_delay_s: 0.01, jitter: false}\n"
        "agents:\n" + body
    )
    return path


def _list_price(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * INPUT_PER_MTOK + output_tokens * OUTPUT_PER_MTOK) / 1_000_000


@pytest.mark.slow
def test_kill_9_against_a_provider_that_bills_calls_in_flight(
    tmp_path: Path, forker: Forker
) -> None:
    """20 trials, each SIGKILLed at a random moment (half of them with a call in flight),
    then resumed to the end, against a server that bills every call it completes, also
    those whose client died before the answer reached it. In every trial: every call the
    server billed is in the ledger; what it billed equals the ledger's confirmed cost plus
    what the ledger holds as unconfirmed (exactly, where no call was lost; a lost call is
    held at its reservation, an upper bound of its bill); no agent the ledger knew had
    completed is paid again; and the spend stays within the run's budget."""
    rng = random.Random(20261208)
    agents, budget = 6, Decimal("0.002")
    server = FakeProvider(latency_s=0.02)
    server.start()
    lost_total = billed_after_kill = 0
    try:
        wf = _billing_workflow(tmp_path, server, agents)
        for trial in range(20):
            db = tmp_path / f"trial-{trial}.db"
            first_bill = len(server.billed)
            run = forker.spawn(
                "run", str(wf), "--no-live", "--budget", str(budget),
                "--lease-heartbeat", HEARTBEAT, db=db, key="sk-test-kill",
            )  # fmt: skip
            if trial % 2:
                _until(lambda db=db: _in_flight(db) > 0, run)
                time.sleep(rng.uniform(0, 0.015))  # shorter than the server's 20 ms
            else:
                done_at_least = rng.randint(1, agents - 1)
                _until(lambda db=db, n=done_at_least: len(_completed(db)) >= n, run)
                time.sleep(rng.uniform(0, 0.03))
            run.kill()
            killed_at = time.monotonic()
            run.wait()
            known_done = _completed(db)
            run_id = _run_id(db)
            _until(lambda db=db: _lease_stale(db))
            resumed_at = time.monotonic()
            resume = forker.spawn(
                "run", "--resume", run_id, "--no-live", "--lease-heartbeat", HEARTBEAT,
                db=db, key="sk-test-kill",
            )  # fmt: skip
            assert resume.wait() == 0, resume.stderr()
            _until(lambda: server.in_flight == 0)
            bills = server.billed[first_bill:]
            billed_after_kill += sum(1 for b in bills if killed_at < b.at < resumed_at)

            billed: dict[str, list[Decimal]] = defaultdict(list)
            for bill in bills:
                agent = f"a{int(bill.prompt.split()[-1]):02d}"
                billed[agent].append(_list_price(bill.input_tokens, bill.output_tokens))
            confirmed: Counter[str] = Counter()
            unconfirmed: Counter[str] = Counter()
            rows: Counter[str] = Counter()
            for agent, pusd, ok, ended in _query(
                db, "select agent_id, cost_pusd, cost_confirmed, ended_at from calls"
            ):
                rows[agent] += 1
                (confirmed if ok else unconfirmed)[agent] += Decimal(pusd) * PUSD
                lost_total += ended is None
            where = f"trial {trial}"
            for agent in sorted(set(billed) | set(rows)):
                paid = sum(billed[agent], Decimal(0))
                assert len(billed[agent]) <= rows[agent], (
                    f"{where}: a bill of {agent} not on record"
                )
                assert confirmed[agent] <= paid + ROUNDING, where
                assert paid <= confirmed[agent] + unconfirmed[agent] + ROUNDING, where
                if not unconfirmed[agent]:
                    assert abs(paid - confirmed[agent]) < ROUNDING, where
            for agent in known_done:
                assert len(billed[agent]) == 1, f"{where}: {agent} completed and was paid again"
            ledger_total = sum(confirmed.values(), Decimal(0)) + sum(
                unconfirmed.values(), Decimal(0)
            )
            assert ledger_total <= budget, where
            assert sum((sum(v, Decimal(0)) for v in billed.values()), Decimal(0)) <= budget, where
            states = _query(
                db,
                "select agent_id, count(*) from attempts where state = 'COMPLETED'"
                " group by agent_id",
            )
            assert sorted(states) == [(f"a{i:02d}", 1) for i in range(agents)], where
    finally:
        server.stop()
    assert lost_total > 0  # some kills did land with a call in flight
    assert billed_after_kill > 0  # and the server billed some of those after the kill


# --- an answer that came back and was not committed yet ------------------------------------


@pytest.mark.slow
def test_kill_9_with_an_answer_queued_but_not_committed(tmp_path: Path, forker: Forker) -> None:
    """An agent's result is queued for the ledger, not waited for: the next agent goes on
    at once. Here another process holds the ledger's write lock from the moment a00's call
    is in flight, so a00's answer comes back (the server bills it, aoe reports a00 done)
    but its result cannot be committed. a01's request does not leave: its call start, the
    one write a request waits for, would commit a00's result with it. SIGKILLed there, the
    ledger knows a00's call only as started: the resume counts it at its reservation,
    says so, runs a00 again (its answer was truly lost), and pays once for every other
    agent."""
    server = FakeProvider(latency_s=0.4)  # time enough to take the lock while a00 is out
    server.start()
    db = tmp_path / "ledger.db"
    try:
        wf = _billing_workflow(tmp_path, server, 3)  # a00 <- a01 <- a02
        run = forker.spawn(
            "run", str(wf), "--no-live", "--lease-heartbeat", HEARTBEAT, db=db, key="sk-test-kill"
        )
        _until(lambda: _in_flight(db) > 0, run)
        assert run.poll() is None, run.stderr()
        blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # from now on nothing aoe writes commits
            _until(lambda: len(server.billed) == 1 and "close/a00: COMPLETED" in run.stderr())
            assert "close/a00: COMPLETED" in run.stderr()  # reported done, not yet recorded
            time.sleep(1.0)  # more than twice the server's latency: a01 had every chance
            assert [b.prompt for b in server.billed] == ["step 0"]
            assert len(server.requests) == 1  # a01's request waits for its start record
            run.kill()
            assert run.wait() == -signal.SIGKILL
        finally:
            blocker.close()  # rolls back: it wrote nothing
        assert _completed(db) == set()
        assert _query(db, "select agent_id, status from calls") == [("a00", "started")]

        _until(lambda: _lease_stale(db))
        resume = forker.spawn(
            "run", "--resume", _run_id(db), "--no-live", "--json", db=db, key="sk-test-kill"
        )
        assert resume.wait() == 0, resume.stderr()
        assert "1 call was in flight" in resume.stderr()
        assert "agent a00 runs again" in resume.stderr()
        prompts = [b.prompt for b in server.billed]
        assert prompts == ["step 0", "step 0", "step 1", "step 2"]  # a00 twice: lost once
        rows = _query(
            db, "select agent_id, status, cost_pusd, cost_confirmed from calls order by id"
        )
        assert [(a, status, ok) for a, status, _, ok in rows] == [
            ("a00", "interrupted", 0),  # lost: counted at its reservation, unconfirmed
            ("a00", "ok", 1),
            ("a01", "ok", 1),
            ("a02", "ok", 1),
        ]
        lost_bill = _list_price(server.billed[0].input_tokens, server.billed[0].output_tokens)
        assert lost_bill <= Decimal(rows[0][2]) * PUSD  # its reservation covers its bill
        for bill, (_, _, pusd, _) in zip(server.billed[1:], rows[1:], strict=True):
            assert abs(_list_price(bill.input_tokens, bill.output_tokens) - pusd * PUSD) < ROUNDING
        completed = _query(
            db, "select agent_id, count(*) from attempts where state = 'COMPLETED' group by 1"
        )
        assert sorted(completed) == [("a00", 1), ("a01", 1), ("a02", 1)]
    finally:
        server.stop()


# --- one process runs a run at a time ------------------------------------------------------


@pytest.mark.slow
def test_two_resumes_at_once_then_a_takeover_after_the_holder_is_killed(
    tmp_path: Path, forker: Forker
) -> None:
    """Two `aoe run --resume R` at once: one runs, the other exits 2 at once naming it; its
    heartbeat keeps the run its own for as long as it runs. Killed, it still blocks a
    resume until its lease is stale (three missed heartbeats, 0.6 s here); then a resume
    takes the run over and finishes it, each agent completed once."""
    db = tmp_path / "ledger.db"
    wf = _simulated_workflow(tmp_path, 6, latency_s=0.6)  # two chains of three: 1.8 s
    first = forker.spawn(
        "run", str(wf), "--simulate", "--no-live", "--lease-heartbeat", HEARTBEAT, db=db
    )
    _until(lambda: len(_completed(db)) >= 1, first)
    first.kill()
    first.wait()
    run_id = _run_id(db)
    _until(lambda: _lease_stale(db))

    resume = ("run", "--resume", run_id, "--no-live", "--json", "--lease-heartbeat", "0.2")
    pair = [forker.spawn(*resume, db=db), forker.spawn(*resume, db=db)]
    _until(lambda: any(c.poll() is not None for c in pair))
    loser = next(c for c in pair if c.code is not None)
    winner = pair[1] if loser is pair[0] else pair[0]
    assert loser.code == 2, loser.stderr()
    assert winner.poll() is None  # refused while the holder runs, not after it
    said = loser.stderr()
    holder = f"run {run_id} is already being run by pid {winner.pid} on {socket.gethostname()}"
    assert f"{holder} since" in said
    assert "hint: wait for it to end" in said
    assert loser.stdout() == ""  # it ran nothing

    time.sleep(0.8)  # longer than the window: only the holder's heartbeat keeps it
    later = forker.spawn(*resume, db=db)
    assert later.wait() == 2
    assert winner.poll() is None
    winner.kill()
    assert winner.wait() == -signal.SIGKILL
    too_soon = forker.spawn(*resume, db=db)
    assert too_soon.wait() == 2
    assert f"by pid {winner.pid}" in too_soon.stderr()  # a dead holder, within its window

    _until(lambda: _lease_stale(db))
    takeover = forker.spawn(*resume, db=db)
    assert takeover.wait() == 0, takeover.stderr()
    agents = json.loads(takeover.stdout())["workflows"][0]["agents"]
    assert {a["state"] for a in agents.values()} == {"COMPLETED"}
    completed = _query(
        db, "select agent_id, count(*) from attempts where state = 'COMPLETED' group by agent_id"
    )
    assert sorted(completed) == [(f"a{i:02d}", 1) for i in range(6)]
    assert _query(db, "select count(*) from leases") == [(0,)]
