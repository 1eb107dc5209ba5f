import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.money import currency_exponent, format_money, parse_amount, to_decimal_string


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("49.90", "USD", 4990),
        ("0.01", "USD", 1),
        ("50", "EUR", 5000),
        ("1000", "JPY", 1000),
        ("1.234", "KWD", 1234),
        ("-5.50", "USD", -550),
        (" 12.00 ", "GBP", 1200),
    ],
)
def test_parse_amount_to_minor_units(text, currency, minor):
    assert parse_amount(text, currency) == minor
    assert isinstance(parse_amount(text, currency), int)


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("1.005", "USD"),
        ("10.5", "JPY"),
        ("1e3", "USD"),
        ("$5", "USD"),
        ("", "USD"),
        ("1,50", "EUR"),
        ("NaN", "USD"),
    ],
)
def test_parse_amount_refuses_what_is_not_a_plain_amount(text, currency):
    with pytest.raises(ValueError, match=r"decimal"):
        parse_amount(text, currency)


def test_round_trip_and_display():
    assert to_decimal_string(4990, "USD") == "49.90"
    assert to_decimal_string(1000, "JPY") == "1000"
    assert format_money(4990, "USD") == "$49.90"
    assert format_money(1000, "JPY") == "¥1,000"


# Currencies of every minor-unit scale: 2 decimals, none, three.
SCALED = {"USD": 2, "EUR": 2, "JPY": 0, "KWD": 3, "BHD": 3}


@pytest.mark.parametrize(("currency", "exponent"), SCALED.items())
def test_each_currency_has_its_scale(currency, exponent):
    assert currency_exponent(currency) == exponent


@given(data=st.data(), currency=st.sampled_from(sorted(SCALED)))
def test_parse_reads_back_what_print_wrote(data, currency):
    # The parser takes at most 15 integer digits, so the printer's largest amount is below 10**15.
    bound = 10 ** (15 + SCALED[currency]) - 1
    minor = data.draw(st.integers(min_value=-bound, max_value=bound))
    text = to_decimal_string(minor, currency)
    assert parse_amount(text, currency) == minor


@given(
    digits=st.text(
        alphabet=st.characters(categories=["Nd"]).filter(lambda c: not "0" <= c <= "9"),
        min_size=1,
        max_size=4,
    )
)
def test_only_ascii_digits_are_amounts(digits):
    with pytest.raises(ValueError, match=r"decimal"):
        parse_amount(digits, "USD")
    with pytest.raises(ValueError, match=r"decimal"):
        parse_amount(f"1{digits}.00", "USD")


@pytest.mark.parametrize("text", ["٣.٠٠", "３.００", "३", "3.0٠", "1.00\n2"])
def test_digits_of_other_scripts_and_embedded_lines_are_refused(text):
    with pytest.raises(ValueError, match=r"decimal"):
        parse_amount(text, "USD")
