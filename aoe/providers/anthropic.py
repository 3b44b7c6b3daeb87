"""Anthropic Messages API (``POST {base_url}/v1/messages``).

The API version is a provider setting (``ProviderConfig.api_version``, default
``2026-10-21``). From ``2026-10-21`` on, ``temperature``/``top_p``/``top_k`` are rejected
with a 400 even at their defaults, so they are only sent under older versions.
Structured output uses a forced tool whose ``input_schema`` is the output schema; the
tool's input becomes the completion's JSON text. Usage buckets are disjoint on the wire
and are summed here into the one ``Usage`` convention (input includes cache reads/writes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from aoe.clock import Clock
from aoe.providers.base import (
    Completion,
    CompletionRequest,
    Message,
    ModelInfo,
    ToolCall,
    Usage,
    wire_name,
)
from aoe.providers.http import JsonResponse
from aoe.providers.json_api import JsonApiClient, token_count
from aoe.providers.ratelimit_headers import parse_anthropic
from aoe.spec.models import ProviderConfig, thaw

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_API_VERSION = "2026-10-21"
NO_SAMPLING_SINCE = "2026-10-21"  # ISO dates compare correctly as strings


class AnthropicClient(JsonApiClient):
    """An ``LLMClient`` over the Messages API."""

    default_base_url = DEFAULT_BASE_URL
    path = "/v1/messages"
    answer_kind = "a message"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        api_key: str | None,
        http: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.api_version = config.api_version or DEFAULT_API_VERSION
        super().__init__(config, api_key=api_key, http=http, clock=clock)

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.api_version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def __repr__(self) -> str:
        return (
            f"AnthropicClient(name={self.name!r}, url={self._url!r}, version={self.api_version!r})"
        )

    def usage_of(self, body: Any) -> Usage:
        return _usage(body)

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(provider=self.name, name=model, tokenizer=None, context_window=200_000)

    def build_body(self, request: CompletionRequest, *, with_tools: bool) -> dict[str, Any]:
        """The JSON body for ``request`` (public so tests can check it against the SDK types)."""
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": _wire_messages(request.messages),
        }
        if request.system:
            body["system"] = request.system
        if request.temperature is not None and self.api_version < NO_SAMPLING_SINCE:
            body["temperature"] = request.temperature
        tools: list[dict[str, Any]] = []
        if with_tools:
            tools = [
                {"name": t.name, "description": t.description, "input_schema": thaw(t.parameters)}
                for t in request.tools
            ]
        if request.output_schema is not None:
            name = wire_name(request.schema_name, 128)
            tools.append(
                {
                    "name": name,
                    "description": "Give the final answer as this tool's input.",
                    "input_schema": thaw(request.output_schema),
                }
            )
            # Alone, the output tool is forced; beside real tools, some tool must be called.
            body["tool_choice"] = (
                {"type": "any"} if len(tools) > 1 else {"type": "tool", "name": name}
            )
        if tools:
            body["tools"] = tools
        return body

    def parse(self, request: CompletionRequest, response: JsonResponse) -> Completion:
        body = response.body
        blocks = body["content"]
        if not isinstance(blocks, list):
            raise TypeError("'content' is not a list")
        output_tool = (
            wire_name(request.schema_name, 128) if request.output_schema is not None else None
        )
        texts: list[str] = []
        calls: list[ToolCall] = []
        structured: str | None = None
        for block in blocks:
            kind = block["type"]
            if kind == "text":
                texts.append(str(block["text"]))
            elif kind == "tool_use":
                arguments = json.dumps(block["input"])
                if block["name"] == output_tool and structured is None:
                    structured = arguments
                else:
                    calls.append(ToolCall(str(block["id"]), str(block["name"]), arguments))
        stop_reason = str(body.get("stop_reason") or "end_turn")
        if structured is not None and not calls and stop_reason == "tool_use":
            stop_reason = "end_turn"  # the output tool is how we ask, not a call to run
        usage_raw = body.get("usage")
        return Completion(
            text=structured if structured is not None and not calls else "".join(texts),
            usage=_usage(usage_raw) if usage_raw is not None else Usage(),
            model=str(body.get("model") or request.model),
            finish_reason=stop_reason,
            tool_calls=tuple(calls),
            request_id=response.headers.get("request-id"),
            rate_limits=parse_anthropic(response.headers),
            latency_s=response.latency_s,
            usage_reported=usage_raw is not None,
        )


def _wire_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Turns as content blocks; consecutive same-role turns (tool results) merge into one."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        blocks: list[dict[str, Any]]
        if message.role == "tool":
            role = "user"
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
            if message.is_error:
                result["is_error"] = True
            blocks = [result]
        elif message.role == "assistant":
            role = "assistant"
            blocks = [{"type": "text", "text": message.content}] if message.content else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _arguments(c)}
                for c in message.tool_calls
            ]
        else:
            role = "user"
            blocks = [{"type": "text", "text": message.content}]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
        elif not content:
            turn["content"] = ""
    return turns


def _arguments(call: ToolCall) -> dict[str, Any]:
    """Replay a call's input as an object; invalid JSON from the model is kept as a string."""
    try:
        parsed = json.loads(call.arguments_json)
    except ValueError:
        return {"raw_arguments": call.arguments_json}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _usage(raw: Mapping[str, Any]) -> Usage:
    """Anthropic's buckets are disjoint; total input = input + cache creation + cache read."""
    fresh = token_count(raw.get("input_tokens"))
    written = token_count(raw.get("cache_creation_input_tokens"))
    read = token_count(raw.get("cache_read_input_tokens"))
    return Usage(
        input_tokens=fresh + written + read,
        output_tokens=token_count(raw.get("output_tokens")),
        cache_read_tokens=read,
        cache_write_tokens=written,
    )
