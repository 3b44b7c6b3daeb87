"""Provider plugins: find a client class by its ``type``, build it with its key, pool them.

Providers are plugins in the ``aoe.providers`` entry-point group; the built-ins
(``openai``, ``anthropic``, ``sim``) are registered there too and also known directly, so
a source checkout works without installation.

Adding a provider from another package:

1. Write a class that implements ``aoe.providers.base.LLMClient`` and is built as
   ``cls(config: ProviderConfig, *, api_key: str | None, clock: Clock | None = None)``
   (the built-ins also take ``http``, an ``aiohttp.ClientSession`` to share; aoe never
   passes one). Raise ``aoe.errors.ProviderError`` subclasses (the helpers
   in ``aoe.providers.http`` do the translation for HTTP APIs), and ``ProviderTimeout``
   once ``request.timeout_s`` has passed (``aoe.providers.deadline`` ends a plugin's call
   a second later if it does not).
2. Declare it in that package's ``pyproject.toml``::

       [project.entry-points."aoe.providers"]
       mistral = "aoe_mistral:MistralClient"

3. After ``pip install``, ``type: mistral`` works in ``aoe.yaml``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any

from aoe.clock import Clock
from aoe.errors import ConfigError, MissingKeyError
from aoe.providers.base import LLMClient
from aoe.providers.deadline import Bounded
from aoe.spec.models import ProviderConfig

ENTRY_POINT_GROUP = "aoe.providers"
BUILTINS: Mapping[str, str] = {
    "openai": "aoe.providers.openai:OpenAIClient",
    "anthropic": "aoe.providers.anthropic:AnthropicClient",
    "sim": "aoe.providers.sim:SimulatorClient",
}
SIM_CONFIG = ProviderConfig(name="sim", type="sim")


def known_types() -> dict[str, str]:
    """Every provider type: the built-ins, then installed plugins (which may not replace them)."""
    found = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def provider_class(type_name: str) -> Any:
    """The client class for ``type_name``, imported on first use."""
    target = known_types().get(type_name)
    if target is None:
        known = ", ".join(sorted(known_types()))
        raise ConfigError(
            f"unknown provider type {type_name!r}; known types: {known}",
            hint="fix `type:` in aoe.yaml, or install the package that provides this type",
        )
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"provider type {type_name!r} cannot be loaded from {target!r}: {exc}",
            hint="reinstall the package that provides it",
        ) from exc


def api_key_for(config: ProviderConfig, environ: Mapping[str, str]) -> str | None:
    """The key from ``config.api_key_env``; None when the provider needs none (sim, local)."""
    if config.type == "sim" or not config.api_key_env:
        return None
    value = environ.get(config.api_key_env, "").strip()
    if value and not value.isascii():
        raise MissingKeyError(
            f"${config.api_key_env} holds characters that cannot be sent in an HTTP header",
            hint=f"set {config.api_key_env} to the key exactly as the provider issued it "
            "(a pasted key sometimes carries a typographic quote or dash)",
        )
    if not value:
        raise MissingKeyError(
            f"provider {config.name!r} needs an API key in ${config.api_key_env}, which is not set",
            hint=f"export {config.api_key_env}=..., or run with --simulate to use the "
            "built-in simulator (no key, no network)",
        )
    return value


def create_client(
    config: ProviderConfig,
    *,
    environ: Mapping[str, str] = os.environ,
    clock: Clock | None = None,
    seed: int = 0,
) -> LLMClient:
    """A client for one configured provider; ``seed`` only shapes the simulator."""
    cls = provider_class(config.type)
    api_key = api_key_for(config, environ)
    if config.type == "sim":
        client: LLMClient = cls(config, api_key=None, clock=clock, seed=seed)
    else:
        client = cls(config, api_key=api_key, clock=clock)
    # a plugin is held to the call deadline the built-ins keep themselves
    return client if config.type in BUILTINS else Bounded(client)


class ClientPool:
    """One client per provider name, built on first use and closed together.

    ``sim`` is always available (the built-in simulator), even when ``aoe.yaml`` has no
    entry for it.
    """

    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        *,
        environ: Mapping[str, str] = os.environ,
        clock: Clock | None = None,
        seed: int = 0,
    ) -> None:
        self._configs = dict(configs)
        self._configs.setdefault("sim", SIM_CONFIG)
        self._environ = environ
        self._clock = clock
        self._seed = seed
        self._clients: dict[str, LLMClient] = {}

    def get(self, provider: str) -> LLMClient:
        """The client for ``provider`` (a name in aoe.yaml), created once."""
        client = self._clients.get(provider)
        if client is None:
            config = self._configs.get(provider)
            if config is None:
                known = ", ".join(sorted(self._configs))
                raise ConfigError(
                    f"no provider named {provider!r} is configured; configured: {known}",
                    hint="add it under `providers:` in aoe.yaml, or use --simulate",
                )
            client = create_client(
                config, environ=self._environ, clock=self._clock, seed=self._seed
            )
            self._clients[provider] = client
        return client

    def check_keys(self, providers: Iterable[str]) -> None:
        """Fail before any call when a needed key is missing (MissingKeyError, exit 2)."""
        for name in providers:
            config = self._configs.get(name)
            if config is not None:
                api_key_for(config, self._environ)

    async def aclose(self) -> None:
        """Close every client that was built; later ``get`` calls build fresh ones."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
