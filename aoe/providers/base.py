"""What every provider client speaks: requests, completions, usage, and the LLMClient protocol.

A provider turns a ``CompletionRequest`` into a ``Completion`` or raises a
``ProviderError`` subclass (see ``aoe.errors``); nothing from aiohttp or the wire format
leaks past this boundary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from aoe.spec.models import EMPTY, SimulateSpec

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for. ``arguments_json`` is the raw JSON text, possibly invalid."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A tool offered to the model."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation (the system prompt travels in ``CompletionRequest.system``).

    An assistant turn may carry ``tool_calls``; a ``tool`` turn answers ``tool_call_id``.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One call to a model. ``model`` is the provider's model name, without the prefix."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    output_schema: Mapping[str, Any] | None = None
    schema_name: str = "output"
    tools: tuple[ToolDefinition, ...] = ()
    timeout_s: float = 60.0
    simulate: SimulateSpec | None = None
    attempt: int = 1
    trace_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call, in one convention for every provider.

    ``input_tokens`` counts all input, cached reads and cache writes included;
    ``output_tokens`` counts all output, reasoning included. The other fields say how
    much of those totals was cached, written to cache, or reasoning.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """What the provider's rate-limit headers said about the key, normalised to seconds."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A successful answer: text or tool calls, and what it cost in tokens."""

    text: str
    usage: Usage
    model: str
    finish_reason: str
    tool_calls: tuple[ToolCall, ...] = ()
    request_id: str | None = None
    rate_limits: RateLimitSnapshot | None = None
    latency_s: float = 0.0
    usage_reported: bool = True  # False: the server sent no usage (some local servers); zeros


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What aoe knows about a model without calling it.

    ``tokenizer`` names the encoding this endpoint bills the model's tokens with, when aoe
    has it (OpenAI's models at OpenAI's own API); None means aoe cannot know how the
    endpoint counts, so a budget reserves an upper bound instead of a count.
    """

    provider: str
    name: str
    tokenizer: str | None = None
    context_window: int | None = None
    supports_structured_output: bool = True
    expected_latency_s: float = 2.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class LLMClient(Protocol):
    """A provider client. One instance serves every call to its provider key."""

    name: str

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer ``request`` (which has no tools), or raise a ``ProviderError``.

        The call's one deadline is ``request.timeout_s``: past it, raise ``ProviderTimeout``
        (the engine sets no timer of its own around a client).
        """
        ...

    async def complete_with_tools(self, request: CompletionRequest) -> Completion:
        """One turn with ``request.tools`` offered; the answer may hold ``tool_calls``."""
        ...

    def model_info(self, model: str) -> ModelInfo: ...

    async def aclose(self) -> None: ...


def wire_name(name: str, max_length: int) -> str:
    """A tool or schema name both APIs accept: ``^[a-zA-Z0-9_-]{1,max_length}$``."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:max_length] or "output"
