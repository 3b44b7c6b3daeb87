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
