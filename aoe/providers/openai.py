"""OpenAI Chat Completions, and any server speaking it (vLLM, Ollama, llama.cpp) via ``base_url``.

Compatible servers differ in small ways this client absorbs: ``usage`` may be missing
(zeros, ``usage_reported=False`` and one warning), ``error.code`` may be a number, and the
max-tokens field may have to be ``max_tokens`` (``ProviderConfig.max_tokens_field``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
from aoe.providers.ratelimit_headers import parse_openai
from aoe.spec.models import thaw

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIClient(JsonApiClient):
    """An ``LLMClient`` over ``POST {base_url}/chat/completions``."""

    default_base_url = DEFAULT_BASE_URL
    path = "/chat/completions"
    answer_kind = "a chat completion"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def __repr__(self) -> str:
        return f"OpenAIClient(name={self.name!r}, url={self._url!r})"

    def usage_of(self, body: Any) -> Usage:
        return _usage(body)

    def model_info(self, model: str) -> ModelInfo:
        """The tokenizer is OpenAI's only at OpenAI's own API: a compatible server behind
        another ``base_url`` may count tokens its own way, so budgets reserve a bound."""
        own_api = self._url.startswith(DEFAULT_BASE_URL + "/")
        tokenizer = _tokenizer_for(model) if own_api else None
        return ModelInfo(provider=self.name, name=model, tokenizer=tokenizer)

    def build_body(self, request: CompletionRequest, *, with_tools: bool) -> dict[str, Any]:
        """The JSON body for ``request`` (public so tests can check it against the SDK types)."""
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(_wire_message(m) for m in request.messages)
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        body[self.config.max_tokens_field] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.output_schema is not None:
            schema = thaw(request.output_schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": wire_name(request.schema_name, 64),
                    "schema": schema,
                    "strict": strict_compatible(schema),
                },
            }
        if with_tools and request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": thaw(t.parameters),
                    },
                }
                for t in request.tools
            ]
        return body

    def parse(self, request: CompletionRequest, response: JsonResponse) -> Completion:
        body = response.body
        choices = body["choices"]
        if not isinstance(choices, list) or not choices:
            raise ValueError("'choices' is empty")
        choice = choices[0]
        message = choice["message"]
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("'content' is not a string")
        finish_reason = choice.get("finish_reason") or "stop"
        if not content and message.get("refusal"):
            finish_reason = "refusal"
        tool_calls = tuple(_tool_call(raw) for raw in message.get("tool_calls") or ())
        usage_raw = body.get("usage")
        return Completion(
            text=content or "",
            usage=_usage(usage_raw) if usage_raw is not None else Usage(),
            model=str(body.get("model") or request.model),
            finish_reason=str(finish_reason),
            tool_calls=tool_calls,
            request_id=response.headers.get("x-request-id"),
            rate_limits=parse_openai(response.headers),
            latency_s=response.latency_s,
            usage_reported=usage_raw is not None,
        )


def strict_compatible(schema: Any) -> bool:
    """Whether OpenAI strict mode accepts ``schema``: objects closed, every property required."""
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, Mapping):
        return True
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or ()) != set(properties):
            return False
    nested = [
        *(schema.get("properties") or {}).values(),
        *(schema.get("$defs") or {}).values(),
        *(schema.get("definitions") or {}).values(),
    ]
    for key in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "not"):
        if key in schema:
            nested.append(schema[key])
    return all(strict_compatible(sub) for sub in nested)


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                }
                for c in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _tool_call(raw: Mapping[str, Any]) -> ToolCall:
    function = raw["function"]
    arguments = function.get("arguments")
    if not isinstance(arguments, str):  # some compatible servers send the object itself
        arguments = json.dumps(arguments if arguments is not None else {})
    return ToolCall(
        id=str(raw.get("id") or ""), name=str(function["name"]), arguments_json=arguments
    )


def _usage(raw: Mapping[str, Any]) -> Usage:
    """prompt_tokens already includes cached_tokens; completion_tokens includes reasoning."""
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=token_count(raw.get("prompt_tokens")),
        output_tokens=token_count(raw.get("completion_tokens")),
        cache_read_tokens=token_count(prompt_details.get("cached_tokens")),
        reasoning_tokens=token_count(completion_details.get("reasoning_tokens")),
    )


def _tokenizer_for(model: str) -> str | None:
    if model.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    if model.startswith(("gpt-4", "gpt-3.5")):
        return "cl100k_base"
    return None
