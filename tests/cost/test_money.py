"""The one money type: exact in, exact in JSON, one way on screens."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aoe.cost.money import (
    decimal_text,
    format_usd,
    from_pusd,
    optional_text,
    optional_usd,
    to_pusd,
    to_usd,
)

AMOUNTS = st.decimals(min_value=0, max_value=10**6, places=12, allow_nan=False)


def test_a_typed_amount_is_read_digit_for_digit() -> None:
    """`--budget 0.1` and `budget_usd: 0.004128` are those exact amounts, not float noise."""
    assert to_usd(0.1) == Decimal("0.1")
    assert to_usd(0.004128) == Decimal("0.004128")
    assert to_usd(5) == Decimal(5)
    assert to_usd("0.50") == Decimal("0.50")
    assert optional_usd(None) is None


@pytest.mark.parametrize("bad", ["ten dollars", "", "nan", "inf", float("inf")])
def test_what_is_no_amount_is_refused(bad: object) -> None:
    """Text that is no number, NaN and infinity are not money."""
    with pytest.raises(ValueError, match="not an amount of money"):
        to_usd(bad)  # type: ignore[arg-type]


def test_json_writes_the_exact_value_without_an_exponent() -> None:
    """The amount that `aoe run --json` printed as 7.65e-05 is now "0.0000765"."""
    assert decimal_text(Decimal("7.65E-5")) == "0.0000765"
    assert decimal_text(Decimal("0.500")) == "0.5"
    assert decimal_text(Decimal("-0")) == "0"
    assert decimal_text(Decimal("1E+2")) == "100"
    assert optional_text(None) is None


def test_screens_show_four_to_six_decimals_rounded_half_to_even() -> None:
    """One rule on every screen: $0.0000765 reads $0.000076 wherever it is shown."""
    assert format_usd(Decimal("0.0000765")) == "$0.000076"
    assert format_usd(Decimal("0.0000775")) == "$0.000078"
    assert format_usd(Decimal("0.5")) == "$0.5000"
    assert format_usd(Decimal("12.3456789")) == "$12.345679"
    assert format_usd(Decimal(0)) == "$0.0000"
    assert format_usd(Decimal("-0.25")) == "-$0.2500"


@given(AMOUNTS)
def test_the_ledger_keeps_every_pico_dollar(amount: Decimal) -> None:
    """Storing an amount as pico-dollars and reading it back changes nothing."""
    assert from_pusd(to_pusd(amount)) == amount
    assert Decimal(decimal_text(amount)) == amount


def test_an_empty_sum_reads_as_zero() -> None:
    """SQLite's SUM over no rows (None) is $0."""
    assert from_pusd(None) == 0
