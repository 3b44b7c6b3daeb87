"""Limits learned from the provider, against the loopback server that enforces its own.

Configured at ten times what the server allows, aoe learns the real limits from its
headers and 429s; two aoe processes share one key; a gateway's per-model headers and
headers without a reset time; a Retry-After past the retry cap; requests that never left
and answers cut at max_tokens cost nothing more.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from aoe.app.prepare import RunOptions, prepare
from aoe.app.run import RunHandle
from aoe.engine.results import AgentState
from tests.fakeprovider import FakeProvider, Fault, fake_provider
from tests.integration.test_limits_budgets import SkipAheadClock as _SkipAheadClock

__all__ = ["fake_provider"]


class SkipAheadClock(_SkipAheadClock):
    """``test_limits_budgets.SkipAheadClock``, settled: a sleeper skips ahead only if the
    run is still idle after ``SETTLE_ROUNDS`` turns of the event loop. A skip wakes a waiter
    (a limiter's alarm), which takes a few turns to grant its call and send it; without the
    pause, a later sleeper could see "nothing in flight" in between and skip past a call
    that was about to leave, which no real clock would do. For the same reason these runs
    keep no ledger: an agent starting waits on the ledger's writer thread, which no limiter
    sees as in flight.
    """

    SETTLE_ROUNDS = 50

    async def sleep(self, seconds: float) -> None:
        deadline = self.now() + max(0.0, seconds)
        self._deadlines.append(deadline)
        try:
            while (left := deadline - self.now()) > 0:
                if deadline == min(self._deadlines) and self.idle():
                    for _ in range(self.SETTLE_ROUNDS):
                        await asyncio.sleep(0)
                    left = deadline - self.now()
                    if deadline == min(self._deadlines) and self.idle() and left > 0:
                        self.skipped_s += left
                        return
                    continue
                await asyncio.sleep(min(left, 0.001))
        finally:
            self._deadlines.remove(deadline)


def _write(
    tmp: Path,
    base_url: str,
    count: int,
    *,
    limits: str = "",
    retry: str = "{max_retries: 5, strategy: exponential, base_delay_s: 1, max_delay_s: 8}",
    models: tuple[str, ...] = ("gpt-4o-mini",),
    extra: str = "",
) -> Path:
    """aoe.yaml for the server's key (provider ``gw``), and ``count`` independent agents."""
    (tmp / "aoe.yaml").write_text(
        "providers:\n"
        f"  gw: {{type: openai, api_key_env: OPENAI_API_KEY, base_url: '{base_url}'"
        + (f", limits: {{{limits}}}" if limits else "")
        + "}\n"
        "pricing:\n"
        + "".join(f"  gw/{m}: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}\n" for m in models)
    )
    agents = "".join(
        f"  a{i:03d}:\n    model: gw/{models[i % len(models)]}\n    prompt: 'Check invoice {i}'\n"
        for i in range(count)
    )
    path = tmp / "wf.yaml"
    path.write_text(
        "version: 1\nname: many\nallow_partial_completion: true\nmax_failure_rate: 1\n"
        + extra
        + f"defaults:\n  max_tokens: 100\n  timeout_s: 30\n  retry: {retry}\n"
        "agents:\n" + agents
    )
    return path


def _states(result: object) -> list[AgentState]:
    return [a.state for a in result.workflows[0].agents.values()]  # type: ignore[attr-defined]


async def test_configured_at_ten_times_the_real_limits_aoe_learns_them(
    fake_provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured at 600 requests a minute and 50 at once against a server that allows 60
    and 5 (and says so in its headers and 429s): all 150 agents complete, and after the
    first 20 s under 5 % of requests are 429s.

    The run's minutes pass on a clock that skips ahead while nothing is in flight (see
    ``SkipAheadClock``), so 2.5 minutes of pacing take seconds; the server counts its
    minute on the same clock.
    """
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-learn")
    handle: RunHandle
    clock = SkipAheadClock(idle=lambda: not any(s.in_flight for s in handle.limiter_stats()))
    fake_provider.latency_s = 0.02
    fake_provider.enforce(
        requests_per_minute=60, concurrent=5, clock=clock, headers=True, say_which=True
    )
    limits = "requests_per_minute: 600, concurrent_requests: 50"
    wf = _write(tmp_path, fake_provider.openai_base_url, 150, limits=limits)
    handle = RunHandle(prepare(RunOptions(files=(wf,), use_ledger=False)), clock=clock)
    start = clock.now()
    result = await handle.execute()
    late = [refused for at, refused in fake_provider.limit_log if at - start > 20]
    print(
        f"\n10x: {fake_provider.limit_429s} 429s of {len(fake_provider.limit_log)} requests; "
        f"after 20 s {sum(late)} of {len(late)}; {clock.now() - start:.0f} s on the clock"
    )
    assert _states(result).count(AgentState.COMPLETED) == 150
    assert len(late) > 60  # the run went well past its first 20 s
    assert sum(late) < 0.05 * len(late)


async def test_a_concurrency_limit_ten_times_lower_than_configured_is_learned(
    fake_provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that allows 4 calls at once, configured at 40, whose 429s say so: after
    the first 50 requests (the first burst of 40 and the next) under 5 % are refused, and
    all 300 agents complete."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-learn")
    fake_provider.latency_s = 0.03
    fake_provider.enforce(concurrent=4, say_which=True, retry_after=None)
    wf = _write(
        tmp_path,
        fake_provider.openai_base_url,
        300,
        limits="concurrent_requests: 40",
        retry="{max_retries: 8, strategy: constant, base_delay_s: 0.05, jitter: false}",
    )
    handle = RunHandle(prepare(RunOptions(files=(wf,))))
    result = await handle.execute()
    refused = [r for _, r in fake_provider.limit_log]
    print(f"\nconcurrency 10x: {sum(refused)} 429s of {len(refused)}, {sum(refused[50:])} after 50")
    assert _states(result).count(AgentState.COMPLETED) == 300
    assert sum(refused[50:]) < 0.05 * len(refused[50:])
    assert handle.limiter_stats()[0].learned_concurrency is not None


def test_two_processes_on_one_key_at_its_exact_limits_rarely_see_a_429(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    """Two aoe processes share one key, each configured at its exact limits (4 at once,
    3000 a minute): together they would send twice what it allows, yet under 2 % of all
    requests are 429s and every agent of both completes.

    The limit that binds is the concurrency, which holds at every instant, so the test
    needs seconds, not minutes: 2 x 500 calls of 30 ms through 4 slots. The per-minute
    limit is configured and enforced exactly too, but 1000 calls never reach it (sharing a
    minute's budget across processes is for the shared, Redis-backed limiter). Most of the
    429s are the first contact: both start at 4, so the first burst is twice the limit.
    """
    fake_provider.latency_s = 0.03
    fake_provider.enforce(
        requests_per_minute=3000, concurrent=4, headers=True, say_which=True, retry_after=None
    )
    procs = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        wf = _write(
            folder,
            fake_provider.openai_base_url,
            500,
            limits="requests_per_minute: 3000, concurrent_requests: 4",
            retry="{max_retries: 8, strategy: constant, base_delay_s: 0.05, jitter: false}",
        )
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-test-two",
            "AOE_DB": str(folder / "aoe.db"),
            "CI": "true",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "aoe", "run", str(wf), "--json", "--no-live"],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        )
    docs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        docs.append(json.loads(out))
    refused = [r for _, r in fake_provider.limit_log]
    print(f"\ntwo processes: {sum(refused)} 429s of {len(refused)} requests")
    for doc in docs:
        states = [a["state"] for a in doc["workflows"][0]["agents"].values()]
        assert states.count("COMPLETED") == 500
    assert sum(refused) < 0.02 * len(refused)


async def test_a_gateways_reading_for_one_model_never_holds_another(
    fake_provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LiteLLM-style gateway reports each model's own limits (model a: 3 a minute, 1 left,
    no reset time). After that reading, the five calls to model b go at once; model a is
    not held for a guessed minute, but to its own 3 a minute: the 4th call waits."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-gateway")
    fake_provider.headers_for_model(
        "a", {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "1"}
    )
    handle: RunHandle
    clock = SkipAheadClock(idle=lambda: not any(s.in_flight for s in handle.limiter_stats()))
    wf = _write(tmp_path, fake_provider.openai_base_url, 1, models=("a",))
    later = [("a", i) for i in range(1, 5)] + [("b", i) for i in range(5, 10)]
    wf.write_text(
        wf.read_text()
        + "".join(
            f"  {m}{i}:\n    model: gw/{m}\n    prompt: 'Check {i}'\n    needs: [a000]\n"
            for m, i in later
        )
    )
    config = tmp_path / "aoe.yaml"
    config.write_text(config.read_text() + "  gw/b: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n")
    handle = RunHandle(prepare(RunOptions(files=(wf,), use_ledger=False)), clock=clock)
    start = clock.wall()
    result = await handle.execute()
    agents = result.workflows[0].agents
    assert {a.state for a in agents.values()} == {AgentState.COMPLETED}
    ended = {agent_id: agent.ended_at - start for agent_id, agent in agents.items()}
    model_b = [t for agent_id, t in ended.items() if agent_id.startswith("b")]
    model_a = sorted(t for agent_id, t in ended.items() if agent_id.startswith("a"))
    assert max(model_b) < 5  # never held by model a's reading
    assert model_a[3] < 5  # a000, then 3 at once: nothing held for a guessed minute
    assert model_a[4] > 55  # the 4th after the reading waits for a's own minute
    learned = {s.name: [(t.name, t.limit) for t in s.tiers] for s in handle.limiter_stats()}
    assert learned["gw/a (headers)"] == [("requests_per_minute (learned)", 3)]
    assert learned["gw"] == []  # the key itself holds nothing from either model's headers


async def test_headers_without_a_reset_time_hold_nothing_for_a_guessed_minute(
    fake_provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that says "0 left" of the configured 100 a minute but not when it refills:
    the agents that follow are not held for a guessed minute, they all finish at once."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-no-reset")
    fake_provider.headers_for_model(
        "gpt-4o-mini", {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "0"}
    )
    handle: RunHandle
    clock = SkipAheadClock(idle=lambda: not any(s.in_flight for s in handle.limiter_stats()))
    wf = _write(tmp_path, fake_provider.openai_base_url, 1, limits="requests_per_minute: 100")
    wf.write_text(
        wf.read_text()
        + "".join(f"  next{i}:\n    prompt: 'Check {i}'\n    needs: [a000]\n" for i in range(4))
    )
    wf.write_text(wf.read_text().replace("defaults:\n", "defaults:\n  model: gw/gpt-4o-mini\n"))
    handle = RunHandle(prepare(RunOptions(files=(wf,), use_ledger=False)), clock=clock)
    start = clock.now()
    result = await handle.execute()
    assert set(_states(result)) == {AgentState.COMPLETED}
    assert clock.now() - start < 5
    assert fake_provider.calls() == 5


def test_a_retry_after_of_300_s_ends_the_waiting_agents_at_once(
    fake_provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One 429 with Retry-After 300 (as an HTTP date too): the agent that got it and every
    agent waiting on the key end RATE_LIMITED in well under a second, each saying when the
    key opens again; no call is made after it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-closed")
    in_300_s = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    for retry_after in ("300", in_300_s):
        folder = tmp_path / str(len(retry_after))
        folder.mkdir()
        server = FakeProvider(latency_s=0.05)
        server.start()
        try:
            server.script(Fault.rate_limit(retry_after=retry_after))
            wf = _write(folder, server.openai_base_url, 12, limits="concurrent_requests: 1")
            started = time.monotonic()
            result = asyncio.run(RunHandle(prepare(RunOptions(files=(wf,)))).execute())
            took = time.monotonic() - started
        finally:
            server.stop()
        agents = result.workflows[0].agents.values()
        assert {a.state for a in agents} == {AgentState.RATE_LIMITED}
        assert all("opens again at" in (a.error or "") for a in agents)
        assert server.calls() == 1
        assert took < 1.0, took


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "base_url",
    [f"http://127.0.0.1:{_closed_port()}/v1", "http:///v1", "http://127.0.0.1:99999/v1"],
    ids=["connection-refused", "bad-url", "bad-port"],
)
def test_a_request_that_never_left_costs_nothing(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused, or a base_url no client can call: the reservation comes back,
    nothing is unconfirmed spend, and the ledger records the calls at no cost."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never")
    wf = _write(
        tmp_path,
        base_url,
        4,
        retry="{max_retries: 1, strategy: immediate}",
        extra="budget_usd: 1\n",
    )
    handle = RunHandle(prepare(RunOptions(files=(wf,))))
    result = asyncio.run(handle.execute())
    assert set(_states(result)) == {AgentState.FAILED}
    for state in handle.budget_states():
        assert (state.reserved_usd, state.spent_usd, state.unconfirmed_usd) == (0, 0, 0)
    db = sqlite3.connect(tmp_path / "aoe-test.db")
    calls, cost = db.execute("select count(*), sum(cost_pusd) from calls").fetchone()
    assert calls >= 4
    assert cost == 0
    assert result.cost_usd == 0


def test_an_answer_cut_at_max_tokens_is_not_paid_for_again(
    fake_provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer cut at max_tokens (finish_reason length) for an agent with output_schema:
    one call, not retried with the same max_tokens, failed with the hint to raise it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cut")
    cut = {
        "id": "chatcmpl-cut",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": '{"vendor": "ACME Sup'},
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 100, "total_tokens": 120},
    }
    fake_provider.script(Fault.reply(cut))
    wf = _write(tmp_path, fake_provider.openai_base_url, 0, retry="{max_retries: 3}")
    wf.write_text(
        wf.read_text() + "  extract:\n    model: gw/gpt-4o-mini\n    prompt: Extract the vendor.\n"
        "    output_schema: {type: object, required: [vendor],"
        " properties: {vendor: {type: string}}}\n"
    )
    result = asyncio.run(RunHandle(prepare(RunOptions(files=(wf,)))).execute())
    (extract,) = result.workflows[0].agents.values()
    assert extract.state is AgentState.FAILED
    assert len(extract.attempts) == 1
    assert extract.attempts[0].error_type == "OutputTruncatedError"
    assert "raise max_tokens" in (extract.error or "")
    assert fake_provider.calls() == 1
