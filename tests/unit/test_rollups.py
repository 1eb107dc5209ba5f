"""The rollups always equal a recount of the raw rows.

Random programs of clicks (in batches, as the click writer stores them), signups,
conversions (some in yen, held until their exchange rate arrives, some of those above the
maximum sale once converted), partial and full refunds, rejections, approvals and rates
arriving, in time zones with odd offsets and around month, year and daylight-saving
boundaries, go through the real services. After every program the four rollup tables must
equal what a plain count over the clicks, signups, conversions and commission lines gives
(the partner grain's tier counters too: sales under review, sales waiting for a rate) — and
so must ``rebuild``, also after the program's time zone changes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portal.errors import DomainError
from portal.models import (
    COUNTERS,
    PARTNER_EXTRA_COUNTERS,
    Click,
    Commission,
    Conversion,
    ConversionStatus,
    CreativeDailyStat,
    DailyStat,
    ExchangeRate,
    PartnerDailyStat,
    PartnerStatus,
    ProgramDailyStat,
    RejectionReason,
    Signup,
)
from portal.models.types import utcnow
from portal.services import clicks, fx, rollups, tracking
from portal.services.links import create_link
from tests.factories import PartnerFactory, UserFactory

pytestmark = pytest.mark.postgres

# Instants next to the boundaries that move a day: month and year ends in UTC, the
# EU and US daylight-saving changes, and midnight in zones 5:30, 12:45 and 14 hours ahead.
BOUNDARIES = [
    datetime(2026, 1, 31, 23, 30, tzinfo=UTC),
    datetime(2026, 2, 28, 22, 50, tzinfo=UTC),
    datetime(2026, 3, 8, 9, 30, tzinfo=UTC),  # US clocks go forward
    datetime(2026, 3, 29, 0, 45, tzinfo=UTC),  # EU clocks go forward
    datetime(2026, 6, 30, 18, 40, tzinfo=UTC),  # midnight in Kolkata
    datetime(2026, 10, 25, 0, 50, tzinfo=UTC),  # EU clocks go back
    datetime(2026, 12, 31, 11, 10, tzinfo=UTC),  # midnight in Chatham
    datetime(2026, 12, 31, 23, 55, tzinfo=UTC),
]
TIMEZONES = [
    "UTC",
    "Europe/Berlin",
    "America/Los_Angeles",
    "America/St_Johns",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Australia/Sydney",
]

instants = st.builds(
    lambda base, minutes: base + timedelta(minutes=minutes),
    st.sampled_from(BOUNDARIES),
    st.integers(min_value=-200, max_value=200),
)
click_events = st.fixed_dictionaries(
    {
        "kind": st.just("click"),
        "partner": st.integers(0, 2),
        "link": st.sampled_from([None, 0, 1]),
        "bot": st.booleans(),
        "unique": st.booleans(),
        "sub": st.sampled_from([None, "top", "footer"]),
        "creative": st.sampled_from([None, 1, 7]),
        "at": instants,
    }
)
signup_events = st.fixed_dictionaries(
    {
        "kind": st.just("signup"),
        "by": st.sampled_from(["click", "ref", "nothing"]),
        "pick": st.integers(0, 50),
        "at": instants,
    }
)
conversion_events = st.fixed_dictionaries(
    {
        "kind": st.just("conversion"),
        "by": st.sampled_from(["click", "ref", "customer", "nothing"]),
        "pick": st.integers(0, 50),
        "amount": st.sampled_from([0, 1, 999, 4990, 12345]),
        "repeat": st.booleans(),  # same customer and amount as the one before: held for review
        "currency": st.sampled_from(["USD", "USD", "JPY"]),  # yen: held until its rate arrives
        "at": instants,
    }
)
rate_events = st.fixed_dictionaries({"kind": st.just("rate"), "pick": st.integers(0, 50)})
change_events = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["refund", "reject", "approve"]),
        "pick": st.integers(0, 50),
        "share": st.sampled_from([None, 1, 3]),  # refunds: all, or a third, or a single minor unit
        "reason": st.sampled_from(list(RejectionReason)),
    }
)
programs = st.lists(
    st.one_of(click_events, signup_events, conversion_events, change_events, rate_events),
    min_size=1,
    max_size=40,
)

# Always tried as well: a click's sale refunded in part, then in full; a held repeat
# approved, then rejected; a sale through an earlier signup rejected as fraud.
_CLICK = {"kind": "click", "partner": 0, "link": 1, "bot": False, "unique": True, "sub": "top", "creative": 7}
_SALE = {"kind": "conversion", "by": "click", "pick": 0, "amount": 12345, "repeat": False}
_CHANGE = {"pick": 0, "share": 3, "reason": RejectionReason.FRAUD_RISK}
EVERY_CHANGE = [
    {**_CLICK, "at": BOUNDARIES[3]},
    {**_CLICK, "bot": True, "at": BOUNDARIES[5]},
    {"kind": "signup", "by": "click", "pick": 0, "at": BOUNDARIES[6]},
    {**_SALE, "at": BOUNDARIES[7]},
    {**_CHANGE, "kind": "refund"},
    {**_CHANGE, "kind": "refund", "share": None},
    {**_SALE, "repeat": True, "at": BOUNDARIES[7]},
    {**_CHANGE, "kind": "approve", "pick": 1},
    {**_CHANGE, "kind": "reject", "pick": 1},
    {**_SALE, "by": "customer", "amount": 4990, "at": BOUNDARIES[0]},
    {**_CHANGE, "kind": "reject", "pick": 2},
]
# Sales in yen waiting for their rate: one refunded in part while held, one in full, one
# rejected by an operator, one above the maximum once converted, one two days before the
# others; then the rate of the others' day arrives (a rate serves the 7 days after it, never
# the days before: the early one waits on) and a last yen sale is converted as it comes.
_YEN = {**_SALE, "currency": "JPY", "amount": 4990}
EVERY_HELD = [
    {**_CLICK, "at": BOUNDARIES[6]},
    {**_YEN, "at": BOUNDARIES[6]},
    {**_CHANGE, "kind": "refund", "pick": 0},
    {**_YEN, "by": "ref", "pick": 1, "at": BOUNDARIES[7]},
    {**_CHANGE, "kind": "refund", "pick": 1, "share": None},
    {**_YEN, "by": "ref", "pick": 0, "at": BOUNDARIES[6]},
    {**_CHANGE, "kind": "reject", "pick": 2},
    {**_YEN, "amount": 12345, "at": BOUNDARIES[7]},
    {**_YEN, "by": "ref", "pick": 1, "at": BOUNDARIES[7] - timedelta(days=2)},
    {**_SALE, "at": BOUNDARIES[7]},
    {"kind": "rate", "pick": 0},
    {**_YEN, "by": "ref", "pick": 1, "at": BOUNDARIES[7]},
]


# --- the program under test --------------------------------------------------------------


@pytest.fixture
def world(db, program):
    """Three partners (the third suspended, whose old clicks stay) with two links each."""
    program.allowed_domains = ["shop.example"]
    operator = UserFactory()
    partners = [PartnerFactory(), PartnerFactory(), PartnerFactory()]
    links = [
        [
            create_link(p, program, label="blog", channel="seo"),
            create_link(p, program, label="ads", channel="ads", campaign="spring", sub_id="fixed"),
        ]
        for p in partners
    ]
    partners[2].status = PartnerStatus.SUSPENDED
    # A yen sale of 12,345 is $185.18 at the tests' rate: above the maximum once converted.
    program.max_sale_minor = 12_345
    db.session.flush()
    return program, operator, partners, links


YEN_RATE = "0.015"  # dollars for one yen


def _click_row(event: dict, partners, links, serial: int) -> dict:
    partner = partners[event["partner"]]
    link = None if event["link"] is None else links[event["partner"]][event["link"]]
    return {
        "id": f"{serial:032x}",
        "partner_id": partner.id,
        "link_id": link.id if link else None,
        "code": link.code if link else partner.ref_code,
        "channel": link.channel if link else "other",
        "campaign": link.campaign if link else None,
        "sub_id": event["sub"] or (link.sub_id if link else None),
        "creative_id": event["creative"],
        "destination_url": "https://shop.example/",
        "ip_hash": f"{serial:032x}",
        "user_agent": None,
        "referrer": None,
        "is_bot": event["bot"],
        "is_unique": event["unique"] and not event["bot"],
        "flagged": None,
        "created_at": event["at"],
    }


def run(events: list[dict], world, serial_start: int) -> None:
    """Play the events through the services, clicks in batches as the writer stores them."""
    from portal.extensions import db

    program, operator, partners, links = world
    click_ids: list[str] = []
    customers: list[str] = []
    conversions: list[Conversion] = []
    batch: list[dict] = []
    serial = serial_start

    def store_batch():
        if batch:
            clicks.store_clicks(db.session, list(batch))
            click_ids.extend(row["id"] for row in batch)
            batch.clear()

    for event in events:
        if event["kind"] == "click":
            serial += 1
            batch.append(_click_row(event, partners, links, serial))
            continue
        store_batch()
        serial += 1
        if event["kind"] == "signup":
            customer = f"cus-{serial}"
            data = tracking.SignupInput(customer_id=customer, occurred_at=event["at"])
            if event["by"] == "click" and click_ids:
                data.click_id = click_ids[event["pick"] % len(click_ids)]
            elif event["by"] == "ref":
                data.ref = partners[event["pick"] % len(partners)].ref_code
            tracking.record_signup(program, data, {"n": serial})
            customers.append(customer)
        elif event["kind"] == "conversion":
            previous = conversions[-1] if conversions and event["repeat"] else None
            data = tracking.ConversionInput(
                transaction_id=f"order-{serial}",
                amount_minor=previous.amount_minor if previous else event["amount"],
                currency=event.get("currency", program.currency),
                customer_id=previous.customer_id if previous else f"buyer-{serial}",
                occurred_at=event["at"],
            )
            if event["by"] == "click" and click_ids:
                data.click_id = click_ids[event["pick"] % len(click_ids)]
            elif event["by"] == "ref":
                data.ref = partners[event["pick"] % len(partners)].ref_code
            elif event["by"] == "customer" and customers:
                data.customer_id = customers[event["pick"] % len(customers)]
            try:
                conversion, _created = tracking.record_conversion(program, data, {"n": serial})
            except DomainError:
                continue  # converted at once above the maximum: refused, nothing stored
            conversions.append(conversion)
        elif event["kind"] == "rate":
            waiting = db.session.scalars(tracking.waiting_for_rate().order_by(Conversion.id)).all()
            if waiting:
                day = fx.sale_day(waiting[event["pick"] % len(waiting)].occurred_at)
                if not _has_rate(db, day):
                    db.session.add(
                        ExchangeRate(
                            base="JPY", quote="USD", day=day, rate=YEN_RATE, source="ecb", created_at=utcnow()
                        )
                    )
                    db.session.flush()
                tracking.convert_waiting(program)
        elif conversions:
            conversion = conversions[event["pick"] % len(conversions)]
            try:
                if event["kind"] == "refund":
                    left = conversion.amount_minor - conversion.refunded_minor
                    amount = None if event["share"] is None else max(1, left // event["share"])
                    tracking.refund_conversion(conversion, amount, "returned")
                elif event["kind"] == "reject":
                    tracking.reject_conversion(conversion, operator, event["reason"], "a note")
                else:
                    tracking.approve_conversion(program, conversion, operator)
            except DomainError:
                pass  # refused before anything changed: nothing to count
    store_batch()
    db.session.flush()


def _has_rate(db, day) -> bool:
    return db.session.scalar(sa.select(ExchangeRate.id).where(ExchangeRate.day == day)) is not None


# --- the oracle: plain counts over the raw rows -----------------------------------------


def _nonzero(grain: dict) -> dict:
    return {
        key: {name: value for name, value in counts.items() if value}
        for key, counts in grain.items()
        if any(counts.values())
    }


def recount(db, timezone: str) -> tuple[dict, dict, dict, dict]:
    zone = ZoneInfo(timezone)

    def day(instant):
        return instant.astimezone(zone).date()

    fine: dict[tuple, Counter] = defaultdict(Counter)
    extra: dict[tuple, Counter] = defaultdict(Counter)  # the partner grain's own counters
    for c in db.session.scalars(sa.select(Click)):
        key = (c.partner_id, day(c.created_at), c.link_id or 0, c.code, c.channel, c.campaign or "",
               c.creative_id or 0, c.sub_id or "")  # fmt: skip
        if c.is_bot:
            fine[key]["bot_clicks"] += 1
        else:
            fine[key]["clicks"] += 1
            fine[key]["unique_clicks"] += int(c.is_unique)

    def event_key(partner_id, click, at):
        if click is not None and click.partner_id == partner_id:
            return (partner_id, day(at), click.link_id or 0, click.code, click.channel, click.campaign or "",
                    click.creative_id or 0, click.sub_id or "")  # fmt: skip
        return (partner_id, day(at), 0, "", "", "", 0, "")

    for s in db.session.scalars(sa.select(Signup).where(Signup.partner_id.is_not(None))):
        fine[event_key(s.partner_id, s.click, s.occurred_at)]["signups"] += 1
    for v in db.session.scalars(sa.select(Conversion).where(Conversion.partner_id.is_not(None))):
        key = event_key(v.partner_id, v.click, v.occurred_at)
        counts = fine[key]
        counts["conversions"] += 1
        if v.status == ConversionStatus.REVIEW:
            extra[(key[1], key[0])]["sales_review_minor"] += v.amount_minor - v.refunded_minor
        extra[(key[1], key[0])]["conversions_held"] += int(v.status == ConversionStatus.HELD)
        counts["conversions_review"] += int(v.status == ConversionStatus.REVIEW)
        counts["conversions_rejected"] += int(v.status == ConversionStatus.REJECTED)
        if v.status != ConversionStatus.REJECTED:
            counts["sales_minor"] += v.amount_minor - v.refunded_minor
        counts["commission_minor"] += sum(
            db.session.scalars(sa.select(Commission.amount_minor).where(Commission.conversion_id == v.id))
        )
    partner: dict[tuple, Counter] = defaultdict(Counter)
    channel: dict[tuple, Counter] = defaultdict(Counter)
    creative: dict[tuple, Counter] = defaultdict(Counter)
    for key, counts in fine.items():
        partner[(key[1], key[0])].update(counts)
        channel[(key[1], key[4])].update(counts)
        creative[(key[1], key[6])].update(counts)
    for key, counts in extra.items():
        partner[key].update(counts)
    return _nonzero(fine), _nonzero(partner), _nonzero(channel), _nonzero(creative)


FINE_KEY = ("partner_id", "day", "link_id", "code", "channel", "campaign", "creative_id", "sub_id")


def stored(db) -> tuple[dict, dict, dict, dict]:
    def read(model, key_columns):
        # Summed by key: the program-wide grains keep one row per shard (partner id modulo).
        table = model.__table__
        counters = COUNTERS + tuple(name for name in PARTNER_EXTRA_COUNTERS if name in table.c)
        grain: dict[tuple, Counter] = defaultdict(Counter)
        for row in db.session.execute(sa.select(table)).mappings():
            grain[tuple(row[c] for c in key_columns)].update({name: row[name] for name in counters})
        return _nonzero({key: dict(counts) for key, counts in grain.items()})

    return (
        read(DailyStat, FINE_KEY),
        read(PartnerDailyStat, ("day", "partner_id")),
        read(ProgramDailyStat, ("day", "channel")),
        read(CreativeDailyStat, ("day", "creative_id")),
    )


def _assert_equal(actual: tuple, expected: tuple) -> None:
    for name, got, want in zip(("fine", "partner", "channel", "creative"), actual, expected, strict=True):
        assert got == want, f"{name} grain differs from the raw rows"


_serial = iter(range(10**6, 10**12, 10**4))


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=programs, timezone=st.sampled_from(TIMEZONES), later_zone=st.sampled_from(TIMEZONES))
@example(events=EVERY_CHANGE, timezone="Pacific/Chatham", later_zone="America/St_Johns")
@example(events=EVERY_HELD, timezone="Pacific/Kiritimati", later_zone="America/Los_Angeles")
def test_rollups_equal_a_recount_of_the_raw_rows(db, world, events, timezone, later_zone):
    # Each example starts from a clean identity map: SQLite hands out the ids of rows a
    # rolled-back example had inserted again, and the session must not remember those.
    db.session.expunge_all()
    world = (
        db.session.get(type(world[0]), world[0].id),
        db.session.get(type(world[1]), world[1].id),
        [db.session.get(type(p), p.id) for p in world[2]],
        [[db.session.get(type(link), link.id) for link in pair] for pair in world[3]],
    )
    program = world[0]
    savepoint = db.session.begin_nested()
    try:
        program.timezone = timezone
        db.session.flush()
        run(events, world, next(_serial))

        expected = recount(db, timezone)
        _assert_equal(stored(db), expected)  # kept up to date as the events arrived

        rollups.rebuild(db.session)
        _assert_equal(stored(db), expected)  # and a rebuild finds the same

        program.timezone = later_zone  # the zone changes: a rebuild moves every bucket
        db.session.flush()
        rollups.rebuild(db.session)
        _assert_equal(stored(db), recount(db, later_zone))
    finally:
        savepoint.rollback()


def test_a_refund_reaches_the_day_of_the_sale_not_the_day_of_the_refund(db, world):
    program, _operator, partners, _links = world
    program.timezone = "America/Los_Angeles"
    sale_at = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)  # 28 Feb, 23:30 in Los Angeles
    conversion, _ = tracking.record_conversion(
        program,
        tracking.ConversionInput("t-1", 10_000, "USD", ref=partners[0].ref_code, occurred_at=sale_at),
        {"t": 1},
        received_at=sale_at,
    )
    tracking.refund_conversion(conversion, 2_500, "one item back")
    rows = db.session.execute(sa.select(PartnerDailyStat)).scalars().all()
    assert [(r.day.isoformat(), r.conversions, r.sales_minor, r.commission_minor) for r in rows] == [
        ("2026-02-28", 1, 7_500, 750)
    ]
    tracking.refund_conversion(conversion, None, "all of it")
    db.session.expire_all()
    row = db.session.scalars(sa.select(PartnerDailyStat)).one()
    assert (row.conversions, row.conversions_rejected, row.sales_minor, row.commission_minor) == (1, 1, 0, 0)


def test_a_rejected_then_approved_review_moves_between_counters(db, world):
    program, operator, partners, _links = world
    # Both at noon yesterday: one day row, whatever the clock says when the test runs.
    noon = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    sale = {"customer_id": "c", "ref": partners[0].ref_code, "occurred_at": noon}
    first = tracking.ConversionInput("a", 5000, "USD", **sale)
    tracking.record_conversion(program, first, {"a": 1})
    second = tracking.ConversionInput("b", 5000, "USD", **sale)
    held, _ = tracking.record_conversion(program, second, {"b": 1})
    assert held.status == ConversionStatus.REVIEW

    def today():
        db.session.expire_all()
        row = db.session.scalars(sa.select(PartnerDailyStat)).one()
        return row.conversions, row.conversions_review, row.conversions_rejected, row.sales_minor

    assert today() == (2, 1, 0, 10_000)
    tracking.approve_conversion(program, held, operator)
    assert today() == (2, 0, 0, 10_000)
    tracking.reject_conversion(held, operator, RejectionReason.DUPLICATE, None)
    assert today() == (2, 0, 1, 5_000)


def test_unattributed_events_are_not_counted(db, world):
    program = world[0]
    tracking.record_signup(program, tracking.SignupInput("nobody's", ref="unknown"), {"s": 1})
    tracking.record_conversion(program, tracking.ConversionInput("x", 100, "USD"), {"x": 1})
    assert db.session.scalar(sa.select(sa.func.count()).select_from(DailyStat)) == 0
