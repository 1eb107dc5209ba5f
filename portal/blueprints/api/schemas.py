"""Shape checks for API bodies: types, lengths, formats. Rules live in the services."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from flask_babel import get_locale, gettext

from portal.currencies import is_iso_currency
from portal.models import Program
from portal.models.tracking import COUPON_TEXT_MAX
from portal.models.types import utcnow
from portal.money import format_money, parse_amount
from portal.services.tracking import ConversionInput, RefundInput, SignupInput

_ID = re.compile(r"^[\x21-\x7e]+\Z")  # printable ASCII, no spaces
_ID_MAX = 128
REFUND_ID_MAX = 100  # the column's length
# Dates a client may send: nothing before 2000 or after 2100, and at most a day ahead of the
# portal's clock (clocks drift; a sale dated next year is a bug or a trick).
YEARS = (2000, 2100)
FUTURE_SLACK = timedelta(hours=24)
# No control characters (PostgreSQL cannot store a NUL in text; none belongs in an address).
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,190}\.[^@\s\x00-\x1f\x7f]{2,63}$")


def _time_format() -> str:
    return gettext(
        "must be an ISO 8601 date-time with a time zone, e.g. %(example)s", example="2026-11-24T10:00:00Z"
    )


class Invalid(Exception):
    """The body does not have the right shape; ``fields`` says where (in the client's language,
    like the error's message; the field names are the API's own)."""

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__("invalid body")
        self.fields = fields


class _Reader:
    def __init__(self, body: dict, allowed: set[str]):
        self.body = body
        self.errors: dict[str, list[str]] = {}
        for name in body:
            if name not in allowed:
                self.fail(name, gettext("unknown field"))

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def identifier(self, name: str, required: bool = False, max_length: int = _ID_MAX) -> str | None:
        value = self.body.get(name)
        if value is None:
            if required:
                self.fail(name, gettext("required"))
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or len(value) > max_length or not _ID.match(value):
            self.fail(
                name,
                gettext("must be a string of 1-%(max)d printable characters without spaces", max=max_length),
            )
            return None
        return value

    def coupon(self, name: str = "coupon") -> str | None:
        """Any coupon the shop saw (its own codes too, which are not the partners'): kept as
        sent, so printable text of 1-128 characters; only a partner's code attributes."""
        value = self.body.get(name)
        if value is None:
            return None
        text = value.strip() if isinstance(value, str) else None
        if not text or len(text) > COUPON_TEXT_MAX or not text.isprintable():
            self.fail(
                name, gettext("must be a string of 1-%(max)d printable characters", max=COUPON_TEXT_MAX)
            )
            return None
        return text

    def email(self, name: str) -> str | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 254 or not _EMAIL.match(value.strip()):
            self.fail(name, gettext("must be an e-mail address"))
            return None
        return value.strip()

    def timestamp(self, name: str) -> datetime | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 40:
            self.fail(name, _time_format())
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            self.fail(name, _time_format())
            return None
        if not YEARS[0] <= parsed.year <= YEARS[1]:
            # Checked before the conversion to UTC, which overflows at the ends of the calendar.
            self.fail(
                name,
                gettext("must be a date from the years %(first)d to %(last)d", first=YEARS[0], last=YEARS[1]),
            )
            return None
        parsed = parsed.astimezone(UTC)
        if parsed - utcnow() > FUTURE_SLACK:
            self.fail(name, gettext("must not be more than 24 hours in the future"))
            return None
        return parsed

    def done(self) -> None:
        if self.errors:
            raise Invalid(self.errors)


def read_signup(body: dict) -> SignupInput:
    r = _Reader(body, {"customer_id", "click_id", "coupon", "ref", "email", "occurred_at"})
    data = SignupInput(
        customer_id=r.identifier("customer_id", required=True),
        click_id=r.identifier("click_id"),
        coupon=r.coupon(),
        ref=r.identifier("ref"),
        email=r.email("email"),
        occurred_at=r.timestamp("occurred_at"),
    )
    r.done()
    return data


def read_amount(
    r: _Reader, name: str, currency: str | None, required: bool, maximum: int | None = None
) -> int | None:
    """Minor units from a decimal string of ASCII digits; ``maximum`` in the same currency."""
    value = r.body.get(name)
    if value is None:
        if required:
            r.fail(name, gettext("required"))
        return None
    if not isinstance(value, str):
        r.fail(name, gettext('must be a decimal string such as "49.90" (not a number)'))
        return None
    if currency is None:
        return None
    try:
        minor = parse_amount(value, currency)
    except ValueError:
        r.fail(
            name,
            gettext(
                'must be a decimal string no finer than the minor unit of %(currency)s, such as "49.90"',
                currency=currency,
            ),
        )
        return None
    if minor < 0:
        r.fail(name, gettext("must not be negative"))
        return None
    if minor > 10**13:
        r.fail(name, gettext("is too large"))
        return None
    if maximum is not None and minor > maximum:
        shown = format_money(maximum, currency, locale=str(get_locale() or "en"))
        r.fail(name, gettext("must be at most %(amount)s, the program's maximum sale", amount=shown))
        return None
    return minor


def read_conversion(body: dict, program: Program | None = None) -> ConversionInput:
    """The sale in ``body``; with the program, its amount is held to the maximum sale."""
    r = _Reader(
        body,
        {
            "transaction_id",
            "amount",
            "currency",
            "customer_id",
            "click_id",
            "coupon",
            "ref",
            "product_id",
            "occurred_at",
        },
    )
    currency = body.get("currency")
    if currency is None:
        r.fail("currency", gettext("required"))
        currency = None
    elif not isinstance(currency, str) or not is_iso_currency(currency):
        r.fail("currency", gettext("must be an ISO 4217 code such as USD"))
        currency = None
    maximum = program.max_sale_minor if program is not None and currency == program.currency else None
    data = ConversionInput(
        transaction_id=r.identifier("transaction_id", required=True),
        amount_minor=read_amount(r, "amount", currency, required=True, maximum=maximum),
        currency=currency,
        customer_id=r.identifier("customer_id"),
        click_id=r.identifier("click_id"),
        coupon=r.coupon(),
        ref=r.identifier("ref"),
        product_id=r.identifier("product_id"),
        occurred_at=r.timestamp("occurred_at"),
    )
    r.done()
    return data


def read_refund(body: dict, currency: str) -> RefundInput:
    r = _Reader(body, {"amount", "reason", "refund_id"})
    amount = read_amount(r, "amount", currency, required=False)
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        r.fail("reason", gettext("must be text of at most %(max)d characters", max=500))
        reason = None
    elif reason is not None and "\x00" in reason:
        # PostgreSQL cannot store a NUL in text: the refund's insert would fail (a 500).
        r.fail("reason", gettext("must not contain a NUL character"))
        reason = None
    refund_id = r.identifier("refund_id", max_length=REFUND_ID_MAX)
    r.done()
    return RefundInput(amount_minor=amount, note=reason, refund_id=refund_id)
