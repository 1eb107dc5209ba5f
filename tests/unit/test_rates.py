"""The rate printer and parser every edit form uses: exact inverses over 0 to 100 %."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.money import FULL_RATE_BP, RateOverLimit, parse_rate_bp, rate_text


@given(st.integers(min_value=0, max_value=FULL_RATE_BP))
def test_parse_undoes_print_for_every_rate(basis_points):
    assert parse_rate_bp(rate_text(basis_points)) == basis_points


def test_every_rate_prints_and_parses_back():
    # 10,001 values is small enough to check them all, not only a sample.
    assert all(parse_rate_bp(rate_text(bp)) == bp for bp in range(FULL_RATE_BP + 1))


@pytest.mark.parametrize(
    ("basis_points", "text"),
    [
        (1000, "10"),  # the zero of "10" stays (it used to be stripped: 10 % saved as 1 %)
        (1250, "12.5"),
        (5, "0.05"),
        (0, "0"),
        (10_000, "100"),
        (2000, "20"),
        (3000, "30"),
        (101, "1.01"),
        (1010, "10.1"),
    ],
)
def test_rate_text_examples(basis_points, text):
    assert rate_text(basis_points) == text
    assert parse_rate_bp(text) == basis_points


@pytest.mark.parametrize(
    ("text", "basis_points"),
    [("12.50", 1250), (" 7 ", 700), ("10%", 1000), ("10 %", 1000), ("12,5", 1250), ("0.5", 50), ("007", 700)],
)
def test_parse_accepts_what_people_type(text, basis_points):
    assert parse_rate_bp(text) == basis_points


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "12.345",
        "0.001",
        "-1",
        "-0.5",
        "ten",
        "1e2",
        "NaN",
        "Infinity",
        "٣",
        "٣.٠٠",
        "１０",
        "1,000",
        ".5",
        "5.",
    ],
)
def test_parse_refuses_anything_else(text):
    with pytest.raises(ValueError, match="not a percent"):
        parse_rate_bp(text)


@pytest.mark.parametrize("text", ["100.01", "150", "1000"])
def test_parse_refuses_over_100_percent_by_name(text):
    with pytest.raises(RateOverLimit):
        parse_rate_bp(text)


@pytest.mark.parametrize("basis_points", [-1, 10_001])
def test_print_refuses_a_rate_outside_0_to_100_percent(basis_points):
    with pytest.raises(ValueError, match="0 to 10000"):
        rate_text(basis_points)
