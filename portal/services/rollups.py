"""Keeping the rollups (``portal.models.stats``) up to date as events arrive, and rebuilding them.

Every writer of clicks, signups and conversions adds to the rollups in its own
transaction, so a committed event is always counted once:

- the click writer aggregates a batch first, then writes one upsert per group;
- the tracking services count a signup when it is attributed, and a conversion
  by its *contribution* — what it adds to its day given its status, refunds and
  commission lines right now. A change (refund, rejection, approval) applies the
  difference between the contribution after and before, on the day the sale
  happened.

Days are calendar days in the program's time zone at the moment of writing. After
the time zone changes, ``flask portal rebuild-rollups`` (``rebuild``) recounts
everything from the raw rows; until then past buckets keep the days they had.

Writes are upserts (``INSERT … ON CONFLICT DO UPDATE``, PostgreSQL and SQLite ≥ 3.24)
in key order, so concurrent writers lock rows in the same order and never deadlock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from portal.extensions import db
from portal.models import (
    COUNTERS,
    Click,
    Commission,
    Conversion,
    ConversionStatus,
    DailyStat,
    Partner,
    PartnerDailyStat,
    Program,
    ProgramDailyStat,
    Signup,
)

Executor = Session | sa.Connection


@dataclass(frozen=True, order=True)
class Key:
    """The finest grain: a partner's day for one link, channel, campaign, creative and sub-ID.

    The defaults are the sentinels stored for "none" (see ``portal.models.stats``):
    an event attributed without a click has ``Key(partner_id, day)``.
    """

    partner_id: int
    day: date
    link_id: int = 0
    code: str = ""
    channel: str = ""
    campaign: str = ""
    creative_id: int = 0
    sub_id: str = ""


_KEY_FIELDS = tuple(Key.__dataclass_fields__)
_CLICK_LABELS = ("link_id", "code", "channel", "campaign", "creative_id", "sub_id")


class Tally:
    """Counter changes per key, summed in memory before they reach the database."""

    def __init__(self) -> None:
        self.rows: dict[Key, Counter] = {}

    def add(self, key: Key, counts: Mapping[str, int], sign: int = 1) -> None:
        row = self.rows.setdefault(key, Counter())
        for name, value in counts.items():
            row[name] += sign * value

    def partners(self) -> set[int]:
        return {key.partner_id for key, counts in self.rows.items() if any(counts.values())}

    def __bool__(self) -> bool:
        return any(any(counts.values()) for counts in self.rows.values())


# --- days and keys ---------------------------------------------------------------------


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(instant: datetime, timezone: str) -> date:
    """The calendar day of ``instant`` (aware) in ``timezone``."""
    return instant.astimezone(_zone(timezone)).date()


def _program_timezone(executor: Executor) -> str:
    tz = executor.execute(sa.select(Program.timezone).order_by(Program.id).limit(1)).scalar()
    return tz or "UTC"


def click_key(row: Mapping, timezone: str) -> Key:
    """A click row's key (``row`` as inserted, or a Click's attributes)."""
    return Key(
        partner_id=row["partner_id"],
        day=local_day(row["created_at"], timezone),
        link_id=row["link_id"] or 0,
        code=row["code"] or "",
        channel=row["channel"] or "",
        campaign=row["campaign"] or "",
        creative_id=row["creative_id"] or 0,
        sub_id=row["sub_id"] or "",
    )


def click_counts(is_bot: bool, is_unique: bool) -> dict[str, int]:
    if is_bot:
        return {"bot_clicks": 1}
    return {"clicks": 1, "unique_clicks": 1 if is_unique else 0}


def event_key(partner_id: int, click: Click | Mapping | None, occurred_at: datetime, timezone: str) -> Key:
    """A signup's or conversion's key: its click's link and labels, if the click is the partner's."""
    if click is None:
        return Key(partner_id, local_day(occurred_at, timezone))
    if not isinstance(click, Mapping):
        click = {name: getattr(click, name) for name in (*_CLICK_LABELS, "partner_id")}
    if click["partner_id"] != partner_id:
        return Key(partner_id, local_day(occurred_at, timezone))
    return click_key({**click, "created_at": occurred_at}, timezone)


def conversion_counts(status: str, amount_minor: int, refunded_minor: int, commission_minor: int) -> dict:
    """What one attributed conversion adds to its bucket in its present state."""
    rejected = status == ConversionStatus.REJECTED
    return {
        "conversions": 1,
        "conversions_review": 1 if status == ConversionStatus.REVIEW else 0,
        "conversions_rejected": 1 if rejected else 0,
        "sales_minor": 0 if rejected else amount_minor - refunded_minor,
        "commission_minor": commission_minor,
    }


# --- writing ---------------------------------------------------------------------------


def _dialect(executor: Executor) -> str:
    # A Session (or Flask-SQLAlchemy's scoped one) answers get_bind(); a Connection is the bind.
    bind = executor.get_bind() if hasattr(executor, "get_bind") else executor
    return bind.dialect.name


def _upsert(executor: Executor, table: sa.Table, key_columns: tuple[str, ...], rows: list[dict]) -> None:
    if not rows:
        return
    insert = postgresql.insert if _dialect(executor) == "postgresql" else sqlite.insert
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=list(key_columns),
        set_={name: table.c[name] + statement.excluded[name] for name in COUNTERS},
    )
    executor.execute(statement, rows)


def _rows(grain: Mapping[tuple, Counter], key_columns: tuple[str, ...]) -> list[dict]:
    # Sorted: every writer takes row locks in the same order.
    return [
        {**dict(zip(key_columns, key, strict=True)), **{name: counts[name] for name in COUNTERS}}
        for key, counts in sorted(grain.items())
        if any(counts.values())
    ]


_FINE = _KEY_FIELDS
_PARTNER = ("day", "partner_id")
_PROGRAM = ("day", "channel", "creative_id")


def _grains(tally: Tally) -> tuple[dict, dict, dict]:
    fine: dict[tuple, Counter] = {}
    partner: dict[tuple, Counter] = {}
    program: dict[tuple, Counter] = {}
    for key, counts in tally.rows.items():
        if not any(counts.values()):
            continue
        fine.setdefault(tuple(getattr(key, f) for f in _FINE), Counter()).update(counts)
        partner.setdefault((key.day, key.partner_id), Counter()).update(counts)
        program.setdefault((key.day, key.channel, key.creative_id), Counter()).update(counts)
    return fine, partner, program


def _write_grains(executor: Executor, fine: dict, partner: dict, program: dict) -> None:
    # Always in this order (finest first), for the same reason as the sorting.
    _upsert(executor, DailyStat.__table__, _FINE, _rows(fine, _FINE))
    _upsert(executor, PartnerDailyStat.__table__, _PARTNER, _rows(partner, _PARTNER))
    _upsert(executor, ProgramDailyStat.__table__, _PROGRAM, _rows(program, _PROGRAM))


def write(executor: Executor, tally: Tally) -> None:
    """Add a tally to all three grains."""
    if tally:
        _write_grains(executor, *_grains(tally))


def count_clicks(executor: Executor, rows: Iterable[Mapping], timezone: str | None = None) -> set[int]:
    """Count a batch of click rows (as inserted); returns the partners it concerns."""
    timezone = timezone or _program_timezone(executor)
    tally = Tally()
    for row in rows:
        tally.add(click_key(row, timezone), click_counts(row["is_bot"], row["is_unique"]))
    write(executor, tally)
    return tally.partners()


def count_signup(signup: Signup) -> None:
    """Count an attributed signup (in the session's transaction)."""
    if signup.partner_id is None:
        return
    timezone = _program_timezone(db.session)
    tally = Tally()
    tally.add(event_key(signup.partner_id, signup.click, signup.occurred_at, timezone), {"signups": 1})
    write(db.session, tally)


@dataclass(frozen=True)
class Contribution:
    """What one conversion adds to the rollups at one moment."""

    key: Key
    counts: dict[str, int] = field(default_factory=dict)


def contribution(conversion: Conversion) -> Contribution | None:
    """The conversion's share of its bucket now; None when no partner earns from it."""
    if conversion.partner_id is None:
        return None
    timezone = _program_timezone(db.session)
    return Contribution(
        key=event_key(conversion.partner_id, conversion.click, conversion.occurred_at, timezone),
        counts=conversion_counts(
            conversion.status,
            conversion.amount_minor,
            conversion.refunded_minor,
            sum(line.amount_minor for line in conversion.commissions),
        ),
    )


def count_conversion(conversion: Conversion, before: Contribution | None = None) -> None:
    """Apply the change in the conversion's contribution since ``before`` (None: a new conversion)."""
    after = contribution(conversion)
    tally = Tally()
    if before is not None:
        tally.add(before.key, before.counts, sign=-1)
    if after is not None:
        tally.add(after.key, after.counts)
    write(db.session, tally)


# --- rebuilding ------------------------------------------------------------------------

_TABLES = (DailyStat.__table__, PartnerDailyStat.__table__, ProgramDailyStat.__table__)
_CHUNK = 10_000


@dataclass
class RebuildSummary:
    clicks: int = 0
    signups: int = 0
    conversions: int = 0
    rows: int = 0


def _lock_for_rebuild(session: Session) -> None:
    if _dialect(session) == "postgresql":
        # Writers wait (their raw rows are not visible to us yet) and count after we commit.
        names = ", ".join(table.name for table in _TABLES)
        session.execute(sa.text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))


def rebuild(session: Session, timezone: str | None = None) -> RebuildSummary:
    """Recount every rollup from the raw rows, partner by partner. The caller commits.

    Memory stays bounded: one partner's buckets at a time, plus the program's.
    On SQLite start the transaction with ``begin_write`` so no event slips in between.
    """
    timezone = timezone or _program_timezone(session)
    _lock_for_rebuild(session)
    for table in _TABLES:
        session.execute(sa.delete(table))
    summary = RebuildSummary()
    program: dict[tuple, Counter] = {}
    partner_ids = session.scalars(sa.select(Partner.id).order_by(Partner.id)).all()
    for partner_id in partner_ids:
        tally = Tally()
        summary.clicks += _tally_clicks(session, tally, partner_id, timezone)
        summary.signups += _tally_signups(session, tally, partner_id, timezone)
        summary.conversions += _tally_conversions(session, tally, partner_id, timezone)
        fine, partner, program_part = _grains(tally)
        for key, counts in program_part.items():
            program.setdefault(key, Counter()).update(counts)
        _write_grains(session, fine, partner, {})
        summary.rows += len(fine)
    _write_grains(session, {}, {}, program)
    return summary


def _stream(session: Session, query: sa.Select):
    return session.execute(query.execution_options(yield_per=_CHUNK)).mappings()


def _tally_clicks(session: Session, tally: Tally, partner_id: int, timezone: str) -> int:
    query = sa.select(
        Click.partner_id,
        Click.created_at,
        Click.link_id,
        Click.code,
        Click.channel,
        Click.campaign,
        Click.creative_id,
        Click.sub_id,
        Click.is_bot,
        Click.is_unique,
    ).where(Click.partner_id == partner_id)
    count = 0
    for row in _stream(session, query):
        tally.add(click_key(row, timezone), click_counts(row["is_bot"], row["is_unique"]))
        count += 1
    return count


def _click_columns() -> list:
    return [
        Click.partner_id.label("click_partner_id"),
        Click.link_id,
        Click.code,
        Click.channel,
        Click.campaign,
        Click.creative_id,
        Click.sub_id,
    ]


def _click_of(row: Mapping) -> dict | None:
    if row["click_partner_id"] is None:
        return None
    return {
        "partner_id": row["click_partner_id"],
        **{name: row[name] for name in _CLICK_LABELS},
    }


def _tally_signups(session: Session, tally: Tally, partner_id: int, timezone: str) -> int:
    query = (
        sa.select(Signup.occurred_at, *_click_columns())
        .outerjoin(Click, Click.id == Signup.click_id)
        .where(Signup.partner_id == partner_id)
    )
    count = 0
    for row in _stream(session, query):
        tally.add(event_key(partner_id, _click_of(row), row["occurred_at"], timezone), {"signups": 1})
        count += 1
    return count


def _tally_conversions(session: Session, tally: Tally, partner_id: int, timezone: str) -> int:
    commission = (
        sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0))
        .where(Commission.conversion_id == Conversion.id)
        .scalar_subquery()
    )
    query = (
        sa.select(
            Conversion.occurred_at,
            Conversion.status,
            Conversion.amount_minor,
            Conversion.refunded_minor,
            commission.label("commission_minor"),
            *_click_columns(),
        )
        .outerjoin(Click, Click.id == Conversion.click_id)
        .where(Conversion.partner_id == partner_id)
    )
    count = 0
    for row in _stream(session, query):
        tally.add(
            event_key(partner_id, _click_of(row), row["occurred_at"], timezone),
            conversion_counts(
                row["status"], row["amount_minor"], row["refunded_minor"], int(row["commission_minor"])
            ),
        )
        count += 1
    return count
