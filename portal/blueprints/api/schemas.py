"""Shape checks for API bodies: types, lengths, formats. Rules live in the services."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from portal.money import parse_amount
from portal.services.tracking import ConversionInput, SignupInput

_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class Invalid(Exception):
    """The body does not have the right shape; ``fields`` says where."""

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__("invalid body")
        self.fields = fields


class _Reader:
    def __init__(self, body: dict, allowed: set[str]):
        self.body = body
        self.errors: dict[str, list[str]] = {}
        for name in body:
            if name not in allowed:
                self.fail(name, "unknown field")

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def identifier(self, name: str, required: bool = False) -> str | None:
        value = self.body.get(name)
        if value is None:
            if required:
                self.fail(name, "required")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _ID.match(value):
            self.fail(name, "must be a string of 1-128 printable characters without spaces")
            return None
        return value

    def email(self, name: str) -> str | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 254 or not _EMAIL.match(value.strip()):
            self.fail(name, "must be an e-mail address")
            return None
        return value.strip()

    def timestamp(self, name: str) -> datetime | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 40:
            self.fail(name, "must be an ISO 8601 date-time with a time zone, e.g. 2026-11-24T10:00:00Z")
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            self.fail(name, "must be an ISO 8601 date-time with a time zone, e.g. 2026-11-24T10:00:00Z")
            return None
        return parsed.astimezone(UTC)

    def done(self) -> None:
        if self.errors:
            raise Invalid(self.errors)


def read_signup(body: dict) -> SignupInput:
    r = _Reader(body, {"customer_id", "click_id", "ref", "email", "occurred_at"})
    data = SignupInput(
        customer_id=r.identifier("customer_id", required=True),
        click_id=r.identifier("click_id"),
        ref=r.identifier("ref"),
        email=r.email("email"),
        occurred_at=r.timestamp("occurred_at"),
    )
    r.done()
    return data


def read_amount(r: _Reader, name: str, currency: str | None, required: bool) -> int | None:
    value = r.body.get(name)
    if value is None:
        if required:
            r.fail(name, "required")
        return None
    if not isinstance(value, str):
        r.fail(name, 'must be a decimal string such as "49.90" (not a number)')
        return None
    if currency is None:
        return None
    try:
        minor = parse_amount(value, currency)
    except ValueError:
        r.fail(name, f'must be a decimal string with at most the decimals of {currency}, such as "49.90"')
        return None
    if minor < 0:
        r.fail(name, "must not be negative")
        return None
    if minor > 10**13:
        r.fail(name, "is too large")
        return None
    return minor


def read_conversion(body: dict) -> ConversionInput:
    r = _Reader(
        body,
        {
            "transaction_id",
            "amount",
            "currency",
            "customer_id",
            "click_id",
            "ref",
            "product_id",
            "occurred_at",
        },
    )
    currency = body.get("currency")
    if currency is None:
        r.fail("currency", "required")
        currency = None
    elif not isinstance(currency, str) or not _CURRENCY.match(currency):
        r.fail("currency", "must be an ISO 4217 code such as USD")
        currency = None
    data = ConversionInput(
        transaction_id=r.identifier("transaction_id", required=True),
        amount_minor=read_amount(r, "amount", currency, required=True),
        currency=currency,
        customer_id=r.identifier("customer_id"),
        click_id=r.identifier("click_id"),
        ref=r.identifier("ref"),
        product_id=r.identifier("product_id"),
        occurred_at=r.timestamp("occurred_at"),
    )
    r.done()
    return data


def read_refund(body: dict, currency: str) -> tuple[int | None, str | None]:
    r = _Reader(body, {"amount", "reason"})
    amount = read_amount(r, "amount", currency, required=False)
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        r.fail("reason", "must be text of at most 500 characters")
        reason = None
    r.done()
    return amount, reason
