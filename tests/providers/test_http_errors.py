"""Every way a provider call can fail becomes the right ProviderError and retriability."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

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
from aoe.providers.anthropic import AnthropicClient
from aoe.providers.base import Usage
from aoe.providers.http import Endpoint, parse_retry_after, status_error
from aoe.providers.openai import OpenAIClient
from aoe.retry import decide
from aoe.spec.models import ProviderConfig, RetrySpec
from tests.fakeprovider import FakeProvider, Fault, chat_request


@dataclass(frozen=True)
class Case:
    name: str
    fault: Fault
    error: type[ProviderError]
    wires: tuple[str, ...] = ("openai", "anthropic")
    status: int | None = None
    outcome_unknown: bool = False


CASES = [
    Case("429 rate limit", Fault.rate_limit(retry_after="2"), RateLimitedError, status=429),
    Case("429 quota", Fault.insufficient_quota(), QuotaExceededError, ("openai",), 429),
    Case(
        "429 billing code",
        Fault.insufficient_quota("credit_balance_exhausted"),
        QuotaExceededError,
        ("openai",),
        429,
    ),
    Case("429 spend limit", Fault.spend_limit(), QuotaExceededError, ("anthropic",), 429),
    Case("500", Fault.error(500), ServerError, status=500),
    Case("502", Fault.error(502), ServerError, status=502),
    Case("503", Fault.error(503), ServerError, status=503),
    Case("504", Fault.error(504), ServerError, status=504),
    Case("529 overloaded", Fault.overloaded(), OverloadedError, status=529),
    Case("401", Fault.unauthorized(), AuthenticationError, status=401),
    Case("403", Fault.error(403), AuthenticationError, status=403),
    Case("400", Fault.error(400), BadRequestError, status=400),
    Case("404", Fault.error(404), BadRequestError, status=404),
    Case("409", Fault.error(409), BadRequestError, status=409),
    Case("413", Fault.error(413), BadRequestError, status=413),
    Case("422", Fault.error(422), BadRequestError, status=422),
    Case("408", Fault.error(408), ProviderTimeout, status=408),
    Case("hang", Fault.silent(), ProviderTimeout, outcome_unknown=True),
    Case("dropped", Fault.drop(), ProviderConnectionError, outcome_unknown=True),
    Case("hung up", Fault.hang_up(), ProviderConnectionError, outcome_unknown=True),
    # a 2xx answer was billed even if it cannot be read: its outcome is unknown
    Case(
        "truncated JSON",
        Fault.truncated(),
        MalformedResponseError,
        status=200,
        outcome_unknown=True,
    ),
    Case("not JSON", Fault.not_json(), MalformedResponseError, status=200, outcome_unknown=True),
    Case(
        "missing fields",
        Fault.missing_fields(),
        MalformedResponseError,
        status=200,
        outcome_unknown=True,
    ),
]
RETRIABLE = {
    RateLimitedError,
    ServerError,
    OverloadedError,
    ProviderTimeout,
    ProviderConnectionError,
    MalformedResponseError,
}
PARAMS = [
    pytest.param(case, wire, id=f"{wire}-{case.name}") for case in CASES for wire in case.wires
]
ANSWERED_TIMEOUT_S = 30.0  # far beyond any loopback answer, however loaded the machine
SILENCE_TIMEOUT_S = 0.3  # only a server that never answers meets it: nothing races it


def client_for(wire: str, fake: FakeProvider) -> OpenAIClient | AnthropicClient:
    if wire == "openai":
        config = ProviderConfig("openai", "openai", "OPENAI_API_KEY", fake.openai_base_url)
        return OpenAIClient(config, api_key="sk-test")
    config = ProviderConfig("anthropic", "anthropic", "ANTHROPIC_API_KEY", fake.base_url)
    return AnthropicClient(config, api_key="sk-test")


@pytest.mark.parametrize(("case", "wire"), PARAMS)
async def test_failure_maps_to_error_class(case: Case, wire: str, fake_provider: FakeProvider):
    """Each provider failure reaches the engine as one ProviderError class, with its details."""
    client = client_for(wire, fake_provider)
    try:
        if case.fault.kind == "silent":
            # one answered call first, so the silent one reuses its open connection and its
            # deadline covers nothing but waiting for an answer that never comes
            await client.complete(chat_request(timeout_s=ANSWERED_TIMEOUT_S))
        fake_provider.script(case.fault)
        timeout_s = SILENCE_TIMEOUT_S if case.fault.kind == "silent" else ANSWERED_TIMEOUT_S
        with pytest.raises(ProviderError) as info:
            await client.complete(chat_request(timeout_s=timeout_s))
    finally:
        await client.aclose()
    err = info.value
    assert type(err) is case.error
    assert err.retriable is (case.error in RETRIABLE)
    assert err.status == case.status
    assert err.outcome_unknown is case.outcome_unknown
    assert err.provider == wire
    assert wire in str(err)
    if case.status is not None:
        assert f"HTTP {case.status}" in str(err)
    if case.status is None:
        assert isinstance(err.__cause__, aiohttp.ClientError | TimeoutError)


def test_every_provider_error_class_is_produced_by_some_case():
    """No ProviderError subclass is dead: each is what some real failure becomes."""
    produced = {case.error for case in CASES}
    assert produced == set(ProviderError.__subclasses__())


async def test_connection_refused_is_a_connection_error_with_known_outcome():
    """A server that is not listening fails fast as a retriable error that cost nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ProviderConfig("local", "openai", None, f"http://127.0.0.1:{port}/v1")
    client = OpenAIClient(config, api_key=None)
    try:
        with pytest.raises(ProviderConnectionError) as info:
            await client.complete(chat_request())
    finally:
        await client.aclose()
    assert info.value.outcome_unknown is False
    assert info.value.retriable
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


@pytest.mark.parametrize(
    "base_url",
    ["localhost:8080/v1", "ftp://127.0.0.1/v1", "http://127.0.0.1:70000/v1", "http:///v1"],
)
async def test_bad_base_url_is_a_config_error(base_url: str):
    """A base_url without http(s)://, a host or a valid port is a configuration mistake
    (exit 2), not a provider failure to retry."""
    client = OpenAIClient(ProviderConfig("x", "openai", None, base_url), api_key=None)
    try:
        with pytest.raises(ConfigError) as info:
            await client.complete(chat_request())
    finally:
        await client.aclose()
    assert info.value.exit_code == 2
    assert "base_url" in (info.value.hint or "")


async def test_error_message_carries_provider_status_and_provider_message(
    fake_provider: FakeProvider,
):
    """The user sees which provider failed, the HTTP status, and what the provider said."""
    client = client_for("openai", fake_provider)
    fake_provider.script(Fault.insufficient_quota())
    try:
        with pytest.raises(QuotaExceededError) as info:
            await client.complete(chat_request())
    finally:
        await client.aclose()
    text = str(info.value)
    assert "openai (HTTP 429)" in text
    assert "exceeded your current quota" in text
    assert info.value.error_type == "insufficient_quota"
    assert "retrying will not help" in (info.value.hint or "")


async def test_malformed_answer_names_status_and_shows_an_excerpt(fake_provider: FakeProvider):
    """A body that breaks the API's promise says what was wrong and shows a short excerpt."""
    client = client_for("openai", fake_provider)
    fake_provider.script(Fault.missing_fields())
    try:
        with pytest.raises(MalformedResponseError) as info:
            await client.complete(chat_request())
    finally:
        await client.aclose()
    assert "missing field 'choices'" in str(info.value)
    assert "chat.completion" in str(info.value)
    assert len(info.value.message) < 400


async def test_should_retry_false_vetoes_a_retry(fake_provider: FakeProvider):
    """x-should-retry: false on a 503 is obeyed: the error says so and the policy stops."""
    client = client_for("anthropic", fake_provider)
    fake_provider.script(Fault.error(503, headers={"x-should-retry": "false"}))
    try:
        with pytest.raises(ServerError) as info:
            await client.complete(chat_request())
    finally:
        await client.aclose()
    assert info.value.should_retry is False
    decision = decide(info.value, attempt=1, spec=RetrySpec(), rng=random.Random(0))
    assert decision.retry is False
    assert "x-should-retry" in decision.reason


async def test_retry_after_ms_wins_over_retry_after(fake_provider: FakeProvider):
    """retry-after-ms is more precise than retry-after, so it is the one used."""
    client = client_for("openai", fake_provider)
    fake_provider.script(Fault.rate_limit(retry_after="9", retry_after_ms="1500"))
    try:
        with pytest.raises(RateLimitedError) as info:
            await client.complete(chat_request())
    finally:
        await client.aclose()
    assert info.value.retry_after_s == 1.5


def test_retry_after_parses_seconds_dates_and_ignores_garbage():
    """retry-after may be seconds or an HTTP date; nonsense is ignored rather than trusted."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after": later}, now=now) == 7.0
    assert parse_retry_after({"retry-after-ms": "20"}) == 0.02
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0
    assert parse_retry_after({"retry-after": "-5"}) is None
    assert parse_retry_after({"retry-after": "tomorrow"}) is None
    assert parse_retry_after({}) is None


def test_llama_cpp_numeric_error_code_is_understood():
    """Compatible servers with an integer error.code still map by status, never crash."""
    body = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
    err = status_error(Endpoint("local"), 503, {}, body)
    assert isinstance(err, ServerError)
    assert err.error_type == "unavailable_error"
    assert "Loading model" in err.message


def test_fastapi_style_detail_message_is_shown():
    """vLLM-style {"detail": ...} error bodies still give the user the server's words."""
    err = status_error(Endpoint("vllm"), 404, {}, b'{"detail":"model foo not found"}')
    assert isinstance(err, BadRequestError)
    assert "model foo not found" in err.message


def test_overloaded_error_type_is_overloaded_whatever_the_status():
    """Anthropic's overloaded_error is a load problem to back off from, even under a 500."""
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert isinstance(status_error(Endpoint("a"), 500, {}, body), OverloadedError)


def test_a_402_is_a_quota_problem():
    """Payment Required is a billing stop, not a request to fix."""
    assert isinstance(status_error(Endpoint("a"), 402, {}, b""), QuotaExceededError)


async def test_a_json_array_body_is_malformed(openai_client: OpenAIClient, fake_provider):
    """A 200 whose JSON is not an object breaks the API promise and is reported as such."""
    fake_provider.script(Fault.reply([1, 2]))
    with pytest.raises(MalformedResponseError) as info:
        await openai_client.complete(chat_request())
    assert "not a JSON object" in info.value.message


def test_endpoint_repr_never_shows_the_secret():
    """The masked key travels with the endpoint but never prints."""
    endpoint = Endpoint("openai", "OPENAI_API_KEY", "sk-live-abc")
    assert "sk-live-abc" not in repr(endpoint)
    assert endpoint.redact("key sk-live-abc here") == "key *** here"


async def test_usage_of_an_unreadable_answer_is_still_billed_exactly(
    openai_client: OpenAIClient, fake_provider: FakeProvider
) -> None:
    """An answer missing `choices` but carrying `usage` is charged at that usage."""
    body = {"id": "x", "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
    fake_provider.script(Fault.reply(body))
    with pytest.raises(MalformedResponseError) as info:
        await openai_client.complete(chat_request())
    assert info.value.usage == Usage(input_tokens=11, output_tokens=7)


@pytest.mark.parametrize(
    ("body", "concurrency"),
    [
        ({"error": {"message": "Max parallel request limit reached. active requests: 8."}}, True),
        ({"error": "Model is overloaded", "error_type": "overloaded"}, True),  # TGI
        ({"error": {"message": "Too many concurrent requests", "type": "requests"}}, True),
        ({"error": {"message": "slow down", "code": "concurrency_limit_exceeded"}}, True),
        (  # LiteLLM says "parallel" for its per-minute limits too, and names them
            {
                "error": {
                    "message": "Max parallel request limit reached Hit limit for api_key: "
                    "x. tpm_limit: 200, current_tpm 80 , rpm_limit: 4 current rpm 4"
                }
            },
            False,
        ),
        (
            {
                "error": {
                    "message": "Rate limit reached for gpt-4o on requests per min (RPM): "
                    "Limit 3, Used 3, Requested 1.",
                    "code": "rate_limit_exceeded",
                }
            },
            False,
        ),
        ({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}, False),
    ],
)
def test_a_429_about_calls_in_flight_is_told_from_one_about_a_period(
    body: dict[str, object], concurrency: bool
) -> None:
    """A 429 that says too many calls are in flight is a concurrency limit (aoe lowers its
    concurrency for it); one that names a per-period limit is a rate limit."""
    import json

    error = status_error(Endpoint("gw"), 429, {}, json.dumps(body).encode())
    assert isinstance(error, RateLimitedError)
    assert error.concurrency is concurrency
    assert error.limited == ("concurrency" if concurrency else "rate_limit")
