"""What we send and what the fake server answers match the official SDKs' own wire types.

The `openai` and `anthropic` packages come with the test extra (a missing one fails here).
TypedDict validation silently drops unknown keys and coerces values, so a strict
validate-then-dump round trip must give back exactly the body we built.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic.types as anthropic_types
import anthropic.types.message_create_params as anthropic_params
import openai.types.chat as openai_chat
import openai.types.chat.completion_create_params as openai_params
import pydantic
import pytest

from aoe.providers.anthropic import AnthropicClient
from aoe.providers.base import CompletionRequest, Message, ToolCall, ToolDefinition
from aoe.providers.openai import OpenAIClient
from aoe.spec.models import ProviderConfig, freeze
from tests.fakeprovider import ANTHROPIC_PATH, OPENAI_PATH, FakeProvider, chat_request

SCHEMA = freeze({
    "type": "object",
    "properties": {"total": {"type": "number"}},
    "required": ["total"],
    "additionalProperties": False,
})  # fmt: skip
TOOL = ToolDefinition(
    "lookup_po",
    "Find a purchase order",
    freeze({"type": "object", "properties": {"po": {"type": "string"}}, "required": ["po"]}),
)
CALL = ToolCall("call_1", "lookup_po", '{"po": "PO-1"}')
TOOL_TURNS = (
    Message("user", "Check PO-1."),
    Message("assistant", "Checking.", tool_calls=(CALL,)),
    Message("tool", "open", tool_call_id="call_1"),
    Message("tool", "late", tool_call_id="call_1", is_error=True),
)
REQUESTS: dict[str, tuple[CompletionRequest, bool]] = {
    "plain": (chat_request(system="Be brief.", temperature=0.0), False),
    "structured": (chat_request(output_schema=SCHEMA, schema_name="totals"), False),
    "tools": (chat_request(messages=TOOL_TURNS, tools=(TOOL,)), True),
    "tools+schema": (chat_request(messages=TOOL_TURNS, tools=(TOOL,), output_schema=SCHEMA), True),
}


def check_wire(adapter: Any, body: dict[str, Any], *, exclude_none: bool = False) -> None:
    value = adapter.validate_python(body, strict=True)
    dumped = adapter.dump_python(value, mode="json", warnings=False, exclude_none=exclude_none)
    assert dumped == body, "unknown, misspelt or coerced field"


def check_anthropic_wire(body: dict[str, Any]) -> None:
    """Messages are checked one by one against their role's type: inside the role union,
    pydantic empties a lazily validated assistant ``content`` (seen with anthropic 2.14), and
    the dump adds ``citations: None`` to text blocks, hence ``exclude_none`` (we send no None).
    """
    for message in body["messages"]:
        param = {
            "user": anthropic_types.UserMessageParam,
            "assistant": anthropic_types.AssistantMessageParam,
        }[message["role"]]
        check_wire(pydantic.TypeAdapter(param), message, exclude_none=True)
    rest = {**body, "messages": [{"role": "user", "content": "x"}]}
    check_wire(
        pydantic.TypeAdapter(anthropic_params.MessageCreateParamsNonStreaming),
        rest,
        exclude_none=True,
    )


def test_check_wire_catches_a_misspelt_field():
    """The checker itself is strict: a typo'd key or a string number is caught."""
    adapter = pydantic.TypeAdapter(openai_params.CompletionCreateParamsNonStreaming)
    good = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 5,
    }
    check_wire(adapter, good)
    with pytest.raises((AssertionError, pydantic.ValidationError)):
        check_wire(adapter, {**good, "max_completion_tokenz": 5})
    with pytest.raises((AssertionError, pydantic.ValidationError)):
        check_wire(adapter, {**good, "max_completion_tokens": "5"})


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_openai_request_bodies_match_the_sdk_types(name: str):
    """Every body shape the OpenAI client sends is a valid CompletionCreateParams."""
    request, with_tools = REQUESTS[name]
    client = OpenAIClient(ProviderConfig("openai", "openai"), api_key=None)
    body = client.build_body(request, with_tools=with_tools)
    await client.aclose()
    check_wire(pydantic.TypeAdapter(openai_params.CompletionCreateParamsNonStreaming), body)


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_anthropic_request_bodies_match_the_sdk_types(name: str):
    """Every body the Anthropic client sends (API 2026-10-21) is a valid MessageCreateParams."""
    request, with_tools = REQUESTS[name]
    client = AnthropicClient(ProviderConfig("anthropic", "anthropic"), api_key=None)
    body = client.build_body(request, with_tools=with_tools)
    await client.aclose()
    check_anthropic_wire(body)


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_fake_server_answers_are_valid_sdk_responses(
    name: str,
    fake_provider: FakeProvider,
    openai_client: OpenAIClient,
    anthropic_client: AnthropicClient,
):
    """The loopback server answers in shapes the real SDKs accept, so our tests are realistic."""
    request, with_tools = REQUESTS[name]
    call = "complete_with_tools" if with_tools else "complete"
    await getattr(openai_client, call)(request)
    await getattr(anthropic_client, call)(request)
    assert [r.path for r in fake_provider.requests] == [OPENAI_PATH, ANTHROPIC_PATH]
    openai_answer, anthropic_answer = (json.loads(body) for body in fake_provider.responses)
    openai_chat.ChatCompletion.model_validate(openai_answer)
    anthropic_types.Message.model_validate(anthropic_answer)


def test_sampling_parameters_are_not_part_of_the_2026_api():
    """The SDK types for API 2026-10-21 reject temperature, which is why we never send it."""
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    check_anthropic_wire(body)
    with pytest.raises((AssertionError, pydantic.ValidationError)):
        check_anthropic_wire({**body, "temperature": 0.0})
