"""Money as integer minor units plus an ISO 4217 code; parsing and formatting live here."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from babel.numbers import format_currency, get_currency_precision

from portal.currencies import is_iso_currency, minor_units

# ASCII digits only: Python's \d also matches "٣" or "३", which Decimal would read as 3.
_AMOUNT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,4})?")
_RATE = re.compile(r"([0-9]{1,9})(?:\.([0-9]{1,2}))?")

FULL_RATE_BP = 10_000


def is_currency(code: str) -> bool:
    return is_iso_currency(code)


def currency_exponent(currency: str) -> int:
    """Decimals of the currency's ISO 4217 minor unit (USD 2, JPY 0, KWD 3); CLDR's for a
    code outside the active list."""
    exponent = minor_units(currency)
    return exponent if exponent is not None else get_currency_precision(currency)


def parse_amount(text: str, currency: str) -> int:
    """Turn a decimal string such as ``"49.90"`` into minor units; refuses floats' rounding.

    Raises ValueError for anything that is not a plain decimal with at most as many
    decimals as the currency has.
    """
    text = (text or "").strip()
    if not _AMOUNT.fullmatch(text):
        raise ValueError("not a decimal amount")
    exponent = currency_exponent(currency)
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex guards this
        raise ValueError("not a decimal amount") from exc
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{currency} has {exponent} decimal places")
    return int(scaled)


def to_decimal_string(minor: int, currency: str) -> str:
    """Minor units back to the canonical decimal string (``4990`` → ``"49.90"``)."""
    exponent = currency_exponent(currency)
    return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"


def format_money(minor: int, currency: str, locale: str = "en") -> str:
    """Human display, e.g. ``$49.90``; the one formatter templates use."""
    exponent = currency_exponent(currency)
    value = Decimal(minor).scaleb(-exponent)
    if exponent == get_currency_precision(currency):
        return format_currency(value, currency, locale=locale)
    # ISO counts other decimals than CLDR shows (IQD 3, LAK 2): show every ISO decimal.
    return format_currency(value, currency, locale=locale, currency_digits=False, decimal_quantization=False)


class RateOverLimit(ValueError):
    """A well-formed percent above 100 %."""


def parse_rate_bp(text: str | None) -> int:
    """A percent as typed (``"12.5"``, ``"0.05"``, ``"10 %"``) → basis points (1250, 5, 1000).

    The inverse of :func:`rate_text`. ASCII digits with at most two decimals (a comma may
    stand for the point); raises ValueError for anything else, RateOverLimit above 100 %.
    """
    cleaned = (text or "").strip().removesuffix("%").strip().replace(",", ".")
    match = _RATE.fullmatch(cleaned)
    if match is None:
        raise ValueError("not a percent with at most two decimals")
    whole, fraction = match.groups()
    basis_points = int(whole) * 100 + int((fraction or "0").ljust(2, "0"))
    if basis_points > FULL_RATE_BP:
        raise RateOverLimit("over 100 %")
    return basis_points


def rate_text(basis_points: int) -> str:
    """Basis points → the percent an edit form shows: 1000 → ``"10"``, 1250 → ``"12.5"``, 5 → ``"0.05"``."""
    if not 0 <= basis_points <= FULL_RATE_BP:
        raise ValueError("a rate is 0 to 10000 basis points")
    whole, hundredths = divmod(basis_points, 100)
    return str(whole) if not hundredths else f"{whole}.{hundredths:02d}".rstrip("0")
