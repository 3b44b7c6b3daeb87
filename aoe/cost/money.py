"""Exact money: Decimal USD in the API, integer pico-dollars in SQLite, ``$0.0123`` on screen."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

PICO: Final = 12
_SIX_PLACES: Final = Decimal("0.000001")


def to_pusd(usd: Decimal | float | int) -> int:
    """USD to integer pico-dollars (1e-12), rounding half-even past the 12th decimal."""
    value = usd if isinstance(usd, Decimal) else Decimal(str(usd))
    return int(value.scaleb(PICO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_pusd(pusd: int | None) -> Decimal:
    """Integer pico-dollars back to an exact Decimal USD (None, from an empty SUM, is 0)."""
    if not pusd:
        return Decimal(0)
    return Decimal(pusd).scaleb(-PICO).normalize()


def decimal_text(value: Decimal) -> str:
    """The exact value as plain decimal text, never in exponent form (for JSON and CSV)."""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


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
