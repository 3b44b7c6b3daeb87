"""The built-in simulator provider (``sim``): for ``--simulate`` and ``sim/<name>`` models.

It answers like a model without a network or a key, shaped by the agent's
``simulate:`` block: latency, output size, scripted failures on the first attempts,
fixed answers and scripted tool calls. With ``output_schema`` it returns JSON valid
against the schema. Everything random is derived from ``seed``, the request's
``trace_id`` and ``attempt`` (prose from a hash of them, schema examples from a
``random.Random`` seeded with them), so the same run simulates the same way every time.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import TYPE_CHECKING

from aoe.clock import Clock, SystemClock
from aoe.errors import (
    BadRequestError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    ServerError,
)
from aoe.providers.base import (
    Completion,
    CompletionRequest,
    ModelInfo,
    ToolCall,
    Usage,
)
from aoe.providers.schema_example import example_for_schema
from aoe.spec.models import ProviderConfig, SimulateSpec, thaw

if TYPE_CHECKING:  # the simulator opens no connection: no HTTP library is loaded for it
    import aiohttp

DEFAULT_OUTPUT_TOKENS = 120
_WORDS = (
    "the", "invoice", "total", "matches", "purchase", "order", "and", "supplier", "terms",
    "payment", "is", "due", "within", "thirty", "days", "approved", "for", "review", "ledger",
    "account", "balance", "net", "amount", "tax", "line", "item", "quantity", "received",
)  # fmt: skip


def default_latency_s(output_tokens: int) -> float:
    """50 ms plus 1 ms per 10 output tokens, at most 1 s: quick, yet ordered by size."""
    return min(1.0, 0.05 + 0.001 * output_tokens / 10)


class SimulatorClient:
    """An ``LLMClient`` that simulates calls; ``api_key`` and ``http`` are accepted and ignored."""

    def __init__(
        self,
        config: ProviderConfig | None = None,
        *,
        api_key: str | None = None,
        http: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        seed: int = 0,
    ) -> None:
        del api_key, http  # the simulator needs neither; accepted so every provider builds alike
        self.name = config.name if config is not None else "sim"
        self.seed = seed
        self._clock: Clock = clock or SystemClock()

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer ``request`` as its ``simulate`` block says."""
        return await self._answer(request, with_tools=False)

    async def complete_with_tools(self, request: CompletionRequest) -> Completion:
        """Like ``complete``, but on turn k return the scripted tool calls of turn k, if any."""
        return await self._answer(request, with_tools=True)

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(
            provider=self.name,
            name=model,
            tokenizer=None,
            context_window=None,
            expected_latency_s=default_latency_s(DEFAULT_OUTPUT_TOKENS),
        )

    async def aclose(self) -> None:
        return None

    async def _answer(self, request: CompletionRequest, *, with_tools: bool) -> Completion:
        sim = request.simulate or SimulateSpec()
        wanted = sim.output_tokens if sim.output_tokens is not None else DEFAULT_OUTPUT_TOKENS
        # a model never says more than max_tokens: a longer answer is cut, as a real one is
        output_tokens = min(wanted, request.max_tokens)
        cut = wanted > request.max_tokens
        latency_s = sim.latency_s if sim.latency_s is not None else default_latency_s(output_tokens)
        if latency_s > request.timeout_s:  # the call's deadline, as a real provider's
            await self._clock.sleep(request.timeout_s)
            raise ProviderTimeout(
                f"no answer within timeout_s={request.timeout_s:g}",
                provider=self.name,
                outcome_unknown=True,
                hint="raise timeout_s for this agent, or lower simulate.latency_s",
            )
        if latency_s > 0:
            await self._clock.sleep(latency_s)
        failing = request.attempt <= sim.fail_times
        if failing and sim.fail_with != "invalid_output":
            raise self._failure(sim, request)
        usage = Usage(input_tokens=_estimate_input_tokens(request), output_tokens=output_tokens)

        def done(text: str, finish: str = "stop", calls: tuple[ToolCall, ...] = ()) -> Completion:
            return Completion(
                text=text,
                usage=usage,
                model=request.model,
                finish_reason=finish,
                tool_calls=calls,
                request_id=f"sim-{request.trace_id or 'call'}-{request.attempt}",
                latency_s=latency_s,
            )

        if with_tools and request.tools:
            turn = sum(1 for m in request.messages if m.role == "assistant") + 1
            scripted = [c for c in sim.tool_calls if c.turn == turn]
            if scripted:
                calls = tuple(
                    ToolCall(f"sim_call_{turn}_{i}", c.name, json.dumps(thaw(c.arguments)))
                    for i, c in enumerate(scripted, start=1)
                )
                return done("", "tool_calls", calls)
        text = self._text(request, sim, output_tokens)
        if failing:  # invalid_output: an object or array cut short is never valid JSON
            text = text[: len(text) // 2] if text[:1] in ("{", "[") else "<not json> " + text
        return done(text, "length" if cut else "stop")

    def _failure(self, sim: SimulateSpec, request: CompletionRequest) -> ProviderError:
        where = f"simulated failure {request.attempt} of {sim.fail_times}"
        if sim.fail_with == "rate_limit":
            return RateLimitedError(
                f"rate limit reached ({where})", provider=self.name, status=429, retry_after_s=1.0
            )
        if sim.fail_with == "timeout":
            return ProviderTimeout(
                f"no answer in time ({where})", provider=self.name, outcome_unknown=True
            )
        if sim.fail_with == "bad_request":
            return BadRequestError(f"invalid request ({where})", provider=self.name, status=400)
        return ServerError(f"service unavailable ({where})", provider=self.name, status=503)

    def _text(self, request: CompletionRequest, sim: SimulateSpec, tokens: int) -> str:
        if sim.output is not None:
            output = thaw(sim.output)
            return output if isinstance(output, str) else json.dumps(output)
        key = f"{self.seed}:{request.trace_id}:{request.attempt}"
        if request.output_schema is not None:
            rng = random.Random(key)
            return json.dumps(example_for_schema(thaw(request.output_schema), rng))
        return _prose(key.encode(), tokens)


def _estimate_input_tokens(request: CompletionRequest) -> int:
    """ceil(chars / 4) over the system prompt and every message, tool calls included."""
    chars = len(request.system or "")
    for message in request.messages:
        chars += len(message.content)
        chars += sum(len(c.name) + len(c.arguments_json) for c in message.tool_calls)
    return math.ceil(chars / 4)


def _prose(key: bytes, tokens: int) -> str:
    """Sentences of about ``tokens`` tokens (4 characters each), the words picked by the
    bytes of BLAKE2b digests of ``key`` (64 words a digest): the same key always gives the
    same text, and no ``random.Random`` (2.5 KB of state, seeded through SHA-512) is made
    for each call."""
    target = max(1, tokens) * 4
    words: list[str] = []
    length = 0
    block = 0
    while length < target:
        for byte in hashlib.blake2b(key + block.to_bytes(4, "little")).digest():
            word = _WORDS[byte % len(_WORDS)]
            words.append(word)
            length += len(word) + 1
            if length >= target:
                break
        block += 1
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."
