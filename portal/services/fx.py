"""Exchange rates: the table operators fill, the ECB's CSV, and converting a sale's amount.

The rules, as shipped:

- **A sale's day** is the UTC date of its ``occurred_at``. It is converted at the newest
  rate of that day or of the 7 days before (``LOOKBACK_DAYS``); with none, the sale is
  held until one arrives (``tracking.convert_waiting``).
- **A rate's path**, on the newest day that has one: the pair itself (1 sale currency =
  r program currency), else its inverse (1 program = r sale: 1/r), else across a third
  currency both are quoted against that day (the ECB quotes everything against EUR:
  r(EUR→program) / r(EUR→sale)).
- **The rate kept on the sale** (``Conversion.fx_rate``) is the program's units for one unit
  of the sale's currency, as decimal text rounded half to even to 12 significant digits (an
  ECB rate used directly stays exact). Every amount of the sale is computed from that text
  alone: ``round_half_even(original minor × rate × 10^(program decimals − sale decimals))``.
- **Refunds** are sent in the sale's currency and converted at the sale's rate, cumulatively:
  ``refunded_minor = convert(every refund so far)``, so refunds in parts add up exactly to
  the whole sale.
- A day imported again replaces that day's rate; a sale already converted keeps its own.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

import sqlalchemy as sa
from flask_babel import gettext as _

from portal.currencies import is_iso_currency
from portal.database import dialect_insert
from portal.errors import DomainError
from portal.extensions import db
from portal.models import ExchangeRate, RateSource, User
from portal.models.types import utcnow
from portal.money import currency_exponent
from portal.services.audit import record_event
from portal.services.rewards import round_half_even

LOOKBACK_DAYS = 7
SIGNIFICANT_DIGITS = 12
_RATE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,12})?")
_KEPT = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_HALF_EVEN)


class RatesFileError(DomainError):
    """The file is not the ECB's CSV (or a zip holding it); the message says why."""

    def __init__(self, message: str):
        super().__init__(message, "file")


def parse_rate(text: str | None) -> Decimal:
    """A rate as typed or published ("1.0812", "162.47") → Decimal; ValueError unless it is a
    plain positive decimal of ASCII digits (at most 12 before and 12 after the point)."""
    cleaned = (text or "").strip()
    if not _RATE.fullmatch(cleaned):
        raise ValueError("not a plain decimal rate")
    value = Decimal(cleaned)
    if value <= 0:
        raise ValueError("a rate is more than zero")
    return value


def rate_text(value: Decimal | Fraction) -> str:
    """A rate as stored: decimal text without exponent or trailing zeros, 12 significant digits
    at most (rounded half to even)."""
    if isinstance(value, Fraction):
        value = _KEPT.divide(Decimal(value.numerator), Decimal(value.denominator))
    else:
        value = _KEPT.plus(value)
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def convert_minor(amount_minor: int, from_currency: str, to_currency: str, rate: str) -> int:
    """``amount_minor`` of ``from_currency`` in minor units of ``to_currency`` at ``rate`` (units
    of ``to_currency`` for one of ``from_currency``), exact, rounded half to even."""
    value = Fraction(amount_minor) * Fraction(rate)
    shift = currency_exponent(to_currency) - currency_exponent(from_currency)
    value *= Fraction(10) ** shift
    return round_half_even(value.numerator, value.denominator)


@dataclass(frozen=True)
class FoundRate:
    """The rate a sale is converted at: program units for one unit of the sale's currency."""

    rate: str
    day: date
    source: str


def sale_day(occurred_at: datetime) -> date:
    return occurred_at.date()  # stored in UTC


def find_rate(sale_currency: str, program_currency: str, day: date) -> FoundRate | None:
    """The rate for ``day`` by the rules above (one query), or None."""
    wanted = (sale_currency, program_currency)
    rows = db.session.execute(
        sa.select(
            ExchangeRate.base, ExchangeRate.quote, ExchangeRate.day, ExchangeRate.rate, ExchangeRate.source
        )
        .where(
            ExchangeRate.day.between(day - timedelta(days=LOOKBACK_DAYS), day),
            sa.or_(ExchangeRate.base.in_(wanted), ExchangeRate.quote.in_(wanted)),
        )
        .order_by(ExchangeRate.day.desc())
    ).all()
    by_day: dict[date, dict[tuple[str, str], tuple[str, str]]] = {}
    for base, quote, on, rate, source in rows:
        by_day.setdefault(on, {})[(base, quote)] = (rate, source)
    for on in sorted(by_day, reverse=True):
        found = _path(by_day[on], sale_currency, program_currency)
        if found is not None:
            value, source = found
            return FoundRate(rate_text(value), on, source)
    return None


def _path(
    rates: dict[tuple[str, str], tuple[str, str]], sale: str, program: str
) -> tuple[Fraction, str] | None:
    if (sale, program) in rates:
        rate, source = rates[(sale, program)]
        return Fraction(rate), source
    if (program, sale) in rates:
        rate, source = rates[(program, sale)]
        return 1 / Fraction(rate), f"{source}, inverse"
    for (base, quote), (to_program, source) in sorted(rates.items()):
        if quote == program and (base, sale) in rates:
            to_sale, _other = rates[(base, sale)]
            return Fraction(to_program) / Fraction(to_sale), f"{source} via {base}"
    return None


# --- writing rates ---------------------------------------------------------------------


def _checked_pair(base: str, quote: str) -> tuple[str, str]:
    base, quote = (base or "").strip().upper(), (quote or "").strip().upper()
    if not is_iso_currency(base):
        raise DomainError(_("Use an ISO 4217 currency code such as EUR."), "base")
    if not is_iso_currency(quote):
        raise DomainError(_("Use an ISO 4217 currency code such as USD."), "quote")
    if base == quote:
        raise DomainError(_("A rate is between two different currencies."), "quote")
    return base, quote


def _upsert(rows: list[dict]) -> None:
    dialect = db.session.get_bind().dialect.name
    statement = dialect_insert(dialect, ExchangeRate.__table__)
    statement = statement.on_conflict_do_update(
        index_elements=["base", "quote", "day"],
        set_={
            "rate": statement.excluded.rate,
            "source": statement.excluded.source,
            "created_at": statement.excluded.created_at,
            "created_by_id": statement.excluded.created_by_id,
        },
    )
    for start in range(0, len(rows), 5000):
        db.session.execute(statement, rows[start : start + 5000])


def add_rate(base: str, quote: str, day: date, rate: str, actor: User | None) -> ExchangeRate:
    """One rate typed by an operator (1 ``base`` = ``rate`` ``quote`` on ``day``); replaces that
    day's rate of the pair. The caller converts the sales waiting for it."""
    base, quote = _checked_pair(base, quote)
    try:
        value = parse_rate(rate)
    except ValueError:
        raise DomainError(_('Type the rate as a plain decimal number such as "1.0812".'), "rate") from None
    if day > utcnow().date():
        raise DomainError(_("A rate cannot be dated in the future."), "day")
    _upsert(
        [
            {
                "base": base,
                "quote": quote,
                "day": day,
                "rate": rate_text(value),
                "source": RateSource.MANUAL,
                "created_at": utcnow(),
                "created_by_id": actor.id if actor else None,
            }
        ]
    )
    record_event(
        actor,
        "rate.added",
        "exchange_rate",
        None,
        base=base,
        quote=quote,
        day=day.isoformat(),
        rate=rate_text(value),
    )
    return db.session.scalars(
        sa.select(ExchangeRate).where(
            ExchangeRate.base == base, ExchangeRate.quote == quote, ExchangeRate.day == day
        )
    ).one()


@dataclass
class ImportReport:
    days: int = 0
    rates: int = 0
    first_day: date | None = None
    last_day: date | None = None
    # Columns that are not an active ISO 4217 currency (the ECB's history has CYP, SIT …).
    skipped_currencies: set[str] = field(default_factory=set)


def _ecb_text(data: bytes) -> str:
    if data[:2] == b"PK":  # the ECB's own downloads are zip files holding one CSV
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [n for n in archive.namelist() if n.lower().endswith(".csv")]
                if len(names) != 1:
                    raise RatesFileError(_("The zip file should hold exactly one CSV file."))
                data = archive.read(names[0])
        except zipfile.BadZipFile:
            raise RatesFileError(_("This zip file cannot be read.")) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RatesFileError(_("The file is not UTF-8 text.")) from None


def _ecb_day(text: str) -> date:
    for pattern in ("%Y-%m-%d", "%d %B %Y"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise RatesFileError(_("%(value)s is not a date (the first column holds dates).", value=repr(text[:40])))


def parse_ecb(data: bytes) -> tuple[list[tuple[str, date, str]], ImportReport]:
    """The ECB's reference rates CSV (eurofxref.csv, one day; eurofxref-hist.csv, every day
    since 1999; or their zip files): a "Date" column, then one column a currency, each value
    that currency's units for 1 EUR ("N/A" where none). Returns (quote, day, rate) rows."""
    rows = list(csv.reader(io.StringIO(_ecb_text(data))))
    if not rows or not rows[0] or rows[0][0].strip() != "Date":
        raise RatesFileError(_('This is not the ECB\'s CSV: its first column should be "Date".'))
    header = [cell.strip().upper() for cell in rows[0]]
    report = ImportReport()
    found: list[tuple[str, date, str]] = []
    days = set()
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        day = _ecb_day(row[0].strip())
        days.add(day)
        for code, cell in zip(header[1:], row[1:], strict=False):
            value = cell.strip()
            if not code or not value or value.upper() == "N/A":
                continue
            if not is_iso_currency(code) or code == "EUR":
                report.skipped_currencies.add(code)
                continue
            try:
                rate = rate_text(parse_rate(value))
            except ValueError:
                raise RatesFileError(
                    _(
                        "Line %(line)d: %(value)s is not a rate for %(code)s.",
                        line=number,
                        value=repr(value[:20]),
                        code=code,
                    )
                ) from None
            found.append((code, day, rate))
    if not found:
        raise RatesFileError(_("The file holds no rates."))
    report.days, report.rates = len(days), len(found)
    report.first_day, report.last_day = min(days), max(days)
    return found, report


def import_ecb(data: bytes, actor: User | None) -> ImportReport:
    """Store every rate of an ECB file (1 EUR = r currency), replacing those days' rates."""
    found, report = parse_ecb(data)
    now = utcnow()
    _upsert(
        [
            {
                "base": "EUR",
                "quote": quote,
                "day": day,
                "rate": rate,
                "source": RateSource.ECB,
                "created_at": now,
                "created_by_id": actor.id if actor else None,
            }
            for quote, day, rate in found
        ]
    )
    record_event(
        actor,
        "rates.imported",
        "exchange_rate",
        None,
        source=RateSource.ECB,
        days=report.days,
        rates=report.rates,
        first_day=report.first_day.isoformat(),
        last_day=report.last_day.isoformat(),
    )
    return report


def recent_rates(currency: str | None = None, limit: int = 200) -> list[ExchangeRate]:
    query = sa.select(ExchangeRate).order_by(ExchangeRate.day.desc(), ExchangeRate.base, ExchangeRate.quote)
    if currency:
        code = currency.strip().upper()
        query = query.where(sa.or_(ExchangeRate.base == code, ExchangeRate.quote == code))
    return list(db.session.scalars(query.limit(limit)))
