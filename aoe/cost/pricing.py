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

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
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
        self._prices: dict[ModelRef, ModelPrice | None] = {}  # what price() answered

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
        try:
            return self._prices[model]  # every call of a run asks this two or three times
        except KeyError:
            pass
        found = self._prices[model] = self._resolve(model)
        return found

    def _resolve(self, model: ModelRef) -> ModelPrice | None:
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
            price = _RATE_CARDS.price(provider_id, model.name)
            found = None if price is None else (provider_id, price)
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


_CARDS_VERSION = 1
_UNKNOWN = "unknown"


class _RateCards:
    """genai-prices' answers, kept on disk per installed snapshot.

    Importing genai-prices and searching its snapshot costs about 0.1 s (it loads pydantic
    and an HTTP client for its updater), on the path of every run to its first call. A
    flat price that holds at any date (no tiers, dated or time-of-day conditions), or that a
    model is not listed, is the same for as long as the same snapshot is installed: those
    answers are written to ``$XDG_CACHE_HOME/aoe/prices-<key>.json`` (``~/.cache/aoe``,
    0600), one file per snapshot, keyed by the snapshot file's path, size and modification
    time: a new genai-prices version is read afresh, and two installs (two virtualenvs)
    keep a cache each instead of overwriting one. Prices with conditions are resolved from
    genai-prices in each process, as before. A cache that cannot be read or written is ignored.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None
        self._key: str | None = None

    def price(self, provider_id: str, model: str) -> ModelPrice | None:
        name = f"{provider_id}/{model}"
        cards = self._cards()
        cached = cards.get(name)
        if cached is not None:
            try:
                return _card_price(cached)
            except (TypeError, ValueError, ArithmeticError, IndexError):
                pass  # a damaged entry: ask genai-prices
        from genai_prices.data_snapshot import get_snapshot

        try:
            _, info = get_snapshot().find_provider_model(model, None, provider_id, None)
        except LookupError:
            self._store(name, _UNKNOWN)
            return None
        price = _from_genai(info)
        if not isinstance(info.prices, list) and not price.tiered:  # one flat price, any date
            self._store(name, _card(price))
        return price

    def _cards(self) -> dict[str, Any]:
        if self._loaded is None:
            self._loaded = {}
            key = self._key = _snapshot_key()
            if key is not None:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    data = json.loads(_cards_path(key).read_bytes())
                    if data.get("snapshot") == key and isinstance(data.get("models"), dict):
                        self._loaded = data["models"]
        return self._loaded

    def _store(self, name: str, card: Any) -> None:
        cards = self._cards()
        if self._key is None or cards.get(name) == card:
            return
        cards[name] = card
        with contextlib.suppress(OSError):
            path = _cards_path(self._key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            body = json.dumps({"snapshot": self._key, "models": cards}, sort_keys=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
            os.replace(tmp, path)


def _snapshot_key() -> str | None:
    """The installed genai-prices snapshot, found without importing it (None: not found)."""
    try:
        spec = importlib.util.find_spec("genai_prices")
        if spec is None or not spec.submodule_search_locations:
            return None
        data = Path(next(iter(spec.submodule_search_locations))) / "data.py"
        stat = data.stat()
    except (OSError, ImportError, ValueError):
        return None
    return f"{_CARDS_VERSION}:{data}:{stat.st_size}:{stat.st_mtime_ns}"


def _cards_path(snapshot: str) -> Path:
    """``$XDG_CACHE_HOME/aoe/prices-<key>.json`` for ``snapshot``; an OSError where there is
    no home (a container user without a passwd entry and no ``HOME``): no cache then."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError as err:
            raise OSError(str(err)) from err
    key = hashlib.sha256(snapshot.encode()).hexdigest()[:16]
    return Path(base) / "aoe" / f"prices-{key}.json"


def _card(price: ModelPrice) -> Any:
    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return [
        text(price.input_per_mtok),
        text(price.output_per_mtok),
        text(price.cached_input_per_mtok),
        text(price.cache_write_per_mtok),
        price.tiered,
    ]


def _card_price(card: Any) -> ModelPrice | None:
    if card == _UNKNOWN:
        return None

    def money(value: Any) -> Decimal | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError("a price is a decimal string")
        amount = Decimal(value)
        if not amount.is_finite() or amount < 0:
            raise ValueError("a price is finite and not negative")
        return amount

    input_price, output_price = money(card[0]), money(card[1])
    if input_price is None or output_price is None or not isinstance(card[4], bool):
        raise TypeError("a card has an input and an output price and a tier flag")
    return ModelPrice(
        input_per_mtok=input_price,
        output_per_mtok=output_price,
        cached_input_per_mtok=money(card[2]),
        cache_write_per_mtok=money(card[3]),
        source="genai-prices",
        tiered=card[4],
    )


_RATE_CARDS = _RateCards()


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
