"""The plain, line-based progress that CI logs show (``--no-live``)."""

from __future__ import annotations

import datetime as dt
import io

from aoe.monitor.events import AgentStarted, Envelope, Event, ToolCalled
from aoe.ui.plain import PlainProgress

AT = 1_790_000_000.0
STAMP = dt.datetime.fromtimestamp(AT).strftime("%H:%M:%S")


def _lines(*events: Event) -> list[str]:
    out = io.StringIO()
    progress = PlainProgress(out)
    for event in events:
        progress.handle(event)
    return out.getvalue().splitlines()


ATTEMPT = Envelope("r1", "invoice", "check_vendor", 1)


def _tool(**changes: object) -> ToolCalled:
    fields: dict[str, object] = {
        "turn": 1,
        "tool": "lookup_vendor",
        "ok": True,
        "duration_s": 0.0123,
        "result_chars": 123,
    }
    fields.update(changes)
    return ToolCalled(ATTEMPT, AT, **fields)  # type: ignore[arg-type]


def test_each_tool_call_gets_one_line_with_outcome_time_and_size() -> None:
    """A CI log shows every tool call an agent made, whether it worked, how long, how big."""
    assert _lines(_tool()) == [
        f"{STAMP} invoice/check_vendor: tool lookup_vendor ok in 0.01s (123 chars)"
    ]


def test_a_failed_tool_call_says_error() -> None:
    """A tool that raised or timed out is marked as an error, not ok."""
    lines = _lines(_tool(ok=False, tool="lookup_goods_receipts", duration_s=10.0, result_chars=31))
    assert lines == [
        f"{STAMP} invoice/check_vendor: tool lookup_goods_receipts error in 10.00s (31 chars)"
    ]


def test_a_truncated_result_says_so() -> None:
    """A result cut to the size limit is flagged, so a short answer is not misread."""
    (line,) = _lines(_tool(result_chars=16_000, truncated=True))
    assert line.endswith("tool lookup_vendor ok in 0.01s (16000 chars, truncated)")


def test_tool_lines_come_in_event_order_with_the_agent_lines() -> None:
    """Tool calls appear between the agent's other lines, in the order they happened."""
    started = AgentStarted(ATTEMPT, AT, model="sim/fast")
    lines = _lines(started, _tool(tool="a"), _tool(tool="b", ok=False))
    assert [line.split(": ", 1)[1] for line in lines] == [
        "RUNNING (sim/fast)",
        "tool a ok in 0.01s (123 chars)",
        "tool b error in 0.01s (123 chars)",
    ]


def test_every_provider_429_gets_a_line_saying_what_it_limited() -> None:
    """A CI log shows each 429: which provider and model, what it was about, the wait asked;
    a short wait for capacity stays quiet, a long one is a line of its own."""
    from aoe.monitor.events import RateLimitHit

    hit = RateLimitHit(
        ATTEMPT,
        AT,
        limiter="openai",
        waited_s=0.0,
        provider_429=True,
        provider="openai",
        model="openai/gpt-4o-mini",
        limited="concurrency",
        retry_after_s=1.0,
    )
    quota = RateLimitHit(
        ATTEMPT, AT, limiter="openai", waited_s=0.0, provider_429=True, limited="quota"
    )
    short = RateLimitHit(ATTEMPT, AT, limiter="openai", waited_s=0.2)
    long = RateLimitHit(ATTEMPT, AT, limiter="openai", waited_s=2.0)
    assert _lines(hit, quota, short, long) == [
        f"{STAMP} invoice/check_vendor: 429 from openai for openai/gpt-4o-mini "
        "(concurrency, retry after 1.0s)",
        f"{STAMP} invoice/check_vendor: 429 from openai for ? (quota)",
        f"{STAMP} invoice/check_vendor: waited 2.0s for rate limit openai",
    ]


def _big_run(agents: int) -> list[Event]:
    """A workflow of ``agents`` agents, one starting and finishing every 0.1 s of run time;
    agent 7 fails, agent 8 is retried first."""
    from decimal import Decimal

    from aoe.monitor.events import (
        AgentFinished,
        AgentRetrying,
        RunFinished,
        WorkflowFinished,
        WorkflowStarted,
    )

    wf = Envelope("r1", "big")
    events: list[Event] = [WorkflowStarted(wf, AT, name="big", agents_total=agents)]
    for i in range(agents):
        at = AT + i * 0.1
        agent = wf.of_agent(f"a{i}")
        events.append(AgentStarted(agent.of_attempt(1), at, model="sim/fast"))
        if i == 8:
            events.append(AgentRetrying(agent.of_attempt(1), at, error="HTTP 503", delay_s=0.0))
        state = "FAILED" if i == 7 else "COMPLETED"
        error = "HTTP 500" if i == 7 else None
        events.append(
            AgentFinished(
                agent,
                at + 0.05,
                state=state,
                attempts=1,
                duration_s=0.05,
                cost_usd=Decimal("0.001"),
                error=error,
            )
        )
    end = AT + agents * 0.1
    events.append(
        WorkflowFinished(
            wf,
            end,
            state="FAILED",
            duration_s=end - AT,
            cost_usd=Decimal("0.001") * agents,
            counts=(("COMPLETED", agents - 1), ("FAILED", 1)),
        )
    )
    events.append(
        RunFinished(
            Envelope("r1"),
            end,
            state="FAILED",
            exit_code=1,
            cost_usd=Decimal("0.001") * agents,
            duration_s=end - AT,
        )
    )
    return events


def test_a_small_run_still_gets_a_line_per_agent() -> None:
    """Up to the threshold nothing changes: every agent starts and finishes on a line."""
    lines = _lines(*_big_run(20))
    assert sum(": RUNNING" in line for line in lines) == 20
    assert sum(": COMPLETED" in line for line in lines) == 19
    assert not any("agents done" in line for line in lines)


def test_a_large_run_prints_a_summary_per_second_and_every_failure_at_once() -> None:
    """Past the threshold: at most one summary per second of run time instead of a line per
    agent, and the failure and the retry still print when they happen, in order."""
    from aoe.ui.plain import SUMMARY_ABOVE_AGENTS

    agents = SUMMARY_ABOVE_AGENTS + 50  # 25 s of run time at one agent per 0.1 s
    out = io.StringIO()
    progress = PlainProgress(out)
    for event in _big_run(agents):
        progress.handle(event)
    lines = out.getvalue().splitlines()
    assert progress.summarising
    assert not any(": RUNNING" in line or ": COMPLETED" in line for line in lines)
    summaries = [line for line in lines if "agents done" in line]
    assert agents * 0.1 - 2 <= len(summaries) <= agents * 0.1 + 1
    failed = next(i for i, line in enumerate(lines) if "big/a7: FAILED" in line)
    retry = next(i for i, line in enumerate(lines) if "big/a8: RETRY" in line)
    assert failed < retry < lines.index(summaries[1])  # at once, not at the next summary
    assert lines[-2].split(" ", 1)[1].startswith("big: FAILED")
    assert lines[-1].endswith(  # the run's end: where it stood, however recent the last
        f"{agents} of {agents} agents done ({agents - 1} completed, 1 failed), 0 running, $0.2500"
    )


def test_summaries_follow_the_run_clock_not_the_number_of_events() -> None:
    """A thousand events in one second of run time give no summary; the next second, one."""
    from decimal import Decimal

    from aoe.monitor.events import AgentFinished, WorkflowStarted

    out = io.StringIO()
    progress = PlainProgress(out, summary_above=10, summary_every_s=1.0)
    wf = Envelope("r1", "big")
    progress.handle(WorkflowStarted(wf, AT, name="big", agents_total=1000))
    for i in range(1000):
        progress.handle(
            AgentFinished(
                wf.of_agent(f"a{i}"),
                AT + i / 1001,
                state="COMPLETED",
                attempts=1,
                duration_s=0.0,
                cost_usd=Decimal(0),
            )
        )
    assert "agents done" not in out.getvalue()
    progress.handle(AgentStarted(wf.of_agent("z").of_attempt(1), AT + 1.0, model="sim/fast"))
    (summary,) = [line for line in out.getvalue().splitlines() if "agents done" in line]
    assert summary.endswith("1000 of 1000 agents done (1000 completed), 1 running, $0.0000")
