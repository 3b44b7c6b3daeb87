"""What a run needs besides the workflows: clients, limits, prices, budgets, ledger, events.

The engine and the agent pipeline only see these interfaces. Each has a no-op
implementation so the engine runs as a library with nothing attached (no ledger, no
limits, no prices), and the CLI plugs in the real ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from aoe.clock import Clock, SystemClock
from aoe.monitor.events import EventBus
from aoe.providers.base import LLMClient, RateLimitSnapshot, Usage
from aoe.spec.models import AgentSpec, ModelRef, WorkflowSpec

if TYPE_CHECKING:
    from aoe.tools.toolbox import Toolbox


class ClientSource(Protocol):
    """Hands out the client that serves a model (the simulator under ``--simulate``)."""

    def client_for(self, model: ModelRef) -> LLMClient: ...

    async def aclose(self) -> None: ...


class ToolSource(Protocol):
    """Hands each agent its tools (see ``aoe.tools.RunTools``); closed at the end of the run."""

    async def for_agent(self, workflow: WorkflowSpec, agent: AgentSpec) -> Toolbox: ...

    async def aclose(self) -> None: ...


class Permit(Protocol):
    """What a rate limiter hands out; given back with the true token count."""


class Limiter(Protocol):
    """Multi-tier rate limiting for one provider key (see ``aoe.ratelimit``)."""

    name: str

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> Any: ...

    def settle(self, reservation: Any, actual_tokens: int) -> None: ...

    def release(self, reservation: Any) -> None: ...

    def observe(self, snapshot: RateLimitSnapshot) -> None: ...

    def pause(self, seconds: float) -> None: ...

    def note_429(self) -> None: ...


class LimiterSource(Protocol):
    def for_model(self, provider: str, model: str) -> Limiter: ...


class PriceSource(Protocol):
    """Prices per model (see ``aoe.cost.pricing``)."""

    def cost_usd(self, model: ModelRef, usage: Usage) -> Decimal | None: ...

    def max_cost_usd(
        self, model: ModelRef, input_tokens: int, max_output_tokens: int
    ) -> Decimal | None: ...


class _NoLimit:
    name = "none"

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> None:
        return None

    def settle(self, reservation: Any, actual_tokens: int) -> None:
        return None

    def release(self, reservation: Any) -> None:
        return None

    def observe(self, snapshot: RateLimitSnapshot) -> None:
        return None

    def pause(self, seconds: float) -> None:
        return None

    def note_429(self) -> None:
        return None


class NoLimits:
    """No rate limiting at all: every acquire is granted at once."""

    _limit = _NoLimit()

    def for_model(self, provider: str, model: str) -> Limiter:
        return self._limit


class FreePrices:
    """Every call costs nothing (a library user who tracks no money)."""

    def cost_usd(self, model: ModelRef, usage: Usage) -> Decimal:
        return Decimal(0)

    def max_cost_usd(self, model: ModelRef, input_tokens: int, max_output_tokens: int) -> Decimal:
        return Decimal(0)


@dataclass
class Runtime:
    """The services one run uses. ``seed`` makes simulated runs and jitter repeatable."""

    clients: ClientSource
    events: EventBus = field(default_factory=EventBus)
    clock: Clock = field(default_factory=SystemClock)
    limiters: LimiterSource = field(default_factory=NoLimits)
    prices: PriceSource = field(default_factory=FreePrices)
    budgets: Any = None
    ledger: Any = None
    seed: int = 0
    rate_limit_timeout_s: float = 600.0
    tools: ToolSource | None = None  # None: an agent with tools gets a toolbox of its own

    def rng(self, *parts: object) -> random.Random:
        """A random source that depends only on the seed and ``parts`` (e.g. agent, attempt)."""
        return random.Random(f"{self.seed}:" + ":".join(str(p) for p in parts))
