"""A real HTTP/1.1 server on 127.0.0.1 that speaks OpenAI Chat Completions and Anthropic Messages.

It runs an asyncio loop in a background thread (cheap enough for 500+ concurrent
connections), records every request, counts calls per path, answers with realistic bodies
(usage, rate-limit headers, schema-valid JSON for structured output, a tool call when tools
are offered) and takes faults on demand, one per call, from a script::

    fake_provider.script(Fault.rate_limit(retry_after="1"), Fault.error(503))
    # the next two calls fail like that, later calls succeed

Calls that offer tools can be scripted turn by turn, so a test drives a tool loop exactly::

    fake_provider.script_tools([("lookup", {"name": "ACME"}), ("lookup", {"name": "X"})], [])
    # the next tools call asks for two lookups at once, the one after gives its final answer

Point an OpenAI client at ``fake.openai_base_url`` and an Anthropic one at ``fake.base_url``.

Like a real provider it counts tokens its own way, which aoe cannot know: ``counting``
picks how (``json/4`` of the messages, the default; ``chars/4``, ``bytes`` or ``tiktoken``
over every text sent), and ``output_fill`` bills that fraction of the request's max
tokens as output (a real answer never passes max tokens).

``billed`` is what a provider would bill: every call the server answered with usage, from
the moment its answer is made, whether or not the client was still there to read it (a
client killed mid-call is billed all the same, as by a real provider).

Limits are enforced as a provider would (``enforce``), optionally with truthful
``x-ratelimit-*`` headers and 429s that say which limit they are about; per-model headers
(a LiteLLM gateway's) come from ``headers_for_model``; ``limit_log`` says when each call
checked against the limits came and whether it was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any

import pytest

from aoe.clock import Clock, SystemClock
from aoe.providers.base import CompletionRequest, Message
from aoe.providers.schema_example import example_for_schema

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclass(frozen=True)
class Fault:
    """What the server does with one call instead of (or before) answering normally."""

    kind: str = "ok"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: Any = None
    echo_key: bool = False

    @classmethod
    def ok(cls, *, delay_s: float = 0.0, headers: Mapping[str, str] | None = None) -> Fault:
        return cls("ok", 200, headers or {}, delay_s)

    @classmethod
    def rate_limit(
        cls, *, retry_after: str | None = None, retry_after_ms: str | None = None
    ) -> Fault:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        return cls("rate_limit", 429, headers)

    @classmethod
    def concurrency(cls, *, retry_after: str | None = None) -> Fault:
        """A 429 about calls in flight, worded as LiteLLM's max_parallel_requests limit."""
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls("concurrency", 429, headers)

    @classmethod
    def insufficient_quota(cls, code: str = "insufficient_quota") -> Fault:
        """OpenAI's billing 429: never worth a retry."""
        return cls("insufficient_quota", 429, body=code)

    @classmethod
    def spend_limit(cls) -> Fault:
        """Anthropic's 429 with ``error.details.error_code = enforced_spend_limit_reached``."""
        return cls("spend_limit", 429)

    @classmethod
    def error(cls, status: int, *, headers: Mapping[str, str] | None = None) -> Fault:
        """A provider-shaped error body with this status (500, 503, 400, 404, ...)."""
        return cls("status", status, headers or {})

    @classmethod
    def overloaded(cls) -> Fault:
        return cls("overloaded", 529)

    @classmethod
    def unauthorized(cls, *, echo_key: bool = False) -> Fault:
        """401; with ``echo_key`` the message repeats the key, as a careless server might."""
        return cls("unauthorized", 401, echo_key=echo_key)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Answer normally, but only after ``seconds`` (longer than the client's timeout)."""
        return cls("ok", 200, delay_s=seconds)

    @classmethod
    def silent(cls) -> Fault:
        """Read the call and never answer (until the server stops): only the client's own
        deadline ends it, however slow the machine is."""
        return cls("silent")

    @classmethod
    def drop(cls) -> Fault:
        """Send the headers and half the body, then close the connection."""
        return cls("drop", 200)

    @classmethod
    def hang_up(cls) -> Fault:
        """Read the call, then close the connection without a word of answer."""
        return cls("hang_up")

    @classmethod
    def drip(cls, *, every_s: float = 0.05) -> Fault:
        """Send the headers at once, then the body one byte every ``every_s``: each read
        comes quickly, the whole answer only long after any sensible deadline."""
        return cls("drip", 200, delay_s=every_s)

    @classmethod
    def truncated(cls) -> Fault:
        """A complete HTTP response whose JSON body is cut in half."""
        return cls("truncated", 200)

    @classmethod
    def missing_fields(cls) -> Fault:
        """Valid JSON without ``choices`` (OpenAI) or ``content`` (Anthropic)."""
        return cls("missing_fields", 200)

    @classmethod
    def not_json(cls) -> Fault:
        return cls("raw", 200, {"content-type": "text/html"}, body=b"<html>gateway</html>")

    @classmethod
    def reply(
        cls, body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Exactly this JSON body (or bytes) with this status."""
        return cls("raw", status, headers or {}, body=body)


@dataclass(frozen=True)
class Bill:
    """One call the server completed and billed (its usage as the server counted it)."""

    path: str
    model: str
    prompt: str  # the last user message, to tell callers apart
    input_tokens: int
    output_tokens: int
    at: float  # time.monotonic() when the answer was made


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    raw: bytes


class FakeProvider:
    """The loopback server; ``start``/``stop`` it, or use the ``fake_provider`` fixture."""

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.counting = "json/4"
        self.output_fill: float | None = None
        self.requests: list[Recorded] = []
        self.responses: list[bytes] = []  # each body sent back, in order (cut ones in full)
        self.billed: list[Bill] = []  # each call answered with usage, read by its client or not
        self.port = 0
        self.connections = 0  # connections accepted, to tell a reused one from a new one
        self._idle: set[asyncio.StreamWriter] = set()  # waiting for their next request
        self.in_flight = 0
        self.peak_in_flight = 0
        self._faults: dict[str | None, deque[Fault]] = {}
        self._tool_turns: deque[Sequence[tuple[str, Any]]] = deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rpm_limit: int | None = None
        self.concurrency_limit: int | None = None
        self._limit_clock: Clock = SystemClock()
        self.limit_429s = 0
        self._accepted: deque[float] = deque()
        self.limit_log: list[tuple[float, bool]] = []  # (clock time, refused) per checked call
        self.limit_headers = False
        self.say_which_limit = False
        self.limit_retry_after: str | None = "1"
        self._over: str = ""
        self.tpm_limit: int | None = None
        self._token_window: deque[list[float]] = deque()  # [arrival, tokens] in the minute
        self.token_log: list[list[float]] = []  # [arrival, tokens billed] per accepted call
        self.refused: dict[str, int] = {}  # 429s for the enforced limits, by limit
        self._counted: dict[int, list[float]] = {}  # a call in flight -> its token_log entry
        self._model_headers: dict[str, Mapping[str, str]] = {}

    def enforce(
        self,
        *,
        requests_per_minute: int | None = None,
        concurrent: int | None = None,
        clock: Clock | None = None,
        headers: bool = False,
        say_which: bool = False,
        retry_after: str | None = "1",
        tokens_per_minute: int | None = None,
    ) -> None:
        """Answer 429 to any call over these limits, as a provider would, and count them.

        The per-minute limit holds in every sliding minute of ``clock`` (the wall clock by
        default), read when a call arrives: a test whose run skips time shares its clock.
        With ``headers`` every answer reports the per-minute limit truthfully (OpenAI's
        ``x-ratelimit-*-requests``: limit, what is left, when the minute fully resets);
        with ``say_which`` a 429 for calls in flight says so (LiteLLM's wording) and one
        for the minute names it (OpenAI's); ``retry_after`` goes with every such 429.

        ``tokens_per_minute`` counts tokens as the server bills them (input and output, at
        the call's arrival): a call is refused when the tokens of the sliding minute plus its
        own input would pass the limit (its output is counted once it is billed), with a 429
        that names tokens per minute (OpenAI's wording); with ``headers`` every answer also
        reports ``x-ratelimit-*-tokens`` truthfully. ``token_log`` holds each accepted call's
        ``[arrival, tokens]`` and ``refused`` the 429s by limit (``requests``, ``tokens``,
        ``concurrency``).
        """
        self.tpm_limit = tokens_per_minute
        self.rpm_limit = requests_per_minute
        self.concurrency_limit = concurrent
        self._limit_clock = clock or SystemClock()
        self.limit_headers = headers
        self.say_which_limit = say_which
        self.limit_retry_after = retry_after

    def headers_for_model(self, model: str, headers: Mapping[str, str]) -> None:
        """Answer calls to ``model`` with these rate-limit headers instead of the usual ones,
        as a LiteLLM gateway reports each model's own limits."""
        self._model_headers[model] = headers

    def _over_limit(self, request: Recorded | None = None) -> bool:
        now = self._limit_clock.now()
        while self._accepted and self._accepted[0] <= now - 60.0:
            self._accepted.popleft()
        over_tokens = False
        prompt_tokens = 0
        if self.tpm_limit is not None:
            body = request.body if request is not None and isinstance(request.body, dict) else {}
            prompt_tokens = _prompt_tokens(body, self.counting)
            over_tokens = self._tokens_used(now) + prompt_tokens > self.tpm_limit
        over_concurrency = (
            self.concurrency_limit is not None and self.in_flight > self.concurrency_limit
        )
        over_requests = self.rpm_limit is not None and len(self._accepted) >= self.rpm_limit
        over = over_concurrency or over_requests or over_tokens
        if over_concurrency:
            self._over = "concurrency"
        else:
            self._over = "tokens" if over_tokens and not over_requests else "requests"
        self.limit_log.append((now, over))
        if over:
            self.limit_429s += 1
            self.refused[self._over] = self.refused.get(self._over, 0) + 1
        else:
            self._accepted.append(now)
            if self.tpm_limit is not None and request is not None:
                entry = [now, float(prompt_tokens)]
                self._token_window.append(entry)
                self.token_log.append(entry)
                self._counted[id(request)] = entry
        return over

    def _tokens_used(self, now: float) -> int:
        """Tokens billed (for calls in flight, their input) in the minute before ``now``."""
        while self._token_window and self._token_window[0][0] <= now - 60.0:
            self._token_window.popleft()
        return int(sum(tokens for _, tokens in self._token_window))

    def _limit_fault(self) -> Fault:
        """The 429 for a call over the enforced limits."""
        if self.say_which_limit and self._over == "concurrency":
            return Fault.concurrency(retry_after=self.limit_retry_after)
        headers = {"retry-after": self.limit_retry_after} if self.limit_retry_after else {}
        if self._over == "tokens":
            return Fault("rate_limit_tpm", 429, headers)
        kind = "rate_limit_rpm" if self.say_which_limit else "rate_limit"
        return Fault(kind, 429, headers)

    def _rate_headers(self, request: Recorded, headers: dict[str, str]) -> dict[str, str]:
        """A model's own headers (``headers_for_model``), or the enforced minute's truth."""
        model = request.body.get("model") if isinstance(request.body, dict) else None
        own = self._model_headers.get(model) if isinstance(model, str) else None
        if own is not None:
            kept = {k: v for k, v in headers.items() if "ratelimit" not in k}
            return {**kept, **own}
        if not self.limit_headers:
            return headers
        now = self._limit_clock.now()
        if self.tpm_limit is not None:
            used = self._tokens_used(now)
            window = self._token_window
            reset = window[-1][0] + 60.0 - now if window else 0.0
            headers = {
                **headers,
                "x-ratelimit-limit-tokens": str(self.tpm_limit),
                "x-ratelimit-remaining-tokens": str(max(0, self.tpm_limit - used)),
                "x-ratelimit-reset-tokens": f"{max(0.0, reset):.3f}s",
            }
        if self.rpm_limit is None:
            return headers
        while self._accepted and self._accepted[0] <= now - 60.0:
            self._accepted.popleft()
        reset = self._accepted[-1] + 60.0 - now if self._accepted else 0.0
        return {
            **headers,
            "x-ratelimit-limit-requests": str(self.rpm_limit),
            "x-ratelimit-remaining-requests": str(max(0, self.rpm_limit - len(self._accepted))),
            "x-ratelimit-reset-requests": f"{max(0.0, reset):.3f}s",
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def script(self, *faults: Fault, path: str | None = None) -> None:
        """Queue faults for the next calls (to ``path`` only, if given); then normal answers."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

    def unscript(self) -> None:
        """Forget the faults still queued: later calls are answered normally."""
        self._faults.clear()

    def script_tools(self, *turns: Sequence[tuple[str, Any]]) -> None:
        """Queue answers for the next calls that offer tools: each turn is a list of
        ``(tool name, arguments)`` asked for at once (arguments a dict, or a string sent as
        is, e.g. broken JSON); an empty list is the final answer. Then the usual answers."""
        with self._lock:
            self._tool_turns.extend(turns)

    def _next_tool_turn(self) -> Sequence[tuple[str, Any]] | None:
        with self._lock:
            return self._tool_turns.popleft() if self._tool_turns else None

    def calls(self, path: str | None = None) -> int:
        return sum(1 for r in self.requests if path is None or r.path == path)

    async def received(self, count: int, *, timeout_s: float = 10.0) -> None:
        """Return once ``count`` requests have arrived (TimeoutError after ``timeout_s``)."""

        def wait() -> None:
            with self._arrived:
                if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout_s):
                    raise TimeoutError(f"{len(self.requests)} of {count} requests arrived")

        await asyncio.to_thread(wait)

    def last(self) -> Recorded:
        return self.requests[-1]

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=2048)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-provider", daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    async def close_idle(self) -> int:
        """Close every connection waiting for its next request, as a server's keep-alive
        timeout does, and return once they are closed: how many there were."""
        assert self._loop is not None
        done = asyncio.run_coroutine_threadsafe(self._close_idle(), self._loop)
        return await asyncio.wrap_future(done)

    async def _close_idle(self) -> int:
        idle, self._idle = list(self._idle), set()
        for writer in idle:
            writer.close()
        for writer in idle:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return len(idle)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                self._idle.add(writer)
                try:
                    request = await _read_request(reader)
                finally:
                    self._idle.discard(writer)
                if request is None:
                    break
                with self._arrived:
                    self.requests.append(request)
                    self._arrived.notify_all()
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                open_call = [True]
                try:
                    keep_open = await self._respond(request, writer, open_call)
                finally:
                    if open_call[0]:
                        self.in_flight -= 1
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def _next_fault(self, path: str) -> Fault:
        with self._lock:
            for key in (path, None):
                queue = self._faults.get(key)
                if queue:
                    return queue.popleft()
        return Fault.ok()

    async def _respond(
        self, request: Recorded, writer: asyncio.StreamWriter, open_call: list[bool]
    ) -> bool:
        """Answer one call; it stops counting as in flight once its answer is being sent."""
        enforced = self.rpm_limit or self.concurrency_limit or self.tpm_limit
        limited = enforced and self._over_limit(request)
        fault = self._limit_fault() if limited else self._next_fault(request.path)
        if fault.kind == "silent":
            await asyncio.get_running_loop().create_future()  # cancelled when the server stops
        if fault.kind == "hang_up":
            open_call[0] = False
            self.in_flight -= 1
            writer.close()
            return False
        delay = self.latency_s + (fault.delay_s if fault.kind != "drip" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        wire = "anthropic" if request.path == ANTHROPIC_PATH else "openai"
        headers: dict[str, str]
        if request.path not in (OPENAI_PATH, ANTHROPIC_PATH):
            status, body, headers = 404, _error(wire, "not_found_error", "no such path"), {}
        else:
            status, body, headers = self._render(fault, wire, request)
            if status == 200:
                headers = self._rate_headers(request, headers)
        headers = {**headers, **fault.headers}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.responses.append(content)
        self._bill(request, status, body)
        self._count_tokens(request, status, body)
        if fault.kind == "truncated":
            content = content[: len(content) // 2]
        head = _head(status, headers, len(content))
        open_call[0] = False
        self.in_flight -= 1
        if fault.kind == "drop":
            writer.write(head + content[: len(content) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        if fault.kind == "drip":
            writer.write(head)
            for index in range(len(content)):
                writer.write(content[index : index + 1])
                await writer.drain()
                await asyncio.sleep(fault.delay_s)
            return True
        writer.write(head + content)
        await writer.drain()
        return True

    def _bill(self, request: Recorded, status: int, body: Any) -> None:
        usage = body.get("usage") if status == 200 and isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        sent = request.body if isinstance(request.body, dict) else {}
        users = [m for m in sent.get("messages") or [] if m.get("role") == "user"]
        prompt = users[-1].get("content") if users else ""
        self.billed.append(
            Bill(
                request.path,
                str(sent.get("model", "")),
                prompt if isinstance(prompt, str) else json.dumps(prompt),
                int(usage.get("prompt_tokens", usage.get("input_tokens", 0))),
                int(usage.get("completion_tokens", usage.get("output_tokens", 0))),
                time.monotonic(),
            )
        )

    def _count_tokens(self, request: Recorded, status: int, body: Any) -> None:
        """Count a call's billed tokens (input and output) in the minute it arrived in."""
        entry = self._counted.pop(id(request), None)
        usage = body.get("usage") if status == 200 and isinstance(body, dict) else None
        if entry is None or not isinstance(usage, dict):
            return
        entry[1] = float(
            int(usage.get("prompt_tokens", usage.get("input_tokens", 0)))
            + int(usage.get("completion_tokens", usage.get("output_tokens", 0)))
        )

    def _render(
        self, fault: Fault, wire: str, request: Recorded
    ) -> tuple[int, Any, dict[str, str]]:
        kind = fault.kind
        if kind == "raw":
            return fault.status, fault.body, {}
        if kind in ("ok", "drop", "truncated", "drip"):
            return 200, self._answer(wire, request), self._success_headers(wire)
        if kind == "missing_fields":
            drop = "choices" if wire == "openai" else "content"
            answer = {k: v for k, v in self._answer(wire, request).items() if k != drop}
            return 200, answer, self._success_headers(wire)
        if kind == "rate_limit":
            kind_name = "requests" if wire == "openai" else "rate_limit_error"
            body = _error(wire, kind_name, "Rate limit reached for requests", "rate_limit_exceeded")
            return 429, body, {}
        if kind == "concurrency":
            message = "Max parallel request limit reached. Too many requests in flight."
            return 429, _error(wire, "rate_limit_error", message, "rate_limit_exceeded"), {}
        if kind == "rate_limit_rpm":
            message = "Rate limit reached on requests per min (RPM)"
            return 429, _error(wire, "requests", message, "rate_limit_exceeded"), {}
        if kind == "rate_limit_tpm":
            message = f"Rate limit reached on tokens per min (TPM): Limit {self.tpm_limit}"
            return 429, _error(wire, "tokens", message, "rate_limit_exceeded"), {}
        if kind == "insufficient_quota":
            message = "You exceeded your current quota, please check your plan and billing."
            return 429, _error("openai", "insufficient_quota", message, fault.body), {}
        if kind == "spend_limit":
            body = _error("anthropic", "rate_limit_error", "Workspace spend limit reached")
            body["error"]["details"] = {"error_code": "enforced_spend_limit_reached"}
            return 429, body, {}
        if kind == "overloaded":
            return 529, _error(wire, "overloaded_error", "Overloaded"), {}
        if kind == "unauthorized":
            key = _presented_key(request.headers)
            said = f"Incorrect API key provided: {key}." if fault.echo_key else "invalid x-api-key"
            error_type = "authentication_error" if wire == "anthropic" else "invalid_request_error"
            return 401, _error(wire, error_type, said, "invalid_api_key"), {}
        status = fault.status
        error_type = "api_error" if status >= 500 else "invalid_request_error"
        return status, _error(wire, error_type, f"simulated HTTP {status}"), {}

    def _answer(self, wire: str, request: Recorded) -> dict[str, Any]:
        number = next(self._ids)
        rng = random.Random(number)
        body = request.body if isinstance(request.body, dict) else {}
        prompt_tokens = _prompt_tokens(body, self.counting)
        turn = self._next_tool_turn() if body.get("tools") else None
        if wire == "openai":
            answer = _openai_answer(body, number, rng, prompt_tokens, turn)
        else:
            answer = _anthropic_answer(body, number, rng, prompt_tokens, turn)
        if self.output_fill is not None:
            _bill_output(answer, wire, body, self.output_fill)
        return answer

    def _success_headers(self, wire: str) -> dict[str, str]:
        number = len(self.requests)
        if wire == "openai":
            return {
                "x-request-id": f"req_fake_{number}",
                "openai-processing-ms": "12",
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "499",
                "x-ratelimit-reset-requests": "120ms",
                "x-ratelimit-limit-tokens": "200000",
                "x-ratelimit-remaining-tokens": "199000",
                "x-ratelimit-reset-tokens": "6m0s",
            }
        now = datetime.now(UTC).replace(microsecond=0)
        reset = (now + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
        return {
            "request-id": f"req_fake_{number}",
            "date": format_datetime(now, usegmt=True),
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": "80000",
            "anthropic-ratelimit-tokens-remaining": "79000",
            "anthropic-ratelimit-tokens-reset": reset,
        }


def _texts(value: Any) -> Iterator[str]:
    """Every string in a request body, keys of mappings included (what a tokenizer sees)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def _prompt_tokens(body: Mapping[str, Any], counting: str) -> int:
    """Input tokens as this server bills them."""
    if counting == "json/4":
        return math.ceil(len(json.dumps(body.get("messages", []))) / 4)
    sent = {k: v for k, v in body.items() if k not in ("model", "max_tokens", "temperature")}
    text = "".join(_texts(sent))
    if counting == "chars/4":
        return math.ceil(len(text) / 4)
    if counting == "bytes":
        return len(text.encode("utf-8"))
    if counting == "tiktoken":  # o200k, from the files aoe ships (never downloaded)
        from aoe.cost.tokens import count_tokens
        from aoe.spec.models import ModelRef

        return count_tokens(ModelRef("openai", "gpt-4o"), text).tokens + 3
    raise ValueError(f"unknown counting {counting!r}")


def _bill_output(answer: dict[str, Any], wire: str, body: Mapping[str, Any], fill: float) -> None:
    """Bill ``fill`` of the request's max tokens as output (never more than it allows)."""
    cap = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
    tokens = max(1, min(cap, math.ceil(cap * fill)))
    usage = answer["usage"]
    if wire == "openai":
        usage["completion_tokens"] = tokens
        usage["total_tokens"] = usage["prompt_tokens"] + tokens
    else:
        usage["output_tokens"] = tokens


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _openai_answer(
    body: Mapping[str, Any],
    number: int,
    rng: random.Random,
    prompt_tokens: int,
    turn: Sequence[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    response_format = body.get("response_format") or {}
    finish = "stop"
    if turn:
        message["tool_calls"] = [
            {
                "id": f"call_{number}_{index}",
                "type": "function",
                "function": {"name": name, "arguments": _arguments_text(arguments)},
            }
            for index, (name, arguments) in enumerate(turn, 1)
        ]
        finish = "tool_calls"
    elif response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
        message["content"] = json.dumps(example_for_schema(schema, rng))
    elif tools and turn is None and (not messages or messages[-1].get("role") != "tool"):
        function = tools[0]["function"]
        arguments = example_for_schema(function.get("parameters") or {}, rng)
        message["tool_calls"] = [
            {
                "id": f"call_{number}",
                "type": "function",
                "function": {"name": function["name"], "arguments": json.dumps(arguments)},
            }
        ]
        finish = "tool_calls"
    else:
        message["content"] = f"Hello from fake {body.get('model', 'model')}."
    completion_tokens = math.ceil(len(json.dumps(message)) / 4)
    return {
        "id": f"chatcmpl-fake{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "unknown"),
        "choices": [{"index": 0, "finish_reason": finish, "message": message, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _anthropic_answer(
    body: Mapping[str, Any],
    number: int,
    rng: random.Random,
    prompt_tokens: int,
    turn: Sequence[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    tools = {t["name"]: t for t in body.get("tools") or []}
    choice = body.get("tool_choice") or {}
    messages = body.get("messages") or []
    last = messages[-1].get("content") if messages else ""
    answered_tool = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    call: str | None = None
    if turn:
        content: list[dict[str, Any]] = [
            {
                "type": "tool_use",
                "id": f"toolu_{number}_{index}",
                "name": name,
                "input": arguments if isinstance(arguments, dict) else json.loads(arguments),
            }
            for index, (name, arguments) in enumerate(turn, 1)
        ]
        return _anthropic_message(body, number, content, "tool_use", prompt_tokens)
    if turn is not None:  # the scripted final answer: the output tool when forced, else text
        call = list(tools)[-1] if choice.get("type") in ("any", "tool") else None
    elif choice.get("type") == "tool":
        call = choice["name"]
    elif tools and not answered_tool:
        call = next(iter(tools))
    elif tools and choice.get("type") == "any":
        call = list(tools)[-1]
    if call is not None:
        arguments = example_for_schema(tools[call].get("input_schema") or {}, rng)
        content = [{"type": "tool_use", "id": f"toolu_{number}", "name": call, "input": arguments}]
        return _anthropic_message(body, number, content, "tool_use", prompt_tokens)
    content = [{"type": "text", "text": f"Hello from fake {body.get('model', 'model')}."}]
    return _anthropic_message(body, number, content, "end_turn", prompt_tokens)


def _anthropic_message(
    body: Mapping[str, Any],
    number: int,
    content: list[dict[str, Any]],
    stop: str,
    prompt_tokens: int,
) -> dict[str, Any]:
    return {
        "id": f"msg_fake{number}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "unknown"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": math.ceil(len(json.dumps(content)) / 4),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _error(wire: str, error_type: str, message: str, code: str | None = None) -> dict[str, Any]:
    if wire == "anthropic":
        return {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_fake_error",
        }
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _presented_key(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth else headers.get("x-api-key", "")


def _head(status: int, headers: Mapping[str, str], length: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded" if status == 529 else "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"content-length: {length}"]
    if not any(k.lower() == "content-type" for k in headers):
        lines.append("content-type: application/json")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_request(reader: asyncio.StreamReader) -> Recorded | None:
    line = await reader.readline()
    if not line.strip():
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raw = await reader.readexactly(int(headers.get("content-length", "0")))
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Recorded(method, path, headers, body, raw)


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """A fresh loopback provider server for one test."""
    server = FakeProvider()
    server.start()
    yield server
    server.stop()


def chat_request(prompt: str = "Say hello.", **overrides: Any) -> CompletionRequest:
    """A small CompletionRequest for tests; keyword arguments replace its fields."""
    fields: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": (Message("user", prompt),),
        "max_tokens": 64,
        "timeout_s": 5.0,
    }
    fields.update(overrides)
    return CompletionRequest(**fields)
