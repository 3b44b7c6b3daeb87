"""Prices and call costs, checked by hand against genai-prices' bundled snapshot."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from decimal import Decimal
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from aoe.cost.pricing import PriceBook
from aoe.errors import ConfigError
from aoe.providers.base import Usage
from aoe.spec.models import Config, ModelRef, PriceSpec, ProviderConfig

MINI = ModelRef("openai", "gpt-4o-mini")
SONNET = ModelRef("anthropic", "claude-sonnet-4-5")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prices come from the bundled snapshot: any connection attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_gpt_4o_mini_cost_with_cached_input_by_hand() -> None:
    """$0.15 / $0.075 cached / $0.60 per MTok: cached tokens are part of input_tokens."""
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=200_000)
    # 800k * 0.15 + 200k * 0.075 + 100k * 0.60, per million
    assert PriceBook().cost_usd(MINI, usage) == Decimal("0.195")


def test_claude_sonnet_cost_with_cache_reads_and_writes_by_hand() -> None:
    """Anthropic's disjoint buckets, normalised into input_tokens, price as the docs say."""
    usage = Usage(
        input_tokens=5100, output_tokens=50, cache_read_tokens=3000, cache_write_tokens=2000
    )
    # 100 * $3 + 2000 * $3.75 + 3000 * $0.30 + 50 * $15, per million
    assert PriceBook().cost_usd(SONNET, usage) == Decimal("0.00945")


def test_long_context_tier_applies_to_the_whole_prompt() -> None:
    """Above 200k input tokens Sonnet 4.5 costs $6 / $22.50 per MTok for every token."""
    usage = Usage(input_tokens=300_000, output_tokens=1000)
    assert PriceBook().cost_usd(SONNET, usage) == Decimal("1.8225")
    price = PriceBook().price(SONNET)
    assert price is not None
    assert price.tiered
    assert (price.input_per_mtok, price.output_per_mtok) == (Decimal(3), Decimal(15))
    assert (price.cached_input_per_mtok, price.cache_write_per_mtok) == (
        Decimal("0.3"),
        Decimal("3.75"),
    )


def test_max_cost_is_all_input_uncached_plus_every_output_token() -> None:
    """A reservation's worst case: input at the input price and max_tokens of output."""
    book = PriceBook()
    # gpt-4o: $2.50 in, $10 out
    assert book.max_cost_usd(ModelRef("openai", "gpt-4o"), 1000, 500) == Decimal("0.0075")
    worst = book.max_cost_usd(MINI, 10_000, 1000)
    assert worst is not None
    real = book.cost_usd(
        MINI, Usage(input_tokens=10_000, output_tokens=800, cache_read_tokens=5000)
    )
    assert real is not None
    assert real < worst


def test_user_overrides_win_over_the_snapshot() -> None:
    """A `pricing:` entry in aoe.yaml replaces the maintained price for that model."""
    book = PriceBook({"openai/gpt-4o-mini": PriceSpec(input_per_mtok=D(1), output_per_mtok=D(2))})
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=500_000)
    assert book.cost_usd(MINI, usage) == Decimal(3)  # no cached price: cached input at $1
    price = book.price(MINI)
    assert price is not None
    assert price.source == "override"


def test_override_prices_cached_reads_and_writes_separately() -> None:
    """Local or custom models can carry cached-input and cache-write prices."""
    spec = PriceSpec(
        input_per_mtok=D(2),
        output_per_mtok=D(8),
        cached_input_per_mtok=D("0.5"),
        cache_write_per_mtok=D("2.5"),
    )
    book = PriceBook({"local/llama3": spec})
    usage = Usage(
        input_tokens=4_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    )
    # 2M * 2 + 1M * 0.5 + 1M * 2.5 + 1M * 8
    assert book.cost_usd(ModelRef("local", "llama3"), usage) == Decimal(15)


def test_simulated_models_are_free_unless_priced() -> None:
    """`sim/*` models cost nothing, so simulated runs never hit a budget by accident."""
    assert PriceBook().cost_usd(ModelRef("sim", "fast"), Usage(1000, 1000)) == 0
    book = PriceBook({"sim/fast": PriceSpec(input_per_mtok=D(1), output_per_mtok=D(1))})
    assert book.cost_usd(ModelRef("sim", "fast"), Usage(500_000, 500_000)) == Decimal(1)


def test_an_unpriced_model_is_none_until_a_budget_needs_it() -> None:
    """No price: a None cost (warn), and a ConfigError naming the fix when enforcing."""
    book = PriceBook()
    llama = ModelRef("local", "llama3")
    assert book.price(llama) is None
    assert not book.is_known(llama)
    assert book.cost_usd(llama, Usage(10, 10)) is None
    with pytest.raises(ConfigError, match="no price is known for local/llama3") as err:
        book.max_cost_usd(llama, 10, 10, required=True)
    assert err.value.hint is not None
    assert "pricing:" in err.value.hint
    assert not book.is_known(ModelRef("openai", "no-such-model-xyz"))


def test_provider_ids_follow_the_type_not_the_name() -> None:
    """Any key of type openai (a gateway, a proxy) is billed at OpenAI's price; a model the
    vendor does not list (a local one) stays unknown."""
    config = Config(
        providers={
            "openai": ProviderConfig("openai", "openai", base_url="http://127.0.0.1:8080/v1"),
            "work": ProviderConfig("work", "openai", base_url="https://gateway.example/v1"),
            "claude": ProviderConfig("claude", "anthropic"),
            "other": ProviderConfig("other", "sim"),
        }
    )
    book = PriceBook.from_config(config)
    assert book.cost_usd(ModelRef("openai", "gpt-4o-mini"), Usage(1_000_000, 0)) == Decimal("0.15")
    assert book.cost_usd(ModelRef("work", "gpt-4o-mini"), Usage(1_000_000, 0)) == Decimal("0.15")
    assert not book.is_known(ModelRef("work", "llama3"))
    assert not book.is_known(ModelRef("other", "gpt-4o-mini"))
    assert book.is_known(ModelRef("claude", "claude-sonnet-4-5"))


def test_the_cached_rate_card_costs_what_genai_prices_computes() -> None:
    """Every untiered OpenAI and Anthropic model: cost by arithmetic on the price looked up
    once equals genai-prices' own calculation, to the last digit."""
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price
    from genai_prices.data_snapshot import get_snapshot

    rng = random.Random(7)
    book = PriceBook()
    checked = 0
    for provider in get_snapshot().providers:
        if provider.id not in ("openai", "anthropic"):
            continue
        for info in provider.models:
            model = ModelRef(provider.id, info.id)
            price = book.price(model)
            if price is None or price.tiered:
                continue
            tokens_in = rng.randint(0, 200_000)
            usage = Usage(tokens_in, rng.randint(0, 8_000), rng.randint(0, tokens_in // 2))
            expected = calc_price(
                GenaiUsage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                ),
                info.id,
                provider_id=provider.id,
            ).total_price
            assert book.cost_usd(model, usage) == expected, model
            checked += 1
    assert checked > 50


_PRICE_OF = """
import json, sys
from aoe.cost.pricing import PriceBook
from aoe.spec.models import ModelRef
book = PriceBook()
found = [book.price(ModelRef(*name.split("/", 1))) for name in sys.argv[1:]]
print(json.dumps({
    "prices": [None if p is None else [str(p.input_per_mtok), str(p.output_per_mtok),
               str(p.cached_input_per_mtok), p.source, p.tiered] for p in found],
    "genai_prices_loaded": "genai_prices" in sys.modules,
}))
"""


def _price_in_child(cache: Path, *models: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PRICE_OF, *models],
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_second_run_prices_from_the_cache_without_loading_genai_prices(tmp_path: Path) -> None:
    """The first process asks genai-prices and keeps its flat prices and its unknown models
    (0600); the next one gets the same answers without importing it (0.1 s to a first call)."""
    models = ("openai/gpt-4o-mini", "openai/llama-3.1-8b-local")
    first = _price_in_child(tmp_path, *models)
    assert first["genai_prices_loaded"]
    assert first["prices"][0] == ["0.15", "0.6", "0.075", "genai-prices", False]
    assert first["prices"][1] is None
    (cards,) = (tmp_path / "aoe").glob("prices-*.json")
    assert cards.stat().st_mode & 0o777 == 0o600
    second = _price_in_child(tmp_path, *models)
    assert second == {**first, "genai_prices_loaded": False}


@pytest.mark.parametrize(
    "damage",
    ["another-snapshot", "bad-price", "not-json"],
)
def test_a_cache_from_another_snapshot_or_damaged_is_not_believed(
    tmp_path: Path, damage: str
) -> None:
    """Prices in the cache count only for the snapshot installed now, and only if they
    read as prices: anything else is asked of genai-prices again."""
    _price_in_child(tmp_path, "openai/gpt-4o-mini")
    (cards,) = (tmp_path / "aoe").glob("prices-*.json")
    data = json.loads(cards.read_text())
    if damage == "another-snapshot":
        data["snapshot"] += "0"
        data["models"]["openai/gpt-4o-mini"][1] = "0.0001"
        cards.write_text(json.dumps(data))
    elif damage == "bad-price":
        data["models"]["openai/gpt-4o-mini"][1] = "-1"
        cards.write_text(json.dumps(data))
    else:
        cards.write_text("{not json")
    again = _price_in_child(tmp_path, "openai/gpt-4o-mini")
    assert again["genai_prices_loaded"]
    assert again["prices"][0] == ["0.15", "0.6", "0.075", "genai-prices", False]


_NO_HOME = """
import pathlib, sys
def _home(cls):
    raise RuntimeError("Could not determine home directory.")
pathlib.Path.home = classmethod(_home)
exec(compile(sys.argv.pop(1), "<price>", "exec"))
"""


def test_without_a_home_prices_come_from_genai_prices_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    """A container user with no HOME and no passwd entry: no cache, the same prices."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME")}
    done = subprocess.run(
        [sys.executable, "-c", _NO_HOME, _PRICE_OF, "openai/gpt-4o-mini"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["prices"][0] == ["0.15", "0.6", "0.075", "genai-prices", False]
    assert list(tmp_path.iterdir()) == []


def test_two_installs_keep_a_price_cache_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two virtualenvs with different genai-prices snapshots: neither overwrites the other's
    cache, so each keeps starting without loading genai-prices."""
    from aoe.cost import pricing

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for install in ("venv-a", "venv-b"):
        monkeypatch.setattr(pricing, "_snapshot_key", lambda install=install: f"x:{install}")
        pricing._RateCards().price("openai", "gpt-4o-mini")
    files = sorted((tmp_path / "aoe").glob("prices-*.json"))
    assert len(files) == 2
    assert {json.loads(f.read_text())["snapshot"] for f in files} == {"x:venv-a", "x:venv-b"}
    for install in ("venv-a", "venv-b"):
        monkeypatch.setattr(pricing, "_snapshot_key", lambda install=install: f"x:{install}")
        cards = pricing._RateCards()
        assert "openai/gpt-4o-mini" in cards._cards()
