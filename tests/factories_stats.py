"""Clicks and sales on given days, through the same services the click writer and the API use."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from portal.services import clicks, tracking


def at_noon(day: date, tz: str = "Europe/Berlin") -> datetime:
    return datetime.combine(day, time(12), tzinfo=ZoneInfo(tz)).astimezone(UTC)


_serial = iter(range(1, 10**9))


def store_clicks(db, partner, day: date, count: int, link=None, **extra) -> list[str]:
    rows = []
    for _ in range(count):
        n = next(_serial)
        rows.append(
            {
                "id": f"{n:032x}",
                "partner_id": partner.id,
                "link_id": link.id if link else None,
                "code": link.code if link else partner.ref_code,
                "channel": link.channel if link else "other",
                "campaign": link.campaign if link else None,
                "sub_id": link.sub_id if link else None,
                "creative_id": None,
                "destination_url": "https://shop.example/",
                "ip_hash": f"{n:032x}",
                "user_agent": None,
                "referrer": None,
                "is_bot": False,
                "is_unique": True,
                "flagged": None,
                "created_at": at_noon(day),
                **extra,
            }
        )
    clicks.store_clicks(db.session, rows)
    return [row["id"] for row in rows]


def sale(
    db,
    program,
    partner,
    day: date,
    amount: int = 10_000,
    click_id: str | None = None,
    transaction_id: str | None = None,
):
    n = next(_serial)
    conversion, _ = tracking.record_conversion(
        program,
        tracking.ConversionInput(
            transaction_id or f"order-{n}",
            amount,
            program.currency,
            click_id=click_id,
            ref=None if click_id else partner.ref_code,
            occurred_at=at_noon(day),
        ),
        {"n": n},
        received_at=at_noon(day),  # history: received when it happened
    )
    return conversion
