"""The simulator: deterministic, shaped by `simulate:`, schema-valid, and it fails on request."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import jsonschema
import pytest

from aoe.clock import FakeClock
from aoe.errors import (
    BadRequestError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    ServerError,
)
from aoe.providers.base import LLMClient, Message, ToolCall, ToolDefinition
from aoe.providers.schema_example import example_for_schema
from aoe.providers.sim import SimulatorClient, default_latency_s
from aoe.spec.models import SimulatedToolCall, SimulateSpec, freeze
from tests.fakeprovider import chat_request

TOOL = ToolDefinition("lookup", "Look something up", freeze({"type": "object"}))


def sim_client(seed: int = 0) -> tuple[SimulatorClient, FakeClock]:
    clock = FakeClock(autojump=True)
    return SimulatorClient(clock=clock, seed=seed), clock


async def test_same_seed_same_answer_different_seed_different_answer():
    """A simulated run is reproducible: seed, trace and attempt decide every random choice."""
    a, _ = sim_client(seed=1)
    b, _ = sim_client(seed=1)
    c, _ = sim_client(seed=2)
    request = chat_request(trace_id="wf/extract")
    first = await a.complete(request)
    assert first.text == (await b.complete(request)).text
    assert first.text != (await c.complete(request)).text
    assert first.text != (await a.complete(chat_request(trace_id="wf/other"))).text


async def test_default_latency_and_output_size():
    """By default a call takes 50 ms + 1 ms per 10 tokens and says min(max_tokens, 120) tokens."""
    client, clock = sim_client()
    completion = await client.complete(chat_request(max_tokens=1000))
    assert completion.usage.output_tokens == 120
    assert clock.slept == [pytest.approx(0.062)]
    assert clock.now() == pytest.approx(0.062)
    assert 100 <= math.ceil(len(completion.text) / 4) <= 125
    small = await client.complete(chat_request(max_tokens=30))
    assert small.usage.output_tokens == 30
    assert default_latency_s(100_000) == 1.0


async def test_zero_latency_never_touches_the_clock():
    """latency_s: 0 means no sleep at all, so 10,000-agent benchmarks measure only the engine."""
    client, clock = sim_client()
    await client.complete(chat_request(simulate=SimulateSpec(latency_s=0)))
    assert clock.slept == []


async def test_configured_latency_and_tokens_are_used():
    """simulate: {latency_s, output_tokens} shapes the call exactly."""
    client, clock = sim_client()
    completion = await client.complete(
        chat_request(max_tokens=1000, simulate=SimulateSpec(latency_s=2.5, output_tokens=400))
    )
    assert clock.slept == [2.5]
    assert completion.usage.output_tokens == 400
    assert completion.latency_s == 2.5


async def test_input_tokens_are_estimated_from_characters():
    """Input tokens are ceil(chars / 4) over the system prompt and all messages."""
    client, _ = sim_client()
    request = chat_request("x" * 10, system="y" * 7)
    completion = await client.complete(request)
    assert completion.usage.input_tokens == math.ceil(17 / 4)


@pytest.mark.parametrize(
    ("fail_with", "error", "status"),
    [
        ("server_error", ServerError, 503),
        ("rate_limit", RateLimitedError, 429),
        ("timeout", ProviderTimeout, None),
        ("bad_request", BadRequestError, 400),
    ],
)
async def test_first_attempts_fail_as_configured(
    fail_with: Any, error: type[ProviderError], status: int | None
):
    """fail_times N makes attempts 1..N fail with fail_with; attempt N+1 succeeds."""
    client, _ = sim_client()
    spec = SimulateSpec(fail_times=2, fail_with=fail_with)
    for attempt in (1, 2):
        with pytest.raises(error) as info:
            await client.complete(chat_request(simulate=spec, attempt=attempt))
        assert info.value.status == status
        assert info.value.provider == "sim"
    completion = await client.complete(chat_request(simulate=spec, attempt=3))
    assert completion.text


async def test_simulated_rate_limit_and_timeout_carry_their_details():
    """A simulated 429 asks to wait 1 s; a simulated timeout may have been billed."""
    client, _ = sim_client()
    with pytest.raises(RateLimitedError) as limited:
        await client.complete(
            chat_request(simulate=SimulateSpec(fail_times=1, fail_with="rate_limit"))
        )
    assert limited.value.retry_after_s == 1.0
    assert limited.value.retriable
    with pytest.raises(ProviderTimeout) as timed_out:
        await client.complete(
            chat_request(simulate=SimulateSpec(fail_times=1, fail_with="timeout"))
        )
    assert timed_out.value.outcome_unknown is True


async def test_invalid_output_is_invalid_then_valid():
    """fail_with invalid_output returns an answer that fails the schema, then a valid one."""
    schema = freeze({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    client, _ = sim_client()
    spec = SimulateSpec(fail_times=1, fail_with="invalid_output")
    bad = await client.complete(chat_request(simulate=spec, output_schema=schema, attempt=1))
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        jsonschema.validate(json.loads(bad.text), {"type": "object", "required": ["n"]})
    good = await client.complete(chat_request(simulate=spec, output_schema=schema, attempt=2))
    assert isinstance(json.loads(good.text)["n"], int)


async def test_fixed_output_is_returned_verbatim():
    """simulate.output gives a fixed answer; a mapping comes back as JSON."""
    client, _ = sim_client()
    text = await client.complete(chat_request(simulate=SimulateSpec(output="APPROVED")))
    assert text.text == "APPROVED"
    data = await client.complete(
        chat_request(simulate=SimulateSpec(output=freeze({"ok": True, "ids": [1, 2]})))
    )
    assert json.loads(data.text) == {"ok": True, "ids": [1, 2]}


async def test_scripted_tool_calls_follow_the_turns():
    """Turn k returns the tool calls scripted for turn k; after the last, the final answer."""
    spec = SimulateSpec(
        tool_calls=(
            SimulatedToolCall("lookup", freeze({"q": "PO-1"}), turn=1),
            SimulatedToolCall("lookup", freeze({"q": "PO-2"}), turn=1),
            SimulatedToolCall("lookup", freeze({"q": "vendor"}), turn=2),
        ),
        output="done",
    )
    client, _ = sim_client()
    messages: tuple[Message, ...] = (Message("user", "go"),)
    first = await client.complete_with_tools(
        chat_request(messages=messages, simulate=spec, tools=(TOOL,))
    )
    assert first.finish_reason == "tool_calls"
    assert [json.loads(c.arguments_json) for c in first.tool_calls] == [
        {"q": "PO-1"},
        {"q": "PO-2"},
    ]
    assert len({c.id for c in first.tool_calls}) == 2
    messages += (Message("assistant", "", tool_calls=first.tool_calls),)
    messages += tuple(Message("tool", "ok", tool_call_id=c.id) for c in first.tool_calls)
    second = await client.complete_with_tools(
        chat_request(messages=messages, simulate=spec, tools=(TOOL,))
    )
    assert [c.name for c in second.tool_calls] == ["lookup"]
    messages += (Message("assistant", "", tool_calls=second.tool_calls),)
    messages += (Message("tool", "ok", tool_call_id=second.tool_calls[0].id),)
    final = await client.complete_with_tools(
        chat_request(messages=messages, simulate=spec, tools=(TOOL,))
    )
    assert final.tool_calls == ()
    assert final.text == "done"
    plain = await client.complete(chat_request(simulate=spec, tools=(TOOL,)))
    assert plain.tool_calls == ()  # complete() never calls tools


async def test_tool_call_arguments_count_as_input():
    """Tool-call turns in the history add to the input token estimate."""
    client, _ = sim_client()
    history = (Message("assistant", "", tool_calls=(ToolCall("c", "lookup", "x" * 40),)),)
    completion = await client.complete(chat_request(messages=history))
    assert completion.usage.input_tokens == math.ceil((len("lookup") + 40) / 4)


def test_model_info_and_protocol():
    """The simulator is an LLMClient whose expected latency matches its defaults."""
    client, _ = sim_client()
    assert isinstance(client, LLMClient)
    assert client.model_info("gpt-4o").expected_latency_s == default_latency_s(120)


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "invoice_date": {"type": "string", "format": "date"},
            "posted_at": {"type": "string", "format": "date-time"},
            "status": {"enum": ["open", "paid", "void"]},
            "currency": {"const": "EUR"},
            "total": {"type": "number", "minimum": 10, "maximum": 20},
            "count": {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 8},
            "flag": {"type": "boolean"},
            "nothing": {"type": "null"},
            "code": {"type": "string", "minLength": 12, "maxLength": 14},
            "maybe": {"type": ["string", "null"]},
        },
        "required": ["invoice_date", "status", "total", "count"],
    },
    {
        "type": "object",
        "properties": {
            "lines": {
                "type": "array",
                "minItems": 2,
                "maxItems": 4,
                "items": {"$ref": "#/$defs/line"},
            }
        },
        "required": ["lines"],
        "$defs": {
            "line": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
                "additionalProperties": False,
            }
        },
    },
    {"oneOf": [{"type": "integer", "multipleOf": 5, "minimum": 3}, {"type": "string"}]},
    {"anyOf": [{"type": "array", "items": {"type": "boolean"}, "maxItems": 0}]},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
    {"type": "array", "uniqueItems": True, "items": {"enum": [1, 2, 3]}, "minItems": 3},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2},
    {
        "type": "object",
        "properties": {"node": {"$ref": "#/definitions/tree"}},
        "definitions": {
            "tree": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/definitions/tree"}}
                },
            }
        },
    },
    {"type": "string", "format": "uuid"},
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
@pytest.mark.parametrize("seed", range(5))
def test_generated_examples_are_valid_against_their_schema(schema: dict[str, Any], seed: int):
    """Simulated structured output always passes the agent's own schema validation."""
    value = example_for_schema(schema, random.Random(seed))
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())


async def test_structured_output_is_schema_valid_json():
    """With output_schema the simulator answers JSON valid against it."""
    client, _ = sim_client()
    for trace in ("a", "b", "c"):
        completion = await client.complete(
            chat_request(output_schema=freeze(SCHEMAS[2]), trace_id=trace)
        )
        jsonschema.validate(json.loads(completion.text), SCHEMAS[2])


async def test_output_never_exceeds_max_tokens() -> None:
    """Asked for more than max_tokens, the simulator stops there, as a real model does."""
    from aoe.spec.models import SimulateSpec

    client = SimulatorClient(clock=FakeClock(autojump=True))
    request = chat_request(max_tokens=100, simulate=SimulateSpec(latency_s=0, output_tokens=20_000))
    completion = await client.complete(request)
    assert completion.usage.output_tokens == 100
    assert completion.finish_reason == "length"
