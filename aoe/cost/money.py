"""The one money type and its one format: ``Decimal`` USD from price to report.

- ``to_usd`` turns what a person typed (``--budget 0.25``, ``budget_usd: 0.5`` in YAML)
  into an exact Decimal, digit for digit as written.
- ``format_usd`` is money on a screen (summary, live view, ``show``, reports):
  ``$0.0123``, ``$0.000077``, one rounding rule everywhere.
- ``decimal_text`` is money in JSON and CSV: the exact value as a string (``"0.0000765"``),
  so no float rounding creeps into a total.
- ``to_pusd`` / ``from_pusd``: integer pico-dollars, how the ledger stores it exactly.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

PICO: Final = 12
ZERO: Final = Decimal(0)
_SIX_PLACES: Final = Decimal("0.000001")


def to_usd(value: Decimal | float | int | str) -> Decimal:
    """An amount as an exact Decimal; a float is read as the shortest text that gives it."""
    if isinstance(value, Decimal):
        return value
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ValueError(f"not an amount of money: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount of money: {value!r}")
    return amount


def optional_usd(value: Decimal | float | int | str | None) -> Decimal | None:
    """``to_usd`` that lets None (no limit) through."""
    return None if value is None else to_usd(value)


def to_pusd(usd: Decimal) -> int:
    """USD to integer pico-dollars (1e-12), rounding half-even past the 12th decimal."""
    return int(usd.scaleb(PICO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_pusd(pusd: int | None) -> Decimal:
    """Integer pico-dollars back to an exact Decimal USD (None, from an empty SUM, is 0)."""
    if not pusd:
        return ZERO
    return Decimal(pusd).scaleb(-PICO).normalize()


def decimal_text(value: Decimal) -> str:
    """The exact value as plain decimal text, never in exponent form (for JSON and CSV)."""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def optional_text(value: Decimal | None) -> str | None:
    """``decimal_text`` that lets None (no limit) through."""
    return None if value is None else decimal_text(value)


def parse_decimal(text: str | None) -> Decimal | None:
    """A TEXT decimal column back to Decimal."""
    return None if text is None else Decimal(text)


def format_usd(value: Decimal) -> str:
    """Money for people: at least 4 and at most 6 decimals, e.g. ``$0.0123``, ``$0.000015``."""
    rounded = value.quantize(_SIX_PLACES, rounding=ROUND_HALF_EVEN)
    text = format(rounded, "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(4, "0")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${whole.lstrip('-')}.{frac}"
