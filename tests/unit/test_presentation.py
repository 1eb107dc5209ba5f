"""Rates printed one way by one printer, in partner and operator pages alike; the small page helpers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from portal.formatting import percent_bp, rate
from portal.services.creatives import CreativeCode, main_code
from portal.templating import host

TEMPLATES = Path(__file__).resolve().parents[2] / "portal" / "templates"


@pytest.mark.parametrize(
    ("basis_points", "printed"),
    [(1667, "16.67%"), (1190, "11.9%"), (2000, "20%"), (1250, "12.5%"), (5, "0.05%"), (0, "0%")],
)
def test_a_rate_has_up_to_two_decimals_and_no_trailing_zeros(app, basis_points, printed):
    with app.test_request_context():
        assert percent_bp(basis_points) == printed
        assert rate(Decimal(basis_points) / 10000) == printed


def test_a_share_of_a_third_prints_like_any_rate(app):
    with app.test_request_context():
        assert rate(Decimal(1) / Decimal(6)) == "16.67%"
        assert rate(None) == "—"


def test_no_template_prints_a_rate_by_hand():
    """Every rate goes through the ``rate`` / ``percent_bp`` filters (or the rate's words):
    no template divides basis points or appends a percent sign to a number itself."""
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        for needle in ("_bp / 100", "_bp/100", "* 100 }}%", "}} %", "round(2) }}%"):
            if needle in text:
                offenders.append(f"{path.relative_to(TEMPLATES)}: {needle}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://www.shop.example/tents?x=1", "shop.example"),
        ("https://video.northwind-outdoor.example/ridge-2-pitch", "video.northwind-outdoor.example"),
        (None, "—"),
        ("not a url", "—"),
    ],
)
def test_a_page_preview_names_the_host_not_the_address(url, shown):
    assert host(url) == shown


def test_the_grid_copies_the_main_form_of_each_code():
    assert main_code(CreativeCode(link="L", embed_html="<a>")) == "<a>"
    assert main_code(CreativeCode(link="L", text="T", subject="S")) == "S\n\nT"
    assert main_code(CreativeCode(link="L", text="T")) == "T"
    assert main_code(CreativeCode(link="L")) == "L"
