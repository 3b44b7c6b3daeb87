"""What a run needs besides the workflows: the services of ``aoe.services``, bundled.

Whatever is not given is its null object, so the engine runs as a library with nothing
attached (no ledger, no limits, no prices, no budgets) and the app plugs in real ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aoe.clock import Clock, SystemClock
from aoe.monitor.events import EventBus
from aoe.providers.base import LLMClient, ModelInfo
from aoe.services import (
    BudgetBook,
    ClientSource,
    FreePrices,
    LimiterSource,
    NoBudgets,
    NoLimits,
    NullRecorder,
    PriceSource,
    Recorder,
    ToolSource,
)
from aoe.tools import PrivateTools


@dataclass(frozen=True, slots=True)
class Runtime:
    """The services one run uses.

    ``seed`` makes simulated runs and retry jitter repeatable; ``rate_limit_timeout_s``
    bounds how long one call waits for a rate-limit permit.
    """

    clients: ClientSource
    events: EventBus = field(default_factory=EventBus)
    clock: Clock = field(default_factory=SystemClock)
    limiters: LimiterSource = field(default_factory=NoLimits)
    prices: PriceSource = field(default_factory=FreePrices)
    budgets: BudgetBook = field(default_factory=NoBudgets)
    recorder: Recorder = field(default_factory=NullRecorder)
    tools: ToolSource = field(default_factory=PrivateTools)
    seed: int = 0
    rate_limit_timeout_s: float = 600.0
    _infos: dict[tuple[int, str], ModelInfo] = field(default_factory=dict, repr=False)

    def rng(self, *parts: object) -> random.Random:
        """A random source that depends only on the seed and ``parts`` (e.g. agent, attempt)."""
        return random.Random(f"{self.seed}:" + ":".join(str(p) for p in parts))

    def model_info(self, client: LLMClient, model: str) -> ModelInfo:
        """``client.model_info(model)``, asked once per run (it is fixed for a client)."""
        key = (id(client), model)
        info = self._infos.get(key)
        if info is None:
            info = self._infos[key] = client.model_info(model)
        return info
