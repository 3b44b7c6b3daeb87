"""The OpenAI client against a real loopback server speaking Chat Completions."""

from __future__ import annotations

import asyncio
import json
import logging
import resource

import jsonschema
import pytest

from aoe.providers.base import LLMClient, Message, ToolCall, ToolDefinition, Usage
from aoe.providers.openai import OpenAIClient, strict_compatible
from aoe.spec.models import ProviderConfig, freeze
from tests.fakeprovider import OPENAI_PATH, FakeProvider, Fault, chat_request

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "supplier": {"type": "string"},
        "total": {"type": "number", "minimum": 0},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["supplier", "total", "lines"],
    "additionalProperties": False,
}
WEATHER_TOOL = ToolDefinition(
    "get_weather",
    "Weather for a city",
    freeze({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
)


async def test_complete_sends_chat_completion_and_reads_the_answer(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """A plain call sends model, system+user messages, the key and max tokens; text comes back."""
    completion = await openai_client.complete(
        chat_request("Summarise.", system="Be brief.", temperature=0.2)
    )
    sent = fake_provider.last()
    assert sent.path == OPENAI_PATH
    assert sent.headers["authorization"] == "Bearer sk-test-key-0000"
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Summarise."},
        ],
        "max_completion_tokens": 64,
        "temperature": 0.2,
    }
    assert completion.text == "Hello from fake gpt-4o-mini."
    assert completion.finish_reason == "stop"
    assert completion.usage.input_tokens > 0
    assert completion.usage.output_tokens > 0
    assert completion.usage_reported
    assert completion.request_id == "req_fake_1"
    assert completion.latency_s > 0
    assert completion.rate_limits is not None
    assert completion.rate_limits.remaining_requests == 499
    assert completion.rate_limits.reset_tokens_s == 360.0


def test_client_satisfies_the_llmclient_protocol(openai_client: OpenAIClient):
    """The engine can hold an OpenAI client as an LLMClient; behind the loopback base_url
    it claims no tokenizer (a compatible server counts its own way)."""
    assert isinstance(openai_client, LLMClient)
    assert openai_client.model_info("gpt-4o").tokenizer is None
    assert openai_client.model_info("llama3").tokenizer is None


async def test_max_tokens_field_name_is_configurable(fake_provider: FakeProvider):
    """Compatible servers that only know max_tokens get max_tokens, not max_completion_tokens."""
    config = ProviderConfig(
        "vllm", "openai", None, fake_provider.openai_base_url + "/", max_tokens_field="max_tokens"
    )
    client = OpenAIClient(config, api_key=None)
    try:
        await client.complete(chat_request())
    finally:
        await client.aclose()
    sent = fake_provider.last()
    assert sent.body["max_tokens"] == 64
    assert "max_completion_tokens" not in sent.body
    assert "authorization" not in sent.headers


async def test_structured_output_uses_strict_json_schema_when_the_schema_qualifies(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """A closed schema is sent strict, and the answer is JSON valid against it."""
    completion = await openai_client.complete(
        chat_request(output_schema=freeze(INVOICE_SCHEMA), schema_name="invoice data")
    )
    response_format = fake_provider.last().body["response_format"]
    assert response_format == {
        "type": "json_schema",
        "json_schema": {"name": "invoice_data", "schema": INVOICE_SCHEMA, "strict": True},
    }
    jsonschema.validate(json.loads(completion.text), INVOICE_SCHEMA)


async def test_open_schema_is_sent_non_strict(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """A schema strict mode would reject is still sent, with strict false."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    await openai_client.complete(chat_request(output_schema=freeze(schema)))
    assert fake_provider.last().body["response_format"]["json_schema"]["strict"] is False


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        (INVOICE_SCHEMA, True),
        ({"type": "object", "properties": {"a": {}}, "required": ["a"]}, False),
        ({"type": "object", "properties": {"a": {}}, "additionalProperties": False}, False),
        (
            {
                "type": "object",
                "properties": {"n": {"$ref": "#/$defs/n"}},
                "required": ["n"],
                "additionalProperties": False,
                "$defs": {"n": {"type": "object", "properties": {"x": {"type": "string"}}}},
            },
            False,
        ),
        ({"type": "array", "items": {"type": "string"}}, True),
    ],
)
def test_strict_mode_needs_closed_objects_and_all_properties_required(schema, strict):
    """Strict is only claimed when every object, however nested, is closed and fully required."""
    assert strict_compatible(schema) is strict


async def test_tool_calls_come_back_with_raw_arguments(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """Offered tools are sent as functions; a tool call returns its arguments as raw JSON text."""
    completion = await openai_client.complete_with_tools(chat_request(tools=(WEATHER_TOOL,)))
    tools = fake_provider.last().body["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    assert completion.finish_reason == "tool_calls"
    (call,) = completion.tool_calls
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments_json)["city"], str)


async def test_tool_turns_are_replayed_in_chat_completions_shape(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """Assistant turns replay their tool_calls and tool results go back as role=tool messages."""
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = (
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "18C and sunny", tool_call_id="call_1"),
    )
    completion = await openai_client.complete_with_tools(
        chat_request(messages=messages, tools=(WEATHER_TOOL,))
    )
    assert fake_provider.last().body["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    assert completion.tool_calls == ()
    assert completion.text


async def test_complete_does_not_offer_tools(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """complete() is the no-tools call even if the request lists tools."""
    await openai_client.complete(chat_request(tools=(WEATHER_TOOL,)))
    assert "tools" not in fake_provider.last().body


async def test_usage_is_parsed_in_full(openai_client: OpenAIClient, fake_provider: FakeProvider):
    """Cached and reasoning tokens are kept, inside the prompt and completion totals."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "o4-mini-2025-04-16",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": "x"},
            }
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 256},
        },
    }
    fake_provider.script(Fault.reply(body, headers={"x-request-id": "req_abc"}))
    completion = await openai_client.complete(chat_request())
    assert completion.usage == Usage(
        input_tokens=1200, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=256
    )
    assert completion.model == "o4-mini-2025-04-16"
    assert completion.finish_reason == "length"
    assert completion.request_id == "req_abc"
    assert completion.rate_limits is None


async def test_missing_usage_gives_zero_usage_flag_and_one_warning(
    openai_client: OpenAIClient, fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
):
    """Local servers without usage still work; the run is told token counts are unknown."""
    body = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
    fake_provider.script(Fault.reply(body), Fault.reply(body))
    with caplog.at_level(logging.WARNING, logger="aoe.providers"):
        first = await openai_client.complete(chat_request())
        await openai_client.complete(chat_request())
    assert first.usage == Usage()
    assert first.usage_reported is False
    assert first.text == "hi"
    assert first.finish_reason == "stop"
    assert len([r for r in caplog.records if "sent no usage" in r.message]) == 1


async def test_refusal_is_reported_as_finish_reason(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """A refusal has no content; finish_reason says refusal so the record explains the failure."""
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    fake_provider.script(Fault.reply({"choices": [{"finish_reason": "stop", "message": message}]}))
    completion = await openai_client.complete(chat_request())
    assert completion.text == ""
    assert completion.finish_reason == "refusal"


async def test_non_integer_token_counts_are_malformed(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """Usage drives cost: a count that is not an integer is an error, not a silent guess."""
    from aoe.errors import MalformedResponseError

    body = {
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": "12", "completion_tokens": 3},
    }
    fake_provider.script(Fault.reply(body))
    with pytest.raises(MalformedResponseError):
        await openai_client.complete(chat_request())


async def test_five_hundred_concurrent_calls_share_one_pool(fake_provider: FakeProvider):
    """500 agents in flight at once all get answers through one client's connection pool."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # client and server sockets live in this one process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    fake_provider.latency_s = 0.3
    config = ProviderConfig("openai", "openai", None, fake_provider.openai_base_url)
    client = OpenAIClient(config, api_key=None)
    try:
        results = await asyncio.gather(
            *(client.complete(chat_request(f"call {i}", timeout_s=30)) for i in range(500))
        )
    finally:
        await client.aclose()
    assert len(results) == 500
    assert all(r.text for r in results)
    assert fake_provider.calls(OPENAI_PATH) == 500
    assert fake_provider.peak_in_flight > 200  # they really overlapped


def test_repr_shows_no_key():
    """Printing a client (e.g. in a debug log) never shows its key."""
    client = OpenAIClient(ProviderConfig("openai", "openai", "K"), api_key="sk-hidden-42")
    assert "sk-hidden-42" not in repr(client)
    asyncio.run(client.aclose())
