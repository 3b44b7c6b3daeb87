"""What the pooled HTTP transport does on the wire: deadlines, keep-alive, pool sizes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import certifi
import pytest

from aoe.errors import BadRequestError, ProviderConnectionError, ProviderTimeout
from aoe.providers.http import tls_context
from aoe.providers.openai import OpenAIClient
from aoe.spec.models import LimitsSpec, ProviderConfig
from tests.fakeprovider import FakeProvider, Fault, chat_request

DEADLINE_S = 0.3
ANSWERED_TIMEOUT_S = 30.0  # far beyond any loopback answer, however loaded the machine


def capped_client(fake: FakeProvider, concurrent: int | None) -> OpenAIClient:
    limits = LimitsSpec(concurrent_requests=concurrent)
    config = ProviderConfig("local", "openai", None, fake.openai_base_url, limits=limits)
    return OpenAIClient(config, api_key="sk-transport-secret")


async def test_an_answer_trickling_past_the_deadline_is_a_timeout(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """A server that sends a byte every 50 ms never holds an agent past its timeout_s,
    though no single read ever waits long."""
    fake_provider.script(Fault.drip(every_s=0.05))  # ~400 bytes: 20 s to the end
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        await openai_client.complete(chat_request(timeout_s=DEADLINE_S))
    assert time.monotonic() - started < 5.0  # the deadline, not the 20 s of the drip
    assert info.value.outcome_unknown is True
    assert info.value.retriable


async def test_a_connection_the_server_closed_while_idle_is_replaced_transparently(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """A server's keep-alive timeout closing aoe's pooled connection between two calls
    costs nothing: the next call goes out on a new connection and succeeds."""
    await openai_client.complete(chat_request("first"))
    assert await fake_provider.close_idle() == 1
    await asyncio.sleep(0.05)  # time passes between the calls, as it does when a server times out
    second = await openai_client.complete(chat_request("second"))
    assert second.text
    assert fake_provider.calls() == 2  # nothing was sent down the dead connection
    assert fake_provider.connections == 2


async def test_calls_share_kept_alive_connections(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """Calls one after another reuse one connection: no connect per call."""
    for _ in range(5):
        await openai_client.complete(chat_request())
    assert fake_provider.connections == 1


async def test_the_pool_holds_no_more_connections_than_concurrent_requests(
    fake_provider: FakeProvider,
):
    """A provider capped at 2 concurrent requests never sees more than 2 connections, even
    when more calls than that are handed to its client at once."""
    fake_provider.script(*[Fault.ok(delay_s=0.1)] * 6)
    client = capped_client(fake_provider, 2)
    try:
        answers = await asyncio.gather(
            *(client.complete(chat_request(timeout_s=ANSWERED_TIMEOUT_S)) for _ in range(6))
        )
    finally:
        await client.aclose()
    assert len(answers) == 6
    assert fake_provider.connections == 2
    assert fake_provider.peak_in_flight == 2


async def test_waiting_too_long_for_a_pooled_connection_was_never_sent(
    fake_provider: FakeProvider,
):
    """A call that cannot get a connection before its deadline fails as a retriable error
    that never reached the provider, so it is not charged."""
    fake_provider.script(Fault.silent())
    client = capped_client(fake_provider, 1)
    try:
        holder = asyncio.create_task(client.complete(chat_request(timeout_s=ANSWERED_TIMEOUT_S)))
        await fake_provider.received(1)  # the one connection is now busy
        with pytest.raises(ProviderConnectionError) as info:
            await client.complete(chat_request(timeout_s=DEADLINE_S))
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
    finally:
        await client.aclose()
    assert info.value.outcome_unknown is False
    assert info.value.retriable
    assert fake_provider.calls() == 1
    assert "sk-transport-secret" not in str(info.value)


async def test_a_hang_up_after_the_request_left_may_have_been_billed(
    openai_client: OpenAIClient, fake_provider: FakeProvider
):
    """A server that read the call and closed without answering may have processed it:
    the error says its outcome is unknown (the reservation stays spent), and it is
    retriable."""
    await openai_client.complete(chat_request())  # the hang-up comes on a reused connection
    fake_provider.script(Fault.hang_up())
    with pytest.raises(ProviderConnectionError) as info:
        await openai_client.complete(chat_request())
    assert info.value.outcome_unknown is True
    assert info.value.retriable
    assert "sk-test" not in str(info.value)


async def test_calls_go_through_the_proxy_the_environment_names(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
):
    """HTTP_PROXY is honoured (read once when the client is built), and NO_PROXY exempts."""
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake_provider.base_url)  # the loopback server plays proxy
    config = ProviderConfig("far", "openai", None, "http://provider.invalid/v1")
    client = OpenAIClient(config, api_key=None)
    try:
        with pytest.raises(BadRequestError):  # the fake answers 404 to a proxied path
            await client.complete(chat_request(timeout_s=ANSWERED_TIMEOUT_S))
    finally:
        await client.aclose()
    assert fake_provider.last().path == "http://provider.invalid/v1/chat/completions"
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    exempt = OpenAIClient(
        ProviderConfig("near", "openai", None, fake_provider.openai_base_url), api_key=None
    )
    try:
        answer = await exempt.complete(chat_request(timeout_s=ANSWERED_TIMEOUT_S))
    finally:
        await exempt.aclose()
    assert answer.text
    assert fake_provider.last().path == "/v1/chat/completions"


def test_https_trusts_certifi_or_the_bundle_ssl_cert_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """HTTPS provider calls trust the same certificates as before: SSL_CERT_FILE when set,
    else certifi's bundle, whatever the machine's own store holds."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    bundle = Path(certifi.where()).read_text()
    first = bundle[bundle.index("-----BEGIN") : bundle.index("-----END CERTIFICATE-----") + 25]
    (tmp_path / "one.pem").write_text(first + "\n")
    tls_context.cache_clear()
    try:
        assert len(tls_context().get_ca_certs()) == bundle.count("-----BEGIN CERTIFICATE-----")
        tls_context.cache_clear()
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "one.pem"))
        assert len(tls_context().get_ca_certs()) == 1
    finally:
        tls_context.cache_clear()
