"""Keeping the rollups (``portal.models.stats``) up to date as events arrive, and rebuilding them.

Every writer of clicks, signups and conversions adds to the rollups in its own
transaction, so a committed event is always counted once:

- the click writer aggregates a batch first, then writes one upsert per group;
- the tracking services count a signup when it is attributed, and a conversion
  by its *contribution* — what it adds to its day given its status, refunds and
  commission lines right now. A change (refund, rejection, approval, a held sale
  converted when its exchange rate arrives) applies the difference between the
  contribution after and before, on the day the sale happened.

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
from sqlalchemy.orm import Session

from portal.database import dialect_insert, insert_from_json_sql, json_rows
from portal.extensions import db
from portal.models import (
    COUNTERS,
    PARTNER_EXTRA_COUNTERS,
    ROLLUP_SHARDS,
    Click,
    Commission,
    Conversion,
    ConversionStatus,
    CreativeDailyStat,
    DailyStat,
    PartnerDailyStat,
    PartnerTrend,
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

    @property
    def shard(self) -> int:
        """Which of the program-wide rows of its day this partner's events add to."""
        return self.partner_id % ROLLUP_SHARDS


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
    review = status == ConversionStatus.REVIEW
    return {
        "conversions": 1,
        "conversions_review": 1 if review else 0,
        "conversions_rejected": 1 if rejected else 0,
        "sales_minor": 0 if rejected else amount_minor - refunded_minor,
        "commission_minor": commission_minor,
        # The partner grain only: so that tiers count accepted sales from the counters. A sale
        # waiting for its exchange rate is not accepted yet (its amounts are 0 until converted).
        "sales_review_minor": amount_minor - refunded_minor if review else 0,
        "conversions_held": 1 if status == ConversionStatus.HELD else 0,
    }


# --- writing ---------------------------------------------------------------------------


def _dialect(executor: Executor) -> str:
    # A Session (or Flask-SQLAlchemy's scoped one) answers get_bind(); a Connection is the bind.
    bind = executor.get_bind() if hasattr(executor, "get_bind") else executor
    return bind.dialect.name


# Built once per dialect and table: building (and so re-keying) an upsert for every event
# cost more than running it.
_UPSERTS: dict[tuple[str, str], sa.Insert] = {}


def _counters_of(table: sa.Table) -> tuple[str, ...]:
    return COUNTERS + tuple(name for name in PARTNER_EXTRA_COUNTERS if name in table.c)


def _upsert_statement(dialect: str, table: sa.Table, key_columns: tuple[str, ...]) -> sa.Insert:
    statement = _UPSERTS.get((dialect, table.name))
    if statement is None:
        insert = dialect_insert(dialect, table)
        statement = insert.on_conflict_do_update(
            index_elements=list(key_columns),
            set_={name: table.c[name] + insert.excluded[name] for name in _counters_of(table)},
        )
        _UPSERTS[(dialect, table.name)] = statement
    return statement


def _upsert(executor: Executor, table: sa.Table, key_columns: tuple[str, ...], rows: list[dict]) -> None:
    if not rows:
        return
    executor.execute(_upsert_statement(_dialect(executor), table, key_columns), rows)


def _rows(
    grain: Mapping[tuple, Counter], key_columns: tuple[str, ...], counters: tuple[str, ...]
) -> list[dict]:
    # Sorted: every writer takes row locks in the same order.
    return [
        {**dict(zip(key_columns, key, strict=True)), **{name: counts[name] for name in counters}}
        for key, counts in sorted(grain.items())
        if any(counts[name] for name in counters)
    ]


@dataclass(frozen=True)
class Grain:
    """One rollup table: its key columns, and how a fine key maps onto them."""

    table: sa.Table
    key_columns: tuple[str, ...]
    small: bool  # bounded by days × a program-wide list (channels, creatives): kept whole in memory

    def key_of(self, key: Key) -> tuple:
        return tuple(getattr(key, name) for name in self.key_columns)


# Finest first, always written in this order (for the same reason as the sorting).
GRAINS = (
    Grain(DailyStat.__table__, _KEY_FIELDS, small=False),
    Grain(PartnerDailyStat.__table__, ("day", "partner_id"), small=False),
    Grain(ProgramDailyStat.__table__, ("day", "channel", "shard"), small=True),
    Grain(CreativeDailyStat.__table__, ("day", "creative_id", "shard"), small=True),
)


def _grains(tally: Tally) -> list[dict[tuple, Counter]]:
    grains: list[dict[tuple, Counter]] = [{} for _ in GRAINS]
    for key, counts in tally.rows.items():
        if not any(counts.values()):
            continue
        for grain, rows in zip(GRAINS, grains, strict=True):
            rows.setdefault(grain.key_of(key), Counter()).update(counts)
    return grains


def _write_grains(executor: Executor, grains: list[dict[tuple, Counter]]) -> None:
    # Each row written to the finest grain also marks its partner's cached 30-day trend
    # stale (PartnerTrend.version + 1): a trigger does it (migration 0014), one statement
    # less after every event.
    if _dialect(executor) == "postgresql":
        _write_grains_at_once(executor, grains)
        return
    for grain, rows in zip(GRAINS, grains, strict=True):
        counters = _counters_of(grain.table)
        _upsert(executor, grain.table, grain.key_columns, _rows(rows, grain.key_columns, counters))


_AT_ONCE: list[sa.TextClause] = []


def _upsert_from_json(grain: Grain, index: int) -> str:
    """One grain's upsert as SQL whose rows arrive as one JSON document (``:g<index>``), so
    the text is the same for one row or ten thousand, in the order given (row locks sorted)."""
    table = grain.table
    counters = _counters_of(table)
    columns = (*grain.key_columns, *counters)
    updates = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in counters)
    conflict = f"ON CONFLICT ({', '.join(grain.key_columns)}) DO UPDATE SET {updates}"
    return insert_from_json_sql(table, columns, conflict, param=f"g{index}")


def _write_grains_at_once(executor: Executor, grains: list[dict[tuple, Counter]]) -> None:
    """PostgreSQL: every grain in one statement (data-modifying CTEs), one round trip instead
    of four. The CTEs run in the same order in every transaction, rows sorted within each."""
    if not _AT_ONCE:
        parts = [_upsert_from_json(grain, index) for index, grain in enumerate(GRAINS)]
        ctes = ", ".join(f"grain{index} AS ({part})" for index, part in enumerate(parts[:-1]))
        _AT_ONCE.append(sa.text(f"WITH {ctes} {parts[-1]}"))
    params = {
        f"g{index}": json_rows(_rows(rows, grain.key_columns, _counters_of(grain.table)))
        for index, (grain, rows) in enumerate(zip(GRAINS, grains, strict=True))
    }
    executor.execute(_AT_ONCE[0], params)


def write(executor: Executor, tally: Tally) -> None:
    """Add a tally to every grain."""
    if tally:
        _write_grains(executor, _grains(tally))


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


def contribution(conversion: Conversion, timezone: str | None = None) -> Contribution | None:
    """The conversion's share of its bucket now; None when no partner earns from it.
    ``timezone``: the program's, when the caller has it at hand (else it is read)."""
    if conversion.partner_id is None:
        return None
    timezone = timezone or _program_timezone(db.session)
    return Contribution(
        key=event_key(conversion.partner_id, conversion.click, conversion.occurred_at, timezone),
        counts=conversion_counts(
            conversion.status,
            conversion.amount_minor,
            conversion.refunded_minor,
            sum(line.amount_minor for line in conversion.commissions),
        ),
    )


def count_conversion(
    conversion: Conversion,
    before: Contribution | None = None,
    timezone: str | None = None,
    *,
    into: Tally | None = None,
) -> None:
    """Apply the change in the conversion's contribution since ``before`` (None: a new conversion).
    ``into``: add it to that tally instead, written later with others (a batch of sales)."""
    after = contribution(conversion, timezone)
    tally = into if into is not None else Tally()
    if before is not None:
        tally.add(before.key, before.counts, sign=-1)
    if after is not None:
        tally.add(after.key, after.counts)
    if into is None:
        write(db.session, tally)


# --- rebuilding ------------------------------------------------------------------------

_TABLES = (
    *(grain.table for grain in GRAINS),
    PartnerTrend.__table__,  # a cache over the partner days: emptied, it refills as it is read
)
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
    """Recount every rollup from the raw rows, in one pass over each table. The caller commits.

    Memory stays bounded: buckets are written whenever ``_CHUNK`` have gathered (rows
    arrive in roughly the order they were written, so a bucket rarely spans two
    writes, and when it does the upsert adds the two parts). On SQLite start the
    transaction with ``begin_write`` so no event slips in between.
    """
    timezone = timezone or _program_timezone(session)
    _lock_for_rebuild(session)
    for table in _TABLES:
        session.execute(sa.delete(table))
    recount = _Recount(session)
    summary = RebuildSummary(
        clicks=_tally_clicks(session, recount, timezone),
        signups=_tally_signups(session, recount, timezone),
        conversions=_tally_conversions(session, recount, timezone),
    )
    recount.finish()
    summary.rows = session.scalar(sa.select(sa.func.count()).select_from(DailyStat)) or 0
    return summary


class _Recount:
    """Buckets recounted from raw rows, written to the database a chunk at a time."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.tally = Tally()
        self.whole: list[dict[tuple, Counter]] = [{} for _ in GRAINS]  # the small grains

    def add(self, key: Key, counts: Mapping[str, int]) -> None:
        self.tally.add(key, counts)
        if len(self.tally.rows) >= _CHUNK:
            self.write()

    def write(self) -> None:
        grains = _grains(self.tally)
        for index, grain in enumerate(GRAINS):
            if grain.small:
                for key, counts in grains[index].items():
                    self.whole[index].setdefault(key, Counter()).update(counts)
                grains[index] = {}
        _write_grains(self.session, grains)
        self.tally = Tally()

    def finish(self) -> None:
        self.write()
        _write_grains(self.session, self.whole)


def _stream(session: Session, query: sa.Select):
    return session.execute(query.execution_options(yield_per=_CHUNK)).mappings()


def _tally_clicks(session: Session, recount: _Recount, timezone: str) -> int:
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
    )
    count = 0
    for row in _stream(session, query):
        recount.add(click_key(row, timezone), click_counts(row["is_bot"], row["is_unique"]))
        count += 1
    return count


def _click_columns() -> list:
    return [Click.partner_id.label("click_partner_id"), *(getattr(Click, name) for name in _CLICK_LABELS)]


def _click_of(row: Mapping) -> dict | None:
    if row["click_partner_id"] is None:
        return None
    return {"partner_id": row["click_partner_id"], **{name: row[name] for name in _CLICK_LABELS}}


def _tally_signups(session: Session, recount: _Recount, timezone: str) -> int:
    query = (
        sa.select(Signup.partner_id, Signup.occurred_at, *_click_columns())
        .outerjoin(Click, Click.id == Signup.click_id)
        .where(Signup.partner_id.is_not(None))
    )
    count = 0
    for row in _stream(session, query):
        recount.add(
            event_key(row["partner_id"], _click_of(row), row["occurred_at"], timezone), {"signups": 1}
        )
        count += 1
    return count


def _tally_conversions(session: Session, recount: _Recount, timezone: str) -> int:
    commission = (
        sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0))
        .where(Commission.conversion_id == Conversion.id)
        .scalar_subquery()
    )
    query = (
        sa.select(
            Conversion.partner_id,
            Conversion.occurred_at,
            Conversion.status,
            Conversion.amount_minor,
            Conversion.refunded_minor,
            commission.label("commission_minor"),
            *_click_columns(),
        )
        .outerjoin(Click, Click.id == Conversion.click_id)
        .where(Conversion.partner_id.is_not(None))
    )
    count = 0
    for row in _stream(session, query):
        recount.add(
            event_key(row["partner_id"], _click_of(row), row["occurred_at"], timezone),
            conversion_counts(
                row["status"], row["amount_minor"], row["refunded_minor"], int(row["commission_minor"])
            ),
        )
        count += 1
    return count
