"""Rate limits and budgets hold for hundreds of parallel agents against the loopback server."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.app.prepare import RunOptions, prepare
from aoe.app.run import RunHandle
from aoe.cli.main import main
from aoe.engine.results import AgentState
from tests.fakeprovider import FakeProvider, fake_provider

__all__ = ["fake_provider"]

# gpt-4o-mini list prices, USD per million tokens, written out so the check is independent
INPUT_PER_MTOK = Decimal("0.15")
OUTPUT_PER_MTOK = Decimal("0.60")


def _workflow(
    tmp: Path, server: FakeProvider, count: int, *, limits: str = "", budget: str = ""
) -> Path:
    (tmp / "aoe.yaml").write_text(
        "providers:\n"
        "  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
        f" base_url: '{server.openai_base_url}'"
        + (f", limits: {{{limits}}}" if limits else "")
        + "}\n"
    )
    agents = "".join(f"  a{i:03d}:\n    prompt: 'Check invoice {i}'\n" for i in range(count))
    path = tmp / "wf.yaml"
    path.write_text(
        "version: 1\nname: many\n"
        + budget
        + "defaults:\n  model: openai/gpt-4o-mini\n  max_tokens: 200\n  timeout_s: 30\n"
        "  retry: {max_retries: 2, strategy: constant, base_delay_s: 0.05, jitter: false}\n"
        "agents:\n" + agents
    )
    return path


class SkipAheadClock:
    """The wall clock, except that a sleep begun while nothing is in flight skips ahead.

    ``now()`` is monotonic time plus every second skipped so far. ``sleep`` waits in real
    time while ``idle()`` is false (a call is between its grant and its answer), then adds
    what is left of the sleep to the clock at once. Nothing in flight means nothing can
    tell a skip from a wait, and every real delay (network, a busy event loop) still takes
    its real length on this clock. Of several sleepers, the earliest deadline skips first.
    """

    def __init__(self, idle: Callable[[], bool]) -> None:
        self.idle = idle
        self.skipped_s = 0.0
        self._deadlines: list[float] = []

    def now(self) -> float:
        return time.monotonic() + self.skipped_s

    def wall(self) -> float:
        return time.time() + self.skipped_s

    async def sleep(self, seconds: float) -> None:
        deadline = self.now() + max(0.0, seconds)
        self._deadlines.append(deadline)
        try:
            while (left := deadline - self.now()) > 0:
                if deadline == min(self._deadlines) and self.idle():
                    self.skipped_s += left
                    return
                await asyncio.sleep(min(left, 0.001))
        finally:
            self._deadlines.remove(deadline)


def _server_cost(server: FakeProvider) -> Decimal:
    """What the server says it billed: its own usage figures at list price."""
    total = Decimal(0)
    for body in server.responses:
        usage = json.loads(body).get("usage")
        if usage:
            total += (
                usage["prompt_tokens"] * INPUT_PER_MTOK
                + usage["completion_tokens"] * OUTPUT_PER_MTOK
            ) / 1_000_000
    return total


async def test_hundreds_of_agents_under_a_small_limit_cause_no_429(
    fake_provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 agents, 250 a minute and 10 at once: aoe paces them, the server never says 429.

    The last 50 wait for the first grants to leave the limiter's window; the run's clock
    skips that wait instead of sitting it out, and the server counts its minute on the
    same clock. Time skips only while no call is between its grant and its answer, so
    each call's real delay on the way stays on the clock: the limiter's window, 60 s plus
    WINDOW_MARGIN_S (1 s), must absorb those delays exactly as against a real provider.
    (Speeding the whole clock up would shrink that 1 s margin below the ~0.1 s the first
    calls take to get out of a busy event loop, and draw 429s no user would see.)
    """
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-pacing")
    handle: RunHandle
    clock = SkipAheadClock(idle=lambda: not any(s.in_flight for s in handle.limiter_stats()))
    fake_provider.latency_s = 0.02
    fake_provider.enforce(requests_per_minute=250, concurrent=10, clock=clock)
    wf = _workflow(
        tmp_path, fake_provider, 300, limits="requests_per_minute: 250, concurrent_requests: 10"
    )
    handle = RunHandle(prepare(RunOptions(files=(wf,))), clock=clock)
    result = await handle.execute()
    assert result.exit_code == 0
    assert fake_provider.limit_429s == 0
    assert fake_provider.calls() == 300
    assert fake_provider.peak_in_flight <= 10
    assert {a.state for a in result.workflows[0].agents.values()} == {AgentState.COMPLETED}


def test_spend_never_passes_the_budget_with_hundreds_in_parallel(
    fake_provider: FakeProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """300 agents at once on a $0.003 budget: the spend stays under it, the run exits 3."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-budget")
    fake_provider.latency_s = 0.05
    wf = _workflow(tmp_path, fake_provider, 300, budget="budget_usd: 0.003\n")
    code = main(["run", str(wf), "--json", "--no-live"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3
    workflow = doc["workflows"][0]
    assert workflow["state"] == "BUDGET_EXCEEDED"
    states = [a["state"] for a in workflow["agents"].values()]
    assert states.count("COMPLETED") == fake_provider.calls()
    assert "BUDGET_EXCEEDED" in states
    assert states.count("COMPLETED") > 100  # reservations are worst cases, settled far lower
    db = sqlite3.connect(tmp_path / "aoe-test.db")
    spent = Decimal(db.execute("select sum(cost_pusd) from calls").fetchone()[0]) / 10**12
    assert spent <= Decimal("0.003")
    assert abs(spent - _server_cost(fake_provider)) < Decimal("0.000000001")


def test_cost_report_totals_match_the_servers_own_count(
    fake_provider: FakeProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every cent is accounted for: the report's total is what the server's usage costs."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-report")
    wf = _workflow(tmp_path, fake_provider, 40)
    assert main(["run", str(wf), "--json", "--no-live"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["cost-report", "--run", run_id, "--by", "agent", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    total = Decimal(str(report["total"]["cost_usd"]))
    assert abs(total - _server_cost(fake_provider)) < Decimal("0.000000001")
    assert sum(Decimal(str(r["cost_usd"])) for r in report["rows"]) == total
    assert report["total"]["calls"] == 40
