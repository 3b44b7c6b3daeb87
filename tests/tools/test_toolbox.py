"""The toolbox: every failure of a tool is an error result the model reads, never a crash."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aoe.providers.base import ToolDefinition
from aoe.tools import (
    BoundTool,
    Toolbox,
    ToolFailed,
    ToolOutput,
    ToolResult,
    result_message,
    tool_log,
)
from tests.tools.specs import call

VENDOR_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}},
}


class Recorder:
    """A tool runner that records its arguments and answers with them."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.seen: list[dict[str, Any]] = []
        self.delay_s = delay_s
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, arguments: dict[str, Any]) -> ToolOutput:
        self.seen.append(arguments)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return ToolOutput(f"vendor {arguments.get('name')} found")


def bound(name: str, runner: Any, *, schema: dict[str, Any] | None = None,
          timeout_s: float = 5.0) -> BoundTool:
    return BoundTool(ToolDefinition(name, f"the {name} tool", schema or VENDOR_SCHEMA), runner,
                     timeout_s)


async def test_a_valid_call_runs_the_tool_with_its_arguments() -> None:
    """Arguments that fit the schema reach the tool; its text is the result."""
    tool = Recorder()
    box = Toolbox([bound("lookup_vendor", tool)])
    result = await box.run(call("lookup_vendor", {"name": "ACME"}))
    assert result == ToolResult("vendor ACME found", False, False, result.duration_s)
    assert tool.seen == [{"name": "ACME"}]
    assert [d.name for d in box.definitions()] == ["lookup_vendor"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"name": 42}, "at name: 42 is not of type 'string'"),
        ({}, "'name' is a required property"),
        ({"name": "ACME", "city": "Detroit"}, "Additional properties are not allowed"),
        ('{"name": "ACME"', "not JSON"),
        ('["ACME"]', "expected a JSON object, got list"),
    ],
)
async def test_arguments_that_break_the_schema_are_an_error_result(
    arguments: Any, expected: str
) -> None:
    """Bad arguments go back to the model as an error it can correct; the tool never runs."""
    tool = Recorder()
    result = await Toolbox([bound("lookup_vendor", tool)]).run(call("lookup_vendor", arguments))
    assert result.is_error
    assert result.content.startswith("error: invalid arguments for lookup_vendor: ")
    assert expected in result.content
    assert tool.seen == []


async def test_an_unknown_tool_is_an_error_result_naming_the_real_ones() -> None:
    """A made-up tool name is answered with the tools that exist."""
    result = await Toolbox([bound("lookup_vendor", Recorder())]).run(call("lookup_vendr", {}))
    assert result.is_error
    assert "no tool named 'lookup_vendr'" in result.content
    assert "lookup_vendor" in result.content


async def test_a_tool_that_raises_is_an_error_result_with_the_exception() -> None:
    """An exception in the tool is reported with its type and message, not raised."""

    async def broken(arguments: dict[str, Any]) -> ToolOutput:
        raise KeyError("V-10042")

    async def failing(arguments: dict[str, Any]) -> ToolOutput:
        raise ToolFailed("vendor master is offline")

    box = Toolbox([bound("a", broken, schema={"type": "object"}),
                   bound("b", failing, schema={"type": "object"})])
    raised = await box.run(call("a"))
    assert raised.is_error
    assert raised.content == "error: a raised KeyError: 'V-10042'"
    reported = await box.run(call("b"))
    assert reported.content == "error: vendor master is offline"


async def test_a_tool_that_times_out_is_an_error_result_in_time() -> None:
    """A tool slower than its timeout_s is abandoned with a clear message."""
    started = time.perf_counter()
    box = Toolbox([bound("slow", Recorder(delay_s=5), timeout_s=0.1)])
    result = await box.run(call("slow", {"name": "x"}))
    assert time.perf_counter() - started < 2
    assert result.is_error
    assert result.content == "error: slow did not finish within timeout_s=0.1"


async def test_several_calls_of_one_turn_really_run_at_the_same_time() -> None:
    """Three calls asked for at once overlap, and results keep the order of the calls."""
    tool = Recorder(delay_s=0.2)
    box = Toolbox([bound("lookup_vendor", tool)])
    started = time.perf_counter()
    results = await box.run_all([call("lookup_vendor", {"name": n}, f"c{n}") for n in "ABC"])
    assert tool.peak == 3
    assert time.perf_counter() - started < 0.5
    assert [r.content for r in results] == ["vendor A found", "vendor B found", "vendor C found"]


async def test_a_long_result_is_cut_and_says_so() -> None:
    """A result over the size limit is truncated, and the model is told the limit."""

    async def chatty(arguments: dict[str, Any]) -> ToolOutput:
        return ToolOutput("x" * 500)

    box = Toolbox([bound("chatty", chatty, schema={"type": "object"})], max_result_chars=100)
    result = await box.run(call("chatty"))
    assert result.truncated
    assert result.content == "x" * 100 + "\n[truncated to 100 characters]"


async def test_cancellation_is_not_swallowed() -> None:
    """Cancelling the agent cancels its running tools instead of turning into a result."""
    box = Toolbox([bound("slow", Recorder(delay_s=5))])
    task = asyncio.create_task(box.run(call("slow", {"name": "x"})))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_results_become_tool_messages_and_a_truncated_ledger_log() -> None:
    """Each result answers its call by id; the ledger keeps arguments and results cut short."""
    calls = [call("lookup_vendor", {"name": "A" * 5000}, "c1"), call("lookup_vendor", {}, "c2")]
    results = [ToolResult("ok", False, False, 0.5), ToolResult("error: nope", True)]
    message = result_message(calls[1], results[1])
    assert (message.role, message.tool_call_id, message.is_error) == ("tool", "c2", True)
    log = tool_log(calls, results)
    assert log[0]["name"] == "lookup_vendor"
    assert len(log[0]["arguments"]) < 2100
    assert log[0]["arguments"].endswith("[truncated to 2000 characters]")
    assert (log[0]["ok"], log[0]["result"], log[0]["duration_s"]) == (True, "ok", 0.5)
    assert (log[1]["ok"], log[1]["result"]) == (False, "error: nope")
    unrun = tool_log(calls[:1], [], not_run="not run: max_turns=2 reached")
    assert unrun[0]["ok"] is False
    assert unrun[0]["result"] == "not run: max_turns=2 reached"
