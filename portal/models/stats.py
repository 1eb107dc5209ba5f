"""Rollups: counters per day, kept up to date as events arrive, so reports never scan history.

Four grains, each keyed by the day in the program's time zone:

- ``DailyStat``: partner × link × code × channel × campaign × creative × sub-ID — the
  partner's breakdowns;
- ``PartnerDailyStat``: partner — the partner's figures and chart, the operators' partner lists;
- ``ProgramDailyStat``: channel — the program's figures, chart and channel leaderboard;
- ``CreativeDailyStat``: creative — the creative leaderboard.

The coarse grains exist so that a page reads a few rows per day, not one per partner
and combination. ``PartnerTrend`` (below) caches each partner's 30-day windows.

Every key column is NOT NULL (a primary key), because NULLs are distinct in unique
indexes and an upsert would never find its row. "None" is stored as a sentinel:
``link_id = 0`` (the partner's ref-code link, or no click), ``code = ''`` and
``channel = ''`` (attributed without a click: by ref code or an earlier signup),
``campaign = ''``, ``creative_id = 0``, ``sub_id = ''``. ``link_id`` has no foreign key
for the same reason; links are switched off, never deleted.

Conversions count on the day they occurred (not the day they were reported), and
so do their refunds, rejections and commission corrections: a bucket always equals
what a recount of the raw rows gives today (``flask portal rebuild-rollups``).

Partner rows go with their partner (ON DELETE CASCADE); the program-wide grains are not
keyed by partner and keep what a deleted partner had counted until a rebuild. (The
portal never deletes partners: a partner with commission lines cannot be deleted.)

There are deliberately no CHECK constraints on the counters: a change is written as
a signed delta by upsert (the database checks the proposed row, negative delta and
all, before it finds the conflict), and a report table must never be able to make a
refund or a click fail. The property tests and the rebuild keep the counters honest.

Every row written to ``stats_daily`` bumps the partner's ``PartnerTrend.version`` by a
database trigger (migration 0014), in the writer's transaction.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db

# The counters every grain carries, in one place for the services.
COUNTERS = (
    "clicks",  # human clicks (bots excluded)
    "unique_clicks",  # first click of a visitor on a link in a day, not flagged
    "bot_clicks",  # counted apart, never in conversion rates
    "signups",  # attributed signups
    "conversions",  # attributed conversions, whatever their status
    "conversions_review",  # of which held for an operator now
    "conversions_rejected",  # of which rejected now (refund, fraud, …)
    "sales_minor",  # sales of the conversions not rejected, less refunds (program currency)
    "commission_minor",  # net commission of those conversions: base less reversals and clawbacks
)

# Counters only the partner grain carries (read by the rewards engine, not by reports).
PARTNER_EXTRA_COUNTERS = ("sales_review_minor", "conversions_held")

# How many rows the program-wide day rows are split into (by partner id): a partner's
# events land in one shard; events of different partners rarely share a row lock.
ROLLUP_SHARDS = 16


class _Counters:
    clicks: Mapped[int] = mapped_column(default=0, server_default="0")
    unique_clicks: Mapped[int] = mapped_column(default=0, server_default="0")
    bot_clicks: Mapped[int] = mapped_column(default=0, server_default="0")
    signups: Mapped[int] = mapped_column(default=0, server_default="0")
    conversions: Mapped[int] = mapped_column(default=0, server_default="0")
    conversions_review: Mapped[int] = mapped_column(default=0, server_default="0")
    conversions_rejected: Mapped[int] = mapped_column(default=0, server_default="0")
    sales_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    commission_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


class DailyStat(_Counters, db.Model):
    """One partner's figures for one day and one combination of link, channel, campaign, creative, sub-ID."""

    __tablename__ = "stats_daily"

    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    link_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    campaign: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    creative_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    sub_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)


class PartnerDailyStat(_Counters, db.Model):
    """One partner's figures for one day."""

    __tablename__ = "stats_partner_daily"
    __table_args__ = (sa.Index("ix_stats_partner_daily_partner_day", "partner_id", "day"),)

    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True
    )
    # Of ``sales_minor``, what conversions held for review add: tiers count only accepted
    # sales (``rewards.tier_probe``). This grain only (``PARTNER_EXTRA_COUNTERS``).
    sales_review_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # Of ``conversions``, those waiting for their exchange rate (status ``held``): not accepted
    # yet, so tiers leave them out until the rate arrives (migration 0023). Their sales are 0
    # until then (``amount_minor`` is 0 while held), so ``sales_minor`` needs no such column.
    conversions_held: Mapped[int] = mapped_column(default=0, server_default="0")


class ProgramDailyStat(_Counters, db.Model):
    """The whole program's figures for one day and channel, in ``ROLLUP_SHARDS`` rows by
    partner (``shard``: partner id modulo it) so that writers of different partners never
    wait for each other's row; readers sum over the shards."""

    __tablename__ = "stats_program_daily"

    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, server_default="0")


class CreativeDailyStat(_Counters, db.Model):
    """The whole program's figures for one day and creative (0: clicks without one), in
    shards as ``ProgramDailyStat``."""

    __tablename__ = "stats_creative_daily"

    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    creative_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    shard: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, server_default="0")


class PartnerTrend(_Counters, db.Model):
    """One partner's last 30 days (the counters) and the 30 before, as of ``as_of``.

    A cache over ``PartnerDailyStat`` so the operators' partner lists read one row per
    partner instead of 60: every event for the partner bumps ``version``; the row is
    fresh only while ``computed_version == version`` and ``as_of`` is today. Readers
    recompute stale rows and store them only if ``version`` has not moved meanwhile.
    """

    __tablename__ = "stats_partner_trends"

    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    version: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    computed_version: Mapped[int | None] = mapped_column(sa.BigInteger)
    as_of: Mapped[date | None] = mapped_column(sa.Date)
    clicks_before: Mapped[int] = mapped_column(default=0, server_default="0")
    conversions_before: Mapped[int] = mapped_column(default=0, server_default="0")
    last_click: Mapped[date | None] = mapped_column(sa.Date)
