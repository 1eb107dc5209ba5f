"""Clicks and sales on given days, for the dashboards, rollups and reports.

Clicks are rows for ``clicks.store_clicks`` (what the click writer stores); sales go through
``tracking.record_conversion`` as the API's do, so the rollups count them as in production.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import factory

from portal.services import clicks, tracking


def at_noon(day: date, tz: str = "Europe/Berlin") -> datetime:
    return datetime.combine(day, time(12), tzinfo=ZoneInfo(tz)).astimezone(UTC)


class ClickRowFactory(factory.DictFactory):
    """One stored click, as the click writer hands it to ``clicks.store_clicks``.

    Build it with ``partner`` (and optionally ``link``) and ``day``; any column may be overridden.
    """

    class Params:
        partner = None
        link = None
        day = None

    id = factory.Sequence(lambda n: f"{n + 1:032x}")
    partner_id = factory.LazyAttribute(lambda r: r.partner.id)
    link_id = factory.LazyAttribute(lambda r: r.link.id if r.link else None)
    code = factory.LazyAttribute(lambda r: r.link.code if r.link else r.partner.ref_code)
    channel = factory.LazyAttribute(lambda r: r.link.channel if r.link else "other")
    campaign = factory.LazyAttribute(lambda r: r.link.campaign if r.link else None)
    sub_id = factory.LazyAttribute(lambda r: r.link.sub_id if r.link else None)
    creative_id = None
    destination_url = "https://shop.example/"
    ip_hash = factory.SelfAttribute("id")
    user_agent = None
    referrer = None
    is_bot = False
    is_unique = True
    flagged = None
    created_at = factory.LazyAttribute(lambda r: at_noon(r.day))


def store_clicks(db, partner, day: date, count: int, link=None, **extra) -> list[str]:
    """``count`` clicks for ``partner`` (through ``link``, if given) at noon on ``day``."""
    rows = ClickRowFactory.build_batch(count, partner=partner, link=link, day=day, **extra)
    clicks.store_clicks(db.session, rows)
    return [row["id"] for row in rows]


class _SaleNumber(factory.DictFactory):
    n = factory.Sequence(lambda n: n + 1)


def sale(
    db,
    program,
    partner,
    day: date,
    amount: int = 10_000,
    click_id: str | None = None,
    transaction_id: str | None = None,
    coupon: str | None = None,
):
    """A sale on ``day`` recorded as the API records one (received when it happened)."""
    n = _SaleNumber()["n"]
    conversion, _ = tracking.record_conversion(
        program,
        tracking.ConversionInput(
            transaction_id or f"order-{n}",
            amount,
            program.currency,
            click_id=click_id,
            ref=None if click_id or coupon else partner.ref_code,
            occurred_at=at_noon(day),
            coupon=coupon,
        ),
        {"n": n},
        received_at=at_noon(day),  # history: received when it happened
    )
    return conversion
