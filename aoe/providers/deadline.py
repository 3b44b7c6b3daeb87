"""The call deadline for provider clients aoe did not write (plugins).

The built-in clients enforce ``request.timeout_s`` themselves (``aoe.providers.http``,
the simulator) and raise ``ProviderTimeout``. A plugin may forget, or raise a bare
``TimeoutError`` from its SDK: ``Bounded`` holds it to the same contract, so a call
never outlives its deadline (plus ``GRACE_S`` for the plugin's own timer to fire first)
and a timeout is always a retriable ``ProviderTimeout`` whose outcome is unknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Final

from aoe.errors import ProviderTimeout
from aoe.providers.base import Completion, CompletionRequest, LLMClient, ModelInfo

#: How long past ``timeout_s`` a plugin's call may run before aoe ends it.
GRACE_S: Final = 1.0


class Bounded:
    """A plugin client, its calls bounded by their deadline."""

    def __init__(self, client: LLMClient, *, grace_s: float = GRACE_S) -> None:
        self.client = client
        self.name = client.name
        self.grace_s = grace_s

    async def complete(self, request: CompletionRequest) -> Completion:
        return await self._bounded(self.client.complete(request), request)

    async def complete_with_tools(self, request: CompletionRequest) -> Completion:
        return await self._bounded(self.client.complete_with_tools(request), request)

    def model_info(self, model: str) -> ModelInfo:
        return self.client.model_info(model)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _bounded(self, call: Awaitable[Completion], request: CompletionRequest) -> Completion:
        try:
            async with asyncio.timeout(request.timeout_s + self.grace_s):
                return await call
        except TimeoutError as exc:
            raise ProviderTimeout(
                f"no answer within timeout_s={request.timeout_s:g}",
                provider=self.name,
                outcome_unknown=True,
                hint="raise timeout_s for this agent, or check the provider's status",
            ) from exc
