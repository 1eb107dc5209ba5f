"""Exchange rates: exact minor-unit arithmetic, the look-up rules and the ECB's CSV."""

import io
import zipfile
from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.currencies import MINOR_UNITS, is_iso_currency, minor_units
from portal.models import ExchangeRate, RateSource
from portal.models.types import utcnow
from portal.money import format_money, parse_amount
from portal.services import fx

DAY = date(2026, 11, 20)

# The ECB's daily file as published: spaces after the commas, a trailing comma.
ECB_DAILY = (
    "Date, USD, JPY, BGN, CZK, DKK, GBP, HUF, PLN, RON, SEK, CHF, ISK, NOK, TRY, AUD, BRL, CAD, CNY, "
    "HKD, IDR, ILS, INR, KRW, MXN, MYR, NZD, PHP, SGD, THB, ZAR, \n"
    "20 November 2026, 1.0812, 162.47, 1.9558, 25.312, 7.4589, 0.83515, 405.10, 4.2690, 4.9767, "
    "11.4520, 0.9385, 150.30, 11.7450, 37.4010, 1.6540, 6.1150, 1.5090, 7.8212, 8.4160, 17250.52, "
    "3.9988, 91.2230, 1512.45, 19.8766, 4.7890, 1.8250, 63.412, 1.4415, 37.512, 19.4512, \n"
)
# The history file: ISO dates, N/A for currencies not quoted that day, withdrawn codes (CYP).
ECB_HISTORY = (
    "Date,USD,JPY,CYP,KWD,GBP,\n"
    "2026-11-20,1.0812,162.47,N/A,0.3321,0.83515,\n"
    "2026-11-19,1.0790,161.90,N/A,N/A,0.83400,\n"
    "2026-11-18,1.0801,162.02,N/A,0.3318,0.83450,\n"
)


@pytest.mark.parametrize(
    ("code", "decimals"),
    [("JPY", 0), ("USD", 2), ("EUR", 2), ("KWD", 3), ("BHD", 3), ("IQD", 3), ("LAK", 2), ("CLP", 0)],
)
def test_minor_units_are_iso_4217s_not_cldrs(code, decimals):
    assert minor_units(code) == decimals
    assert is_iso_currency(code)


@pytest.mark.parametrize("code", ["XAU", "XXX", "XTS", "HRK", "usd", "US", "EURO", ""])
def test_metals_test_codes_withdrawn_and_malformed_codes_are_not_sale_currencies(code):
    assert not is_iso_currency(code)


def test_amounts_in_iqd_keep_isos_three_decimals_when_shown():
    assert parse_amount("1.234", "IQD") == 1234
    assert format_money(1234, "IQD", "en").endswith("1.234")


@pytest.mark.parametrize(
    ("amount", "source", "target", "rate", "expected"),
    [
        (10_000, "USD", "EUR", "0.924898", 9249),  # 100.00 USD → 92.4898 EUR → 92.49
        (9_500, "JPY", "USD", "0.00667", 6336),  # ¥9,500 → $63.365 → 63.36 (half to even)
        (9_500, "JPY", "KWD", "0.0020440", 19_418),  # ¥9,500 → 19.418 KWD (3 decimals)
        (12_345, "KWD", "JPY", "495.25", 6_114),  # 12.345 KWD → ¥6,113.86… → ¥6,114
        (1, "KWD", "USD", "3.25", 0),  # 0.001 KWD → 0.00325 USD → 0.00
        (1, "JPY", "KWD", "0.0020440", 2),  # ¥1 → 0.002044 KWD → 0.002
        (4_990, "EUR", "JPY", "162.47", 8_107),  # 49.90 EUR → ¥8,107.253 → ¥8,107
        (0, "EUR", "USD", "1.0812", 0),
    ],
)
def test_convert_minor_is_exact_for_0_2_and_3_decimal_currencies(amount, source, target, rate, expected):
    assert fx.convert_minor(amount, source, target, rate) == expected


def test_a_tie_rounds_half_to_even():
    # 0.25 USD at 0.5 → 0.125 EUR → 0.12; 0.75 → 0.375 → 0.38
    assert fx.convert_minor(25, "USD", "EUR", "0.5") == 12
    assert fx.convert_minor(75, "USD", "EUR", "0.5") == 38


@given(
    amount=st.integers(min_value=0, max_value=10**12),
    rate=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=6),
    pair=st.sampled_from([("JPY", "USD"), ("USD", "KWD"), ("KWD", "JPY"), ("EUR", "USD"), ("BHD", "IQD")]),
)
def test_conversion_is_the_exact_product_rounded_once(amount, rate, pair):
    source, target = pair
    text = fx.rate_text(rate)
    exact = Fraction(amount) * Fraction(text) * Fraction(10) ** (minor_units(target) - minor_units(source))
    converted = fx.convert_minor(amount, source, target, text)
    assert abs(converted - exact) <= Fraction(1, 2)


@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=8))
def test_refunds_in_parts_converted_cumulatively_add_up_to_the_whole(parts):
    total = sum(parts)
    rate = "0.00667"
    done, converted_steps = 0, []
    for part in parts:
        before = fx.convert_minor(done, "JPY", "USD", rate)
        done += part
        converted_steps.append(fx.convert_minor(done, "JPY", "USD", rate) - before)
    assert sum(converted_steps) == fx.convert_minor(total, "JPY", "USD", rate)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1.0812"), "1.0812"),
        (Decimal("162.4700"), "162.47"),
        (Decimal("150"), "150"),
        (Fraction(1, 3), "0.333333333333"),
        (Fraction(1, 162), "0.00617283950617"),
        (Fraction(2, 3) * 1000, "666.666666667"),
    ],
)
def test_a_kept_rate_has_twelve_significant_digits_rounded_half_to_even(value, text):
    assert fx.rate_text(value) == text


@pytest.mark.parametrize("text", ["", "0", "0.000", "-1.2", "1,08", "1e3", "١.٢", "1.0812345678901", " . "])
def test_a_rate_is_a_plain_positive_decimal(text):
    with pytest.raises(ValueError, match=r"rate|decimal"):
        fx.parse_rate(text)


# --- the look-up ----------------------------------------------------------------------------


def _rate(base, quote, day, rate, source=RateSource.ECB):
    return ExchangeRate(base=base, quote=quote, day=day, rate=rate, source=source, created_at=utcnow())


def _store(db, *rates):
    db.session.add_all(rates)
    db.session.flush()


def test_the_pair_itself_on_the_sales_day(db):
    _store(db, _rate("JPY", "USD", DAY, "0.00667", RateSource.MANUAL))
    assert fx.find_rate("JPY", "USD", DAY) == fx.FoundRate("0.00667", DAY, "manual")


def test_the_inverse_when_only_the_other_way_is_known(db):
    _store(db, _rate("USD", "JPY", DAY, "150"))
    assert fx.find_rate("JPY", "USD", DAY) == fx.FoundRate("0.00666666666667", DAY, "ecb, inverse")


def test_across_the_ecbs_euro(db):
    _store(db, _rate("EUR", "USD", DAY, "1.0812"), _rate("EUR", "JPY", DAY, "162.47"))
    found = fx.find_rate("JPY", "USD", DAY)
    assert found == fx.FoundRate(fx.rate_text(Fraction("1.0812") / Fraction("162.47")), DAY, "ecb via EUR")
    # To and from the euro itself: the ECB's rate, direct or inverse.
    assert fx.find_rate("USD", "EUR", DAY).rate == fx.rate_text(1 / Fraction("1.0812"))
    assert fx.find_rate("EUR", "JPY", DAY) == fx.FoundRate("162.47", DAY, "ecb")


def test_the_newest_day_within_seven_days_before_and_never_after(db):
    _store(
        db,
        _rate("EUR", "USD", date(2026, 11, 12), "1.05"),  # 8 days before: too old
        _rate("EUR", "USD", date(2026, 11, 13), "1.06"),  # 7 days before: in
        _rate("EUR", "USD", date(2026, 11, 16), "1.07"),  # newer: wins
        _rate("EUR", "USD", date(2026, 11, 21), "1.09"),  # the day after: never
    )
    assert fx.find_rate("EUR", "USD", DAY) == fx.FoundRate("1.07", date(2026, 11, 16), "ecb")
    assert fx.find_rate("EUR", "USD", date(2026, 11, 13)).rate == "1.06"
    assert fx.find_rate("EUR", "USD", date(2026, 11, 11)) is None
    assert fx.find_rate("EUR", "GBP", DAY) is None


def test_a_newer_day_across_the_euro_beats_an_older_direct_rate(db):
    _store(
        db,
        _rate("JPY", "USD", date(2026, 11, 17), "0.0066", RateSource.MANUAL),
        _rate("EUR", "USD", DAY, "1.0812"),
        _rate("EUR", "JPY", DAY, "162.47"),
    )
    assert fx.find_rate("JPY", "USD", DAY).day == DAY


def test_on_one_day_the_direct_rate_beats_the_cross_rate(db):
    _store(
        db,
        _rate("JPY", "USD", DAY, "0.0066", RateSource.MANUAL),
        _rate("EUR", "USD", DAY, "1.0812"),
        _rate("EUR", "JPY", DAY, "162.47"),
    )
    assert fx.find_rate("JPY", "USD", DAY) == fx.FoundRate("0.0066", DAY, "manual")


# --- the ECB's CSV --------------------------------------------------------------------------


def test_the_daily_file_as_published():
    rows, report = fx.parse_ecb(ECB_DAILY.encode())
    assert (report.days, report.rates, report.first_day, report.last_day) == (1, 30, DAY, DAY)
    assert ("USD", DAY, "1.0812") in rows
    assert ("JPY", DAY, "162.47") in rows
    assert ("IDR", DAY, "17250.52") in rows


def test_the_history_file_skips_na_and_withdrawn_currencies():
    rows, report = fx.parse_ecb(ECB_HISTORY.encode())
    assert (report.days, report.rates) == (3, 11)
    assert report.skipped_currencies == set()  # CYP has only N/A here
    assert ("KWD", date(2026, 11, 19), "0.3321") not in rows
    assert ("KWD", date(2026, 11, 18), "0.3318") in rows


def test_a_withdrawn_currency_with_values_is_skipped_and_reported():
    _rows, report = fx.parse_ecb(b"Date,USD,CYP\n2007-12-31,1.4721,0.585274\n")
    assert report.skipped_currencies == {"CYP"} and report.rates == 1


def test_the_zip_files_the_ecb_publishes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("eurofxref-hist.csv", ECB_HISTORY)
    rows, _report = fx.parse_ecb(buffer.getvalue())
    assert len(rows) == 11


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "Date"),
        (b"base,quote,rate\nEUR,USD,1.08\n", "Date"),
        (b"Date,USD\n31/12/2026,1.08\n", "is not a date"),
        (b"Date,USD\n2026-11-20,abc\n", "is not a rate for USD"),
        (b"Date,USD\n2026-11-20,N/A\n", "holds no rates"),
        (b"\xff\xfeD\x00a\x00", "UTF-8"),
        (b"PK\x03\x04broken", "cannot be read"),
    ],
)
def test_what_is_not_the_ecbs_csv_is_refused_with_a_reason(app, data, message):
    with app.test_request_context(), pytest.raises(fx.RatesFileError, match=message):
        fx.parse_ecb(data)


def test_importing_a_day_again_replaces_it(db):
    fx.import_ecb(ECB_HISTORY.encode(), None)
    fx.import_ecb(b"Date,USD\n2026-11-20,1.0900\n", None)
    stored = {(r.quote, r.day): r.rate for r in db.session.query(ExchangeRate)}
    assert stored[("USD", DAY)] == "1.09"
    assert stored[("JPY", DAY)] == "162.47"
    assert len(stored) == 11
    assert {r.base for r in db.session.query(ExchangeRate)} == {"EUR"}


def test_every_listed_code_has_zero_two_or_three_decimals():
    assert set(MINOR_UNITS.values()) == {0, 2, 3}
    assert all(len(code) == 3 and code.isupper() for code in MINOR_UNITS)
