"""What the OpenAI and Anthropic clients share: one JSON POST per call over a pooled session.

A subclass says where to post (``path``), how to authenticate (``auth_headers``), how a
request becomes a body (``build_body``) and how a response becomes a ``Completion``
(``parse``); this class sends it, turns an answer that breaks the API's promise into a
``MalformedResponseError`` with the status and an excerpt, and warns once when a server
sends no usage.

Each client holds its own aiohttp session (one pool per provider endpoint), opened on the
first call, with as many connections as the provider's ``concurrent_requests`` cap.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import aiohttp

from aoe.clock import Clock
from aoe.providers.base import Completion, CompletionRequest, ModelInfo, Usage
from aoe.providers.http import (
    Endpoint,
    JsonResponse,
    env_proxy,
    make_session,
    malformed,
    pool_size,
    post_json,
)
from aoe.spec.models import ProviderConfig

log = logging.getLogger("aoe.providers")


class JsonApiClient:
    """The transport half of an ``LLMClient`` whose API is one JSON POST per call."""

    default_base_url: ClassVar[str]
    path: ClassVar[str]
    answer_kind: ClassVar[str]  # what a valid response is, for error messages

    def __init__(
        self,
        config: ProviderConfig,
        *,
        api_key: str | None,
        http: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
    ) -> None:
        del clock  # latency is measured on the wall clock of the real call
        self.name = config.name
        self.config = config
        self._url = (config.base_url or self.default_base_url).rstrip("/") + self.path
        self._endpoint = Endpoint(config.name, config.api_key_env, api_key)
        self._headers = {"content-type": "application/json", **self.auth_headers(api_key)}
        self._owns_http = http is None
        self._http = http  # opened on the first call, inside the running loop
        self._pool_size = pool_size(config.limits)
        self._proxy = env_proxy(self._url)
        self._warned_no_usage = False

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """Headers that carry the key (and the API version); never logged."""
        raise NotImplementedError

    def build_body(self, request: CompletionRequest, *, with_tools: bool) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, request: CompletionRequest, response: JsonResponse) -> Completion:
        raise NotImplementedError

    def model_info(self, model: str) -> ModelInfo:
        raise NotImplementedError

    def usage_of(self, body: Any) -> Usage:
        """The ``usage`` object of a response body in aoe's convention."""
        raise NotImplementedError

    def salvage_usage(self, response: JsonResponse) -> Usage | None:
        """The usage of an answer that is otherwise unreadable, if that part is intact."""
        try:
            return self.usage_of(response.body["usage"])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return None

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer ``request`` (structured output when it has ``output_schema``)."""
        return await self._call(request, with_tools=False)

    async def complete_with_tools(self, request: CompletionRequest) -> Completion:
        """One turn with ``request.tools`` offered; the answer may hold ``tool_calls``."""
        return await self._call(request, with_tools=True)

    async def aclose(self) -> None:
        """Close the session this client opened; one passed in belongs to its owner."""
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.close()

    def _session(self) -> aiohttp.ClientSession:
        http = self._http
        if http is None:
            http = self._http = make_session(
                max_connections=self._pool_size,
                proxy=self._proxy,
                https=self._url.startswith("https://"),
            )
        return http

    def _masked(self, completion: Completion) -> Completion:
        """An answer that repeats the API key (a misbehaving server or proxy) never carries
        it into outputs, the ledger or the next prompt."""
        redact = self._endpoint.redact
        if redact(completion.text) == completion.text and all(
            redact(c.arguments_json) == c.arguments_json for c in completion.tool_calls
        ):
            return completion
        calls = tuple(
            dataclasses.replace(c, arguments_json=redact(c.arguments_json))
            for c in completion.tool_calls
        )
        return dataclasses.replace(completion, text=redact(completion.text), tool_calls=calls)

    async def _post(self, body: dict[str, Any], *, timeout_s: float) -> JsonResponse:
        """The call's one HTTP exchange (bench/bench_http.py puts other transports here)."""
        return await post_json(
            self._session(),
            self._endpoint,
            self._url,
            headers=self._headers,
            body=body,
            timeout_s=timeout_s,
        )

    async def _call(self, request: CompletionRequest, *, with_tools: bool) -> Completion:
        response = await self._post(
            self.build_body(request, with_tools=with_tools), timeout_s=request.timeout_s
        )
        try:
            completion = self.parse(request, response)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            error = malformed(
                self._endpoint,
                response.status,
                f"not {self.answer_kind} ({reason})",
                response.content,
            )
            error.usage = self.salvage_usage(response)
            raise error from exc
        completion = self._masked(completion)
        if not completion.usage_reported and not self._warned_no_usage:
            self._warned_no_usage = True
            log.warning(
                "provider %s sent no usage; each call keeps its reserved cost as unconfirmed",
                self.name,
            )
        return completion


def token_count(value: Any) -> int:
    """A usage figure from the wire: absent is 0, anything but a non-negative int is bad."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"token count {value!r} is not a non-negative integer")
    return value
