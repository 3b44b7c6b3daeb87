"""The Anthropic client against a real loopback server speaking the Messages API."""

from __future__ import annotations

import json

import jsonschema
import pytest

from aoe.providers.anthropic import AnthropicClient
from aoe.providers.base import LLMClient, Message, ToolCall, ToolDefinition, Usage
from aoe.spec.models import ProviderConfig, freeze
from tests.fakeprovider import ANTHROPIC_PATH, FakeProvider, Fault, chat_request

SCHEMA = {
    "type": "object",
    "properties": {
        "decision": {"enum": ["approve", "reject"]},
        "amount": {"type": "number"},
        "due": {"type": "string", "format": "date"},
    },
    "required": ["decision", "amount"],
}
LOOKUP_TOOL = ToolDefinition(
    "lookup_po",
    "Find a purchase order",
    freeze({"type": "object", "properties": {"po": {"type": "string"}}, "required": ["po"]}),
)


def anthropic_request(**overrides):
    return chat_request(model="claude-sonnet-5-5", **overrides)


async def test_complete_sends_a_messages_request_under_the_new_api_version(
    anthropic_client: AnthropicClient, fake_provider: FakeProvider
):
    """Default version 2026-10-21: key and version headers, max_tokens, top-level system, and
    no temperature even when the agent sets one (that version rejects sampling parameters)."""
    completion = await anthropic_client.complete(
        anthropic_request(system="You are terse.", temperature=0.0)
    )
    sent = fake_provider.last()
    assert sent.path == ANTHROPIC_PATH
    assert sent.headers["x-api-key"] == "sk-test-key-0000"
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.body == {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello."}],
        "system": "You are terse.",
    }
    assert completion.text == "Hello from fake claude-sonnet-5-5."
    assert completion.finish_reason == "end_turn"
    assert completion.request_id == "req_fake_1"
    assert completion.rate_limits is not None
    assert completion.rate_limits.remaining_requests == 49
    assert completion.rate_limits.reset_requests_s == pytest.approx(30, abs=2)
    assert completion.usage.input_tokens > 0


def test_client_satisfies_the_llmclient_protocol(anthropic_client: AnthropicClient):
    """The engine can hold an Anthropic client as an LLMClient."""
    assert isinstance(anthropic_client, LLMClient)
    assert anthropic_client.model_info("claude-x").context_window == 200_000


async def test_old_api_version_sends_temperature(fake_provider: FakeProvider):
    """Under 2023-06-01 the agent's temperature is sent as before."""
    config = ProviderConfig(
        "anthropic", "anthropic", "K", fake_provider.base_url, api_version="2023-06-01"
    )
    client = AnthropicClient(config, api_key="sk-x")
    try:
        await client.complete(anthropic_request(temperature=0.3))
        await client.complete(anthropic_request())
    finally:
        await client.aclose()
    first, second = fake_provider.requests
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert first.body["temperature"] == 0.3
    assert "temperature" not in second.body


async def test_structured_output_is_a_forced_tool_whose_input_is_the_answer(
    anthropic_client: AnthropicClient, fake_provider: FakeProvider
):
    """output_schema becomes a forced tool; its input comes back as the completion's JSON text."""
    completion = await anthropic_client.complete(
        anthropic_request(output_schema=freeze(SCHEMA), schema_name="review")
    )
    body = fake_provider.last().body
    assert body["tool_choice"] == {"type": "tool", "name": "review"}
    assert body["tools"] == [
        {
            "name": "review",
            "description": "Give the final answer as this tool's input.",
            "input_schema": SCHEMA,
        }
    ]
    jsonschema.validate(json.loads(completion.text), SCHEMA)
    assert completion.tool_calls == ()
    assert completion.finish_reason == "end_turn"


async def test_usage_buckets_are_summed_into_input_tokens(
    anthropic_client: AnthropicClient, fake_provider: FakeProvider
):
    """Anthropic's disjoint buckets become one total input that includes cache reads/writes."""
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "max_tokens",
        "usage": {
            "input_tokens": 100,
            "output_tokens": 50,
            "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 3000,
        },
    }
    fake_provider.script(Fault.reply(body, headers={"request-id": "req_011"}))
    completion = await anthropic_client.complete(anthropic_request())
    assert completion.usage == Usage(
        input_tokens=5100, output_tokens=50, cache_read_tokens=3000, cache_write_tokens=2000
    )
    assert completion.finish_reason == "max_tokens"
    assert completion.request_id == "req_011"


async def test_tool_use_and_results_use_content_blocks(
    anthropic_client: AnthropicClient, fake_provider: FakeProvider
):
    """Tool calls replay as tool_use blocks; consecutive results share one user turn."""
    calls = (
        ToolCall("toolu_1", "lookup_po", '{"po": "PO-1"}'),
        ToolCall("toolu_2", "lookup_po", '{"po": "PO-2"}'),
    )
    messages = (
        Message("user", "Check both orders."),
        Message("assistant", "Looking them up.", tool_calls=calls),
        Message("tool", "PO-1: open", tool_call_id="toolu_1"),
        Message("tool", "PO-2 not found", tool_call_id="toolu_2", is_error=True),
    )
    completion = await anthropic_client.complete_with_tools(
        anthropic_request(messages=messages, tools=(LOOKUP_TOOL,))
    )
    body = fake_provider.last().body
    assert body["tools"] == [
        {
            "name": "lookup_po",
            "description": "Find a purchase order",
            "input_schema": {
                "type": "object",
                "properties": {"po": {"type": "string"}},
                "required": ["po"],
            },
        }
    ]
    assert body["messages"] == [
        {"role": "user", "content": "Check both orders."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking them up."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup_po", "input": {"po": "PO-1"}},
                {"type": "tool_use", "id": "toolu_2", "name": "lookup_po", "input": {"po": "PO-2"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "PO-1: open"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "PO-2 not found",
                    "is_error": True,
                },
            ],
        },
    ]
    assert completion.tool_calls == ()
    assert completion.text.startswith("Hello")


async def test_tool_call_comes_back_with_json_arguments(
    anthropic_client: AnthropicClient, fake_provider: FakeProvider
):
    """A tool_use block becomes a ToolCall whose arguments are the input as JSON text."""
    completion = await anthropic_client.complete_with_tools(anthropic_request(tools=(LOOKUP_TOOL,)))
    (call,) = completion.tool_calls
    assert call.id.startswith("toolu_")
    assert call.name == "lookup_po"
    assert set(json.loads(call.arguments_json)) == {"po"}
    assert completion.finish_reason == "tool_use"


async def test_tools_with_output_schema_end_with_the_output_tool(
    anthropic_client: AnthropicClient, fake_provider: FakeProvider
):
    """With tools and a schema, some tool must be called; calling the output tool is the answer."""
    first = await anthropic_client.complete_with_tools(
        anthropic_request(tools=(LOOKUP_TOOL,), output_schema=freeze(SCHEMA))
    )
    body = fake_provider.last().body
    assert body["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in body["tools"]] == ["lookup_po", "output"]
    (call,) = first.tool_calls
    messages = (
        Message("user", "Say hello."),
        Message("assistant", "", tool_calls=first.tool_calls),
        Message("tool", "PO found", tool_call_id=call.id),
    )
    final = await anthropic_client.complete_with_tools(
        anthropic_request(messages=messages, tools=(LOOKUP_TOOL,), output_schema=freeze(SCHEMA))
    )
    assert final.tool_calls == ()
    jsonschema.validate(json.loads(final.text), SCHEMA)


async def test_invalid_replayed_arguments_are_kept_not_crashed_on(
    anthropic_client: AnthropicClient, fake_provider: FakeProvider
):
    """A model's invalid JSON arguments replay as a string field instead of breaking the turn."""
    messages = (
        Message("user", "Go."),
        Message("assistant", "", tool_calls=(ToolCall("toolu_9", "lookup_po", "{bad"),)),
        Message("tool", "arguments were not JSON", tool_call_id="toolu_9", is_error=True),
    )
    await anthropic_client.complete_with_tools(
        anthropic_request(messages=messages, tools=(LOOKUP_TOOL,))
    )
    block = fake_provider.last().body["messages"][1]["content"][0]
    assert block["input"] == {"raw_arguments": "{bad"}
