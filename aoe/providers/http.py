"""The HTTP boundary of every provider: one pooled aiohttp session, and the one translation.

Everything that can go wrong on the wire becomes a ``ProviderError`` subclass here, raised
``from`` its cause, so no aiohttp exception and no raw status reaches the engine:

    aiohttp.ClientConnectorError (refused, DNS, TLS)   -> ProviderConnectionError  (not sent)
    aiohttp.ConnectionTimeoutError (connecting, or
        waiting for a pooled connection)               -> ProviderConnectionError  (not sent)
    a base_url aiohttp cannot call (scheme, host, port)-> ConfigError              (not sent)
    the call's deadline (``timeout_s``) passed         -> ProviderTimeout          (outcome unknown)
    any other aiohttp.ClientError: the server hung up,
        the body was cut, the socket was reset         -> ProviderConnectionError  (outcome unknown)

The call's one deadline lives here: ``post_json`` bounds the whole call by ``timeout_s``
(aiohttp only bounds connecting and waiting for a pooled connection, whose failure says
the request never left). A pooled connection the server closed while it was idle is
dropped when it is taken from the pool and the call goes out on a new one; only when the
server's close crosses the request on the wire is the outcome unknown.
    429 rate limit                                     -> RateLimitedError
    429 about calls in flight (CONCURRENCY_WORDS)      -> RateLimitedError, concurrency
    429 insufficient_quota / billing codes, 402,
        Anthropic enforced_spend_limit_reached         -> QuotaExceededError
    529, Anthropic overloaded_error                    -> OverloadedError
    408                                                -> ProviderTimeout          (not processed)
    5xx                                                -> ServerError
    401 / 403                                          -> AuthenticationError
    other 4xx (400, 404, 409, 413, 422, ...)           -> BadRequestError
    2xx whose body is not the promised JSON            -> MalformedResponseError

``retry-after-ms`` then ``retry-after`` (seconds or an HTTP date) become ``retry_after_s``;
``x-should-retry`` becomes ``should_retry``. Messages carry the provider, the status and the
provider's own message, with the API key masked should a server ever echo it.

Why aiohttp and not httpx (``python bench/bench_http.py``, bench/README.md): httpx's pool
(httpcore) asks every pooled connection whether its socket is readable on each request,
so its cost per call grows with the calls in flight: 1-4 % of a bare aiohttp client's
calls per second at 100-500 in flight, 0.9-20 ms of CPU per call. httpx over the
``httpx-aiohttp`` transport reaches 17-39 %, and maps a server's hang-up to a connect
timeout, which would lose the sent / never-sent distinction the ledger bills by.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import certifi

from aoe.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    MalformedResponseError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
)
from aoe.providers.ratelimit_headers import parse_http_date
from aoe.spec.models import LimitsSpec

MAX_CONNECTIONS = 512  # a provider without a concurrent_requests cap: 500 in flight and headroom
KEEPALIVE_S = 15.0  # an idle connection is closed by us before most servers close it
CONNECT_TIMEOUT_S = 10.0
EXCERPT_CHARS = 200

# OpenAI puts billing problems in error.type / error.code; Anthropic in error.details.error_code.
QUOTA_MARKERS = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "billing_hard_limit_reached",
        "billing_not_active",
        "billing_error",
        "enforced_spend_limit_reached",
    }
)

# How a 429 says it is about calls in flight at once, not calls or tokens per period:
# LiteLLM's max_parallel_requests ("Max parallel request limit reached"), TGI's
# max_concurrent_requests ("Model is overloaded"), gateways' "too many concurrent requests".
# LiteLLM words its per-minute limits the same way but names them (rpm_limit, tpm_limit),
# and OpenAI names the period ("requests per min (RPM)"), so a 429 that names a period is a
# rate limit whatever else it says. The words are matched in the message, type and code.
CONCURRENCY_WORDS = ("concurren", "parallel request", "in flight", "in-flight", "overloaded")
PERIOD_WORDS = ("rpm", "tpm", "rpd", "per min", "per hour", "per day", "per sec")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Who we are talking to, for messages and hints; ``secret`` is only used for masking."""

    provider: str
    key_env: str | None = None
    secret: str | None = field(default=None, repr=False)

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


@dataclass(frozen=True, slots=True)
class JsonResponse:
    """A 2xx answer whose body parsed as a JSON object (``headers`` ignore case)."""

    status: int
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    content: bytes
    latency_s: float


def pool_size(limits: LimitsSpec) -> int:
    """Connections one provider may hold open: its ``concurrent_requests`` cap, which the
    limiter never lets aoe pass (a learned concurrency is only ever lower), or
    ``MAX_CONNECTIONS`` when it has none."""
    return limits.concurrent_requests or MAX_CONNECTIONS


def env_proxy(url: str) -> str | None:
    """The proxy ``HTTPS_PROXY`` / ``HTTP_PROXY`` name for ``url``, unless ``NO_PROXY``
    exempts its host; read once per provider (aiohttp's ``trust_env`` would read the
    environment and ``.netrc`` in a worker thread on every call)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    proxy = urllib.request.getproxies().get(scheme.lower())
    if proxy is None or urllib.request.proxy_bypass(host):
        return None
    return proxy


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The certificates HTTPS trusts, as under httpx: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``
    when set, else certifi's bundle (so a machine without a system store still verifies).
    Built once per process, for the first ``https://`` provider."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


def make_session(
    *, max_connections: int = MAX_CONNECTIONS, proxy: str | None = None, https: bool = True
) -> aiohttp.ClientSession:
    """The pooled session one provider shares across all its calls: HTTP/1.1 keep-alive,
    at most ``max_connections`` open, through ``proxy`` if one is given; ``https=False``
    (a plain ``http://`` endpoint) skips loading the certificates."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_S,
        ssl=tls_context() if https else True,
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=_timeout(CONNECT_TIMEOUT_S), proxy=proxy
    )


def _timeout(connect_s: float) -> aiohttp.ClientTimeout:
    """aiohttp bounds only connecting and the wait for a pooled connection; the whole call is
    bounded by ``post_json``'s deadline."""
    return aiohttp.ClientTimeout(total=None, connect=connect_s)


async def post_json(
    http: aiohttp.ClientSession,
    endpoint: Endpoint,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    timeout_s: float,
) -> JsonResponse:
    """POST ``body`` and return the parsed 2xx JSON object, or raise a ``ProviderError``.

    ``timeout_s`` bounds the whole call, not only each socket read, so a server that
    trickles bytes cannot hold an agent past its timeout.
    """
    # connecting (or waiting for a pooled connection) gives up before the call's deadline,
    # so a request that never left is told apart from one whose outcome is unknown
    timeout = _timeout(min(timeout_s / 2, CONNECT_TIMEOUT_S))
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with http.post(
                url,
                data=data.encode(),
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                content = await response.read()
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise ConfigError(
            f"provider {endpoint.provider!r}: cannot call {url!r}: {type(exc).__name__}",
            hint="check base_url in aoe.yaml (it needs http:// or https://, a host and a port "
            "up to 65535)",
        ) from exc
    except aiohttp.ClientError as exc:  # before TimeoutError: a connect timeout is both
        raise transport_error(endpoint, exc) from exc
    except TimeoutError as exc:
        raise ProviderTimeout(
            f"no complete answer within {timeout_s:g} s",
            provider=endpoint.provider,
            outcome_unknown=True,
            hint="raise timeout_s for this agent if the model is slow",
        ) from exc
    latency_s = time.perf_counter() - started
    status = response.status
    if not 200 <= status < 300:
        raise status_error(endpoint, status, response.headers, content)
    try:
        parsed = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed(endpoint, status, "body is not JSON", content) from exc
    if not isinstance(parsed, dict):
        raise malformed(endpoint, status, "body is not a JSON object", content)
    return JsonResponse(status, response.headers, parsed, content, latency_s)


def transport_error(endpoint: Endpoint, exc: aiohttp.ClientError) -> ProviderError:
    """A failure below HTTP: whether the request may have been processed decides the flag."""
    provider = endpoint.provider
    detail = endpoint.redact(str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ProviderConnectionError(
            f"timed out connecting: {detail}", provider=provider, outcome_unknown=False
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderConnectionError(
            f"cannot connect: {detail}",
            provider=provider,
            outcome_unknown=False,
            hint="check base_url and the network",
        )
    return ProviderConnectionError(
        f"connection broke during the call: {detail}", provider=provider, outcome_unknown=True
    )


def status_error(
    endpoint: Endpoint, status: int, headers: Mapping[str, str], content: bytes
) -> ProviderError:
    """The error for a non-2xx answer, classified by status and the body's error type/code."""
    body = _json_or_none(content)
    message = endpoint.redact(_provider_message(body) or _excerpt(content) or "(empty body)")
    markers = _markers(body)
    common: dict[str, Any] = {
        "provider": endpoint.provider,
        "status": status,
        "error_type": _error_type(body),
        "retry_after_s": parse_retry_after(headers),
        "should_retry": _should_retry(headers),
    }
    if status == 402 or (400 <= status < 500 and markers & QUOTA_MARKERS):
        return QuotaExceededError(
            message,
            **common,
            hint="the account is out of credit or hit a spend limit; retrying will not help",
        )
    if status == 429:
        return RateLimitedError(
            message,
            **common,
            concurrency=_about_concurrency(message, markers),
            hint="lower this provider's limits in aoe.yaml to avoid 429s",
        )
    if status == 529 or "overloaded_error" in markers:
        return OverloadedError(message, **common)
    if status in (401, 403):
        env = f"${endpoint.key_env}" if endpoint.key_env else "the API key"
        return AuthenticationError(
            message, **common, hint=f"check {env}, or run with --simulate to try without a key"
        )
    if status == 408:
        return ProviderTimeout(message, **common)
    if status >= 500:
        return ServerError(message, **common)
    if 400 <= status < 500:
        hint = "check the model name and base_url" if status == 404 else None
        return BadRequestError(message, **common, hint=hint)
    return malformed(endpoint, status, f"unexpected HTTP status {status}", content)


def malformed(endpoint: Endpoint, status: int | None, what: str, content: bytes) -> ProviderError:
    """An answer that breaks the API's promise: the reason and a short, masked excerpt.

    A 2xx answer was billed although it cannot be read, so its outcome is unknown: the
    call's reservation stays spent (unconfirmed) unless its usage can still be read.
    """
    excerpt = endpoint.redact(_excerpt(content))
    return MalformedResponseError(
        f"{what}: {excerpt!r}" if excerpt else what,
        provider=endpoint.provider,
        status=status,
        hint="the server at base_url may not speak this provider's API",
        outcome_unknown=status is not None and 200 <= status < 300,
    )


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """``retry-after-ms`` first, then ``retry-after`` as seconds or an HTTP date; else None."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and value != float("inf"):
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        when = parse_http_date(raw)
        if when is None:
            return None
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if 0 <= seconds != float("inf") else None


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    raw = (headers.get("x-should-retry") or "").strip().lower()
    return {"true": True, "false": False}.get(raw)


def _json_or_none(content: bytes) -> Mapping[str, Any] | None:
    try:
        parsed = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _provider_message(body: Mapping[str, Any] | None) -> str | None:
    """``error.message`` (OpenAI, Anthropic), else compatible servers' ``message`` / ``detail``."""
    if body is None:
        return None
    err = body.get("error")
    if isinstance(err, Mapping) and isinstance(err.get("message"), str):
        return str(err["message"])
    for candidate in (err, body.get("message"), body.get("detail")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _markers(body: Mapping[str, Any] | None) -> set[str]:
    """Every error type/code the body names (codes may be ints on llama.cpp)."""
    if body is None:
        return set()
    err = body.get("error")
    if not isinstance(err, Mapping):
        return set()
    found = {str(err[k]) for k in ("type", "code") if err.get(k) is not None}
    details = err.get("details")
    if isinstance(details, Mapping) and details.get("error_code") is not None:
        found.add(str(details["error_code"]))
    return found


def _about_concurrency(message: str, markers: set[str]) -> bool:
    """Whether a 429 says too many calls were in flight (see ``CONCURRENCY_WORDS``)."""
    text = " ".join([message, *sorted(markers)]).lower()
    return any(w in text for w in CONCURRENCY_WORDS) and not any(w in text for w in PERIOD_WORDS)


def _error_type(body: Mapping[str, Any] | None) -> str | None:
    """The most specific name the body gives: details.error_code, then code, then type."""
    err = body.get("error") if body is not None else None
    if not isinstance(err, Mapping):
        return None
    details = err.get("details")
    candidates = [
        details.get("error_code") if isinstance(details, Mapping) else None,
        err.get("code") if isinstance(err.get("code"), str) else None,
        err.get("type"),
        err.get("code"),
    ]
    return next((str(c) for c in candidates if c is not None and c != ""), None)


def _excerpt(content: bytes) -> str:
    text = " ".join(content.decode("utf-8", errors="replace").split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."
