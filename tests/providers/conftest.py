"""Fixtures for provider tests: the loopback fake provider server and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aoe.providers.anthropic import AnthropicClient
from aoe.providers.openai import OpenAIClient
from aoe.spec.models import ProviderConfig
from tests.fakeprovider import FakeProvider, fake_provider

__all__ = ["anthropic_client", "fake_provider", "openai_client"]

TEST_KEY = "sk-test-key-0000"


@pytest.fixture
async def openai_client(fake_provider: FakeProvider) -> AsyncIterator[OpenAIClient]:
    """An OpenAI client whose base_url is the fake server."""
    config = ProviderConfig(
        name="openai",
        type="openai",
        api_key_env="OPENAI_API_KEY",
        base_url=fake_provider.openai_base_url,
    )
    client = OpenAIClient(config, api_key=TEST_KEY)
    yield client
    await client.aclose()


@pytest.fixture
async def anthropic_client(fake_provider: FakeProvider) -> AsyncIterator[AnthropicClient]:
    """An Anthropic client (default API version) whose base_url is the fake server."""
    config = ProviderConfig(
        name="anthropic",
        type="anthropic",
        api_key_env="ANTHROPIC_API_KEY",
        base_url=fake_provider.base_url,
    )
    client = AnthropicClient(config, api_key=TEST_KEY)
    yield client
    await client.aclose()
