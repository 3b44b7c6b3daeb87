"""Prices per model and the USD cost of a call, from genai-prices' bundled snapshot.

Why genai-prices: a maintained table of OpenAI and Anthropic prices (cached input, cache
writes, long-context tiers, dated changes) instead of one we would keep by hand. It is used
**offline only**: its bundled snapshot, imported lazily; ``UpdatePrices`` (which fetches
from GitHub every hour) is never started.

Traps handled here (see shared/reference/providers.md B2):

- genai-prices wants ``input_tokens`` to *include* cache reads and writes. Our ``Usage``
  already counts that way (providers normalise Anthropic's disjoint buckets), so it is
  passed through unchanged.
- Provider ids: an aoe provider key is looked up in genai-prices only when it is known to
  be the vendor's own endpoint (``openai`` -> ``openai``, ``anthropic`` -> ``anthropic``,
  or see ``PriceBook.from_config``); a local OpenAI-compatible server that happens to
  serve a model called ``gpt-4o`` is not billed at OpenAI's price.

Resolution order: a user override from ``pricing:`` in aoe.yaml (key ``provider/model``),
then ``sim/*`` (free), then genai-prices. A model's price is looked up once per process
and every call's cost is arithmetic on it; only models whose price has tiers (long
prompts cost more) go through genai-prices' calculator per call. Amounts are ``Decimal``
USD, so sums over many calls are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aoe.errors import ConfigError
from aoe.providers.base import Usage
from aoe.spec.models import Config, ModelRef, PriceSpec

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo

__all__ = ["DEFAULT_PROVIDER_IDS", "ModelPrice", "PriceBook"]

DEFAULT_PROVIDER_IDS: Mapping[str, str] = {"openai": "openai", "anthropic": "anthropic"}
_SIM_PROVIDER = "sim"
_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. ``tiered``: long prompts pay more (genai-prices applies it)."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None
    source: str
    tiered: bool = False

    def cost_usd(self, usage: Usage) -> Decimal:
        """Flat-rate cost; cached reads and cache writes fall back to the input price."""
        cached = usage.cache_read_tokens
        written = usage.cache_write_tokens
        uncached = max(0, usage.input_tokens - cached - written)
        total = (
            uncached * self.input_per_mtok
            + cached * _or(self.cached_input_per_mtok, self.input_per_mtok)
            + written * _or(self.cache_write_per_mtok, self.input_per_mtok)
            + usage.output_tokens * self.output_per_mtok
        )
        return total / _MTOK


class PriceBook:
    """Answers what a model costs; overrides win over the snapshot. Lookups are cached."""

    def __init__(
        self,
        overrides: Mapping[str, PriceSpec] | None = None,
        *,
        provider_ids: Mapping[str, str] = DEFAULT_PROVIDER_IDS,
    ) -> None:
        self._overrides = {key: _from_spec(spec) for key, spec in (overrides or {}).items()}
        self._provider_ids = dict(provider_ids)
        self._models: dict[ModelRef, tuple[str, ModelPrice] | None] = {}

    @classmethod
    def from_config(cls, config: Config) -> PriceBook:
        """Overrides from ``pricing:``; every key of type openai/anthropic is priced at that
        vendor's list price, whatever it is called and wherever it points (a gateway or proxy
        bills like the vendor). Models the vendor does not list (local ones) stay unknown
        unless ``pricing:`` names them."""
        ids = dict(DEFAULT_PROVIDER_IDS)
        for name, pc in config.providers.items():
            if pc.type in DEFAULT_PROVIDER_IDS:
                ids[name] = DEFAULT_PROVIDER_IDS[pc.type]
            else:
                ids.pop(name, None)
        return cls(config.pricing, provider_ids=ids)

    def price(self, model: ModelRef) -> ModelPrice | None:
        """The model's price (base tier), or None when nothing prices it."""
        override = self._overrides.get(str(model))
        if override is not None:
            return override
        if model.provider == _SIM_PROVIDER:
            return ModelPrice(_ZERO, _ZERO, _ZERO, _ZERO, "simulator")
        found = self._lookup(model)
        return None if found is None else found[1]

    def is_known(self, model: ModelRef) -> bool:
        """Whether a cost can be computed for ``model`` (so a budget can be enforced)."""
        return self.price(model) is not None

    def require(self, model: ModelRef) -> ModelPrice:
        """The price, or a ``ConfigError`` that names the model and the fix."""
        found = self.price(model)
        if found is None:
            raise ConfigError(
                f"no price is known for {model}, so its spend cannot be held to a budget",
                hint=f"add it to aoe.yaml: pricing: {{{model}: "
                "{input_per_mtok: ..., output_per_mtok: ...}}",
            )
        return found

    def cost_usd(self, model: ModelRef, usage: Usage, *, required: bool = False) -> Decimal | None:
        """What ``usage`` cost. None for an unpriced model, or ``ConfigError`` if ``required``."""
        price = self.require(model) if required else self.price(model)
        if price is None:
            return None
        if not price.tiered:  # the rate card of the model, resolved once: arithmetic
            return price.cost_usd(usage)
        return self._genai_cost(
            model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )

    def max_cost_usd(
        self, model: ModelRef, input_tokens: int, max_output_tokens: int, *, required: bool = False
    ) -> Decimal | None:
        """Worst case for a reservation: all input uncached, at the (tiered) input price,
        and every allowed output token. Prompt-cache writes (Anthropic charges 1.25x) only
        happen when a request asks for them; aoe's requests don't."""
        usage = Usage(input_tokens=input_tokens, output_tokens=max_output_tokens)
        return self.cost_usd(model, usage, required=required)

    def _lookup(self, model: ModelRef) -> tuple[str, ModelPrice] | None:
        """(genai-prices provider id, base price), cached per model for the process."""
        if model in self._models:
            return self._models[model]
        provider_id = self._provider_ids.get(model.provider)
        found: tuple[str, ModelPrice] | None = None
        if provider_id is not None:
            from genai_prices.data_snapshot import get_snapshot

            try:
                _, info = get_snapshot().find_provider_model(model.name, None, provider_id, None)
                found = (provider_id, _from_genai(info))
            except LookupError:
                found = None
        self._models[model] = found
        return found

    def _genai_cost(self, model: ModelRef, **counts: int) -> Decimal:
        from genai_prices import Usage as GenaiUsage
        from genai_prices import calc_price

        found = self._lookup(model)
        assert found is not None  # price() found it a moment ago
        provider_id, _ = found
        result = calc_price(GenaiUsage(**counts), model.name, provider_id=provider_id)
        return result.total_price


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


def _from_spec(spec: PriceSpec) -> ModelPrice:
    return ModelPrice(
        input_per_mtok=spec.input_per_mtok,
        output_per_mtok=spec.output_per_mtok,
        cached_input_per_mtok=spec.cached_input_per_mtok,
        cache_write_per_mtok=spec.cache_write_per_mtok,
        source="override",
    )


def _from_genai(info: ModelInfo) -> ModelPrice:
    prices = info.get_prices(datetime.now(tz=UTC))
    tiered = False

    def base(key: str) -> Decimal | None:
        nonlocal tiered
        value: Any = getattr(prices, key, None)
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        tiered = True
        return Decimal(value.base)

    input_price = base("input_mtok")
    output_price = base("output_mtok")
    return ModelPrice(
        input_per_mtok=_or(input_price, _ZERO),
        output_per_mtok=_or(output_price, _ZERO),
        cached_input_per_mtok=base("cache_read_mtok"),
        cache_write_per_mtok=base("cache_write_mtok"),
        source="genai-prices",
        tiered=tiered,
    )
