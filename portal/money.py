"""Money as integer minor units plus an ISO 4217 code; parsing and formatting live here."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from babel.numbers import format_currency, get_currency_precision, list_currencies

# ASCII digits only: Python's \d also matches "٣" or "३", which Decimal would read as 3.
_AMOUNT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,4})?")


def is_currency(code: str) -> bool:
    return code in list_currencies()


def currency_exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit (2 for USD, 0 for JPY)."""
    return get_currency_precision(currency)


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
    return format_currency(Decimal(minor).scaleb(-exponent), currency, locale=locale)
