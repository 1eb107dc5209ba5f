import pytest

from portal.money import format_money, parse_amount, to_decimal_string


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
