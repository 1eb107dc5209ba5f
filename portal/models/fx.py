"""Exchange rates: what one unit of a currency is worth in another on a day."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import User
from portal.models.types import UTCDateTime, utcnow

# A rate as decimal text (exact: never a float): up to 12 digits before the point and 12 after.
RATE_TEXT_MAX = 25


class RateSource:
    ECB = "ecb"  # the European Central Bank's reference rates (CSV import)
    MANUAL = "manual"  # typed by an operator
    CSV = "csv"  # the portal's own CSV (base, quote, day, rate)


class ExchangeRate(db.Model):
    """1 ``base`` = ``rate`` ``quote`` on ``day`` (the ECB's: 1 EUR = 1.0812 USD).

    One rate a pair and day; importing the day again replaces it. A sale copies the rate it
    was converted at (``Conversion.fx_rate``), so a replaced rate never changes a past sale."""

    __tablename__ = "exchange_rates"
    __table_args__ = (
        sa.UniqueConstraint("base", "quote", "day", name="uq_exchange_rates_pair_day"),
        sa.CheckConstraint("base <> quote", name="pair_distinct"),
        sa.CheckConstraint("length(base) = 3 AND length(quote) = 3", name="currency_iso"),
        # Rates are looked up newest first by pair, within a week of the sale's day.
        sa.Index("ix_exchange_rates_quote_day", "quote", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    base: Mapped[str] = mapped_column(sa.String(3))
    quote: Mapped[str] = mapped_column(sa.String(3))
    day: Mapped[date] = mapped_column(sa.Date)
    rate: Mapped[str] = mapped_column(sa.String(RATE_TEXT_MAX))
    source: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))

    created_by: Mapped[User | None] = relationship()
