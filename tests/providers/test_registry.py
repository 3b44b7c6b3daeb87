"""Providers are found by type, built with their key from the environment, and never leak it."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from pathlib import Path

import pytest

from aoe.errors import AuthenticationError, ConfigError, MissingKeyError, ProviderTimeout
from aoe.providers.anthropic import AnthropicClient
from aoe.providers.base import Completion, CompletionRequest, ModelInfo
from aoe.providers.deadline import Bounded
from aoe.providers.openai import OpenAIClient
from aoe.providers.registry import (
    ENTRY_POINT_GROUP,
    ClientPool,
    create_client,
    known_types,
    provider_class,
)
from aoe.providers.sim import SimulatorClient
from aoe.spec.models import ProviderConfig
from tests.fakeprovider import FakeProvider, Fault, chat_request

SECRET = "sk-test-SECRET-123"


def openai_config(base_url: str | None = None) -> ProviderConfig:
    return ProviderConfig("openai", "openai", "OPENAI_API_KEY", base_url)


def test_missing_key_names_the_variable_and_suggests_simulate():
    """No key set: exit 2, the message names the variable, the hint offers --simulate."""
    with pytest.raises(MissingKeyError) as info:
        create_client(openai_config(), environ={})
    err = info.value
    assert err.exit_code == 2
    assert "OPENAI_API_KEY" in str(err)
    assert "--simulate" in (err.hint or "")
    assert "OPENAI_API_KEY" in (err.hint or "")


def test_empty_key_counts_as_missing():
    """An exported but empty variable is as good as missing."""
    with pytest.raises(MissingKeyError):
        create_client(openai_config(), environ={"OPENAI_API_KEY": "  "})


def test_unknown_type_lists_the_known_types():
    """A typo in `type:` is a config error (exit 2) that lists what would have worked."""
    with pytest.raises(ConfigError) as info:
        create_client(ProviderConfig("x", "opnai", "K"), environ={"K": "v"})
    assert info.value.exit_code == 2
    for name in ("anthropic", "openai", "sim"):
        assert name in str(info.value)


async def test_builtins_are_created_by_type():
    """openai, anthropic and sim are available even from a source checkout."""
    env = {"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b"}
    anthropic = ProviderConfig("claude", "anthropic", "ANTHROPIC_API_KEY")
    clients = [
        create_client(openai_config(), environ=env),
        create_client(anthropic, environ=env),
        create_client(ProviderConfig("sim", "sim", "IGNORED_KEY"), environ={}),
    ]
    assert [type(c) for c in clients] == [OpenAIClient, AnthropicClient, SimulatorClient]
    assert clients[1].name == "claude"
    for client in clients:
        await client.aclose()


async def test_local_server_without_key_variable_needs_no_key():
    """An OpenAI-compatible local server configured without api_key_env runs with no key."""
    client = create_client(ProviderConfig("ollama", "openai", None, "http://127.0.0.1:1/v1"))
    assert isinstance(client, OpenAIClient)
    await client.aclose()


async def test_key_never_appears_in_errors_or_logs(
    fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
):
    """A rejected key, even echoed back by the server, appears in no message, hint, repr or log."""
    fake_provider.script(Fault.unauthorized(echo_key=True))
    client = create_client(
        openai_config(fake_provider.openai_base_url), environ={"OPENAI_API_KEY": SECRET}
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as info:
        await client.complete(chat_request())
    await client.aclose()
    err = info.value
    assert fake_provider.last().headers["authorization"] == f"Bearer {SECRET}"  # it was sent
    assert "Incorrect API key provided: ***" in str(err)  # the echo reached us, masked
    seen = [str(err), repr(err), err.message, err.hint or "", repr(err.args), repr(client)]
    seen += [str(err.__cause__), repr(err.__context__)]
    seen += [record.getMessage() for record in caplog.records]
    assert all(SECRET not in text for text in seen)
    assert "OPENAI_API_KEY" in (err.hint or "")


async def test_anthropic_key_never_appears_in_errors(fake_provider: FakeProvider):
    """The same holds for Anthropic's x-api-key."""
    fake_provider.script(Fault.unauthorized(echo_key=True))
    config = ProviderConfig("anthropic", "anthropic", "ANTHROPIC_API_KEY", fake_provider.base_url)
    client = create_client(config, environ={"ANTHROPIC_API_KEY": SECRET})
    with pytest.raises(AuthenticationError) as info:
        await client.complete(chat_request())
    await client.aclose()
    assert fake_provider.last().headers["x-api-key"] == SECRET
    assert SECRET not in f"{info.value} {info.value!r} {info.value.hint} {client!r}"


def test_missing_key_message_never_shows_other_variables_values():
    """The missing-key error names only the variable, never any value from the environment."""
    with pytest.raises(MissingKeyError) as info:
        create_client(openai_config(), environ={"ANTHROPIC_API_KEY": SECRET})
    assert SECRET not in f"{info.value} {info.value.hint} {info.value!r}"


async def test_pool_builds_each_client_once_and_closes_them():
    """One client per provider name for the whole run; closing the pool closes them all."""
    configs = {"openai": openai_config("http://127.0.0.1:9/v1")}
    async with ClientPool(configs, environ={"OPENAI_API_KEY": "k"}) as pool:
        first = pool.get("openai")
        assert pool.get("openai") is first
        assert isinstance(pool.get("sim"), SimulatorClient)  # always available
        http = first._session()  # the pooled session it owns, opened on first use
        assert not http.closed
    assert http.closed


def test_pool_reports_unknown_provider_names():
    """A model naming an unconfigured provider is a config error naming what is configured."""
    pool = ClientPool({"openai": openai_config()}, environ={})
    with pytest.raises(ConfigError) as info:
        pool.get("mistral")
    assert "openai" in str(info.value)


def test_pool_checks_keys_before_any_call():
    """A run can fail fast, before any agent starts, when a needed key is missing."""
    pool = ClientPool({"openai": openai_config()}, environ={})
    with pytest.raises(MissingKeyError):
        pool.check_keys(["openai"])
    pool.check_keys(["sim"])


def test_third_party_provider_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A package that declares an aoe.providers entry point adds a provider type."""
    (tmp_path / "aoe_echo.py").write_text(
        textwrap.dedent(
            """
            class EchoClient:
                def __init__(self, config, *, api_key, http=None, clock=None):
                    self.name = config.name
                    self.api_key = api_key
            """
        )
    )
    dist = tmp_path / "aoe_echo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aoe-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\necho = aoe_echo:EchoClient\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "aoe_echo", raising=False)
    assert known_types()["echo"] == "aoe_echo:EchoClient"
    client = create_client(ProviderConfig("e", "echo", "ECHO_KEY"), environ={"ECHO_KEY": "k"})
    assert isinstance(client, Bounded)  # held to the call deadline the built-ins keep
    assert type(client.client).__name__ == "EchoClient"
    assert provider_class("openai") is OpenAIClient  # plugins cannot replace built-ins


class _Sleepy:
    """A plugin that never answers, and one whose SDK raises a bare TimeoutError."""

    name = "sleepy"

    async def complete(self, request: CompletionRequest) -> Completion:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def complete_with_tools(self, request: CompletionRequest) -> Completion:
        raise TimeoutError("the SDK's own timer fired")

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(self.name, model)

    async def aclose(self) -> None:
        return None


async def test_a_plugin_that_never_answers_times_out_at_its_deadline() -> None:
    """A plugin cannot hold an agent past timeout_s: the call ends as a retriable timeout."""
    client = Bounded(_Sleepy(), grace_s=0)
    with pytest.raises(ProviderTimeout, match=r"timeout_s=0\.05") as err:
        await client.complete(chat_request(timeout_s=0.05))
    assert err.value.retriable
    assert err.value.outcome_unknown


async def test_a_plugins_own_timeout_error_is_a_provider_timeout() -> None:
    """A bare TimeoutError from a plugin's SDK is retried like any provider timeout."""
    with pytest.raises(ProviderTimeout) as err:
        await Bounded(_Sleepy()).complete_with_tools(chat_request(timeout_s=5))
    assert err.value.outcome_unknown
    assert isinstance(err.value.__cause__, TimeoutError)
