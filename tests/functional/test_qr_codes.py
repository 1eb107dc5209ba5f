"""QR codes of links and coupon codes: downloads, who may have them, and a scan counted as sub-ID ``qr``."""

from __future__ import annotations

import io
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
import zxingcpp
from PIL import Image

from portal.models import Click, CouponStatus, PartnerStatus, Role
from portal.services import clicks, coupons, qrcodes
from portal.services.links import create_link
from tests.factories import PartnerFactory

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36"}


@pytest.fixture(autouse=True)
def _fresh_caches():
    clicks.forget_target()
    clicks.forget_routing()
    clicks.flood_counter._counts.clear()
    yield
    clicks.forget_target()
    clicks.forget_routing()


def _decoded(png: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1
    return found[0].text


@pytest.fixture
def mine(db, program, login_as):
    """The signed-in partner, one link (with a campaign and its own sub-ID) and one active code."""
    partner = login_as(Role.PARTNER).partner
    link = create_link(partner, program, label="Flyer", channel="social", campaign="spring", sub_id="print")
    coupon = coupons.add_coupon(partner, "SPRING10", None)
    db.session.commit()
    return partner, link, coupon


def test_a_link_downloads_as_svg_and_png(client, mine):
    _partner, link, _coupon = mine
    svg = client.get(f"/partner/links/{link.id}/qr.svg")
    assert svg.status_code == 200
    assert svg.mimetype == "image/svg+xml"
    assert svg.headers["Content-Disposition"] == f'attachment; filename="link-{link.code}-qr.svg"'
    assert svg.data.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<svg ')
    assert b'viewBox="0 0 ' in svg.data
    assert svg.data == qrcodes.qr_svg(f"http://portal.test/go/{link.code}?sub=qr")

    png = client.get(f"/partner/links/{link.id}/qr.png")
    assert png.status_code == 200
    assert png.mimetype == "image/png"
    assert png.headers["Content-Disposition"] == f'attachment; filename="link-{link.code}-qr.png"'
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png.data))
    assert image.width == image.height >= qrcodes.PNG_MIN_PIXELS
    assert _decoded(png.data) == f"http://portal.test/go/{link.code}?sub=qr"


def test_an_unchanged_code_answers_not_modified(client, mine):
    _partner, link, _coupon = mine
    first = client.get(f"/partner/links/{link.id}/qr.svg")
    assert "no-cache" in first.headers["Cache-Control"] and "private" in first.headers["Cache-Control"]
    again = client.get(f"/partner/links/{link.id}/qr.svg", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_the_main_link_and_a_coupon_download(client, mine):
    partner, _link, coupon = mine
    main = client.get("/partner/links/main/qr.png")
    assert main.headers["Content-Disposition"] == f'attachment; filename="link-{partner.ref_code}-qr.png"'
    assert _decoded(main.data) == f"http://portal.test/go/{partner.ref_code}?sub=qr"

    code = client.get(f"/partner/coupons/{coupon.id}/qr.png")
    assert code.status_code == 200
    assert code.headers["Content-Disposition"] == 'attachment; filename="coupon-SPRING10-qr.png"'
    assert _decoded(code.data) == f"http://portal.test/go/{partner.ref_code}?sub=qr&coupon=SPRING10"
    svg = client.get(f"/partner/coupons/{coupon.id}/qr.svg")
    assert svg.headers["Content-Disposition"] == 'attachment; filename="coupon-SPRING10-qr.svg"'


def test_another_partners_link_or_code_is_not_found(client, db, program, mine):
    someone = PartnerFactory(status=PartnerStatus.APPROVED)
    theirs = create_link(someone, program, label="Theirs", channel="seo")
    their_code = coupons.add_coupon(someone, "THEIRS", None)
    db.session.commit()
    for kind in ("svg", "png"):
        assert client.get(f"/partner/links/{theirs.id}/qr.{kind}").status_code == 404
        assert client.get(f"/partner/coupons/{their_code.id}/qr.{kind}").status_code == 404
        assert client.get(f"/partner/links/999999/qr.{kind}").status_code == 404
    assert client.get(f"/partner/links/{theirs.id}/qr.gif").status_code == 404


def test_a_code_that_attributes_nothing_has_no_qr_code(client, db, mine):
    partner, _link, coupon = mine
    waiting = coupons.request_coupon(partner, "LATER", None)
    coupon.status = CouponStatus.DISABLED
    db.session.commit()
    assert client.get(f"/partner/coupons/{waiting.id}/qr.svg").status_code == 404
    assert client.get(f"/partner/coupons/{coupon.id}/qr.svg").status_code == 404
    page = client.get("/partner/links").get_data(as_text=True)
    assert f"/partner/coupons/{waiting.id}/qr.svg" not in page
    assert f"/partner/coupons/{coupon.id}/qr.svg" not in page


@pytest.mark.parametrize(
    "url", ["/partner/links/main/qr.svg", "/partner/links/1/qr.png", "/partner/coupons/1/qr.svg"]
)
def test_sign_in_is_required(client, db, program, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_the_links_page_shows_each_qr_code_with_its_downloads(client, mine):
    _partner, link, coupon = mine
    page = client.get("/partner/links").get_data(as_text=True)
    for base, what in (
        ("/partner/links/main/qr", "your main link"),
        (f"/partner/links/{link.id}/qr", "Flyer"),
        (f"/partner/coupons/{coupon.id}/qr", "SPRING10"),
    ):
        assert f'<img src="{base}.svg" alt="QR code for {what}"' in page
        assert f'<a href="{base}.svg" download>SVG' in page
        assert f'<a href="{base}.png" download>PNG' in page


def _scan(client, db, png: bytes) -> Click:
    """Follow what the code says, as a phone would, and return the click it recorded."""
    address = urlsplit(_decoded(png))
    assert address.netloc == "portal.test"
    response = client.get(f"{address.path}?{address.query}", headers=BROWSER)
    assert response.status_code == 302
    click_id = parse_qs(urlsplit(response.headers["Location"]).query)["click_id"][0]
    return db.session.get(Click, click_id)


@pytest.mark.postgres
def test_a_scan_is_a_click_with_sub_id_qr_shown_apart_in_the_stats(client, db, mine):
    partner, link, coupon = mine
    client.get(f"/go/{link.code}", headers=BROWSER)  # an ordinary click keeps the link's own sub-ID
    click = _scan(client, db, client.get(f"/partner/links/{link.id}/qr.png").data)
    assert (click.link_id, click.sub_id, click.channel, click.campaign) == (link.id, "qr", "social", "spring")
    by_code = _scan(client, db, client.get(f"/partner/coupons/{coupon.id}/qr.png").data)
    assert (by_code.partner_id, by_code.link_id, by_code.sub_id) == (partner.id, None, "qr")

    subs = dict(db.session.execute(sa.select(Click.sub_id, sa.func.count()).group_by(Click.sub_id)).all())
    assert subs == {"print": 1, "qr": 2}
    csv = client.get("/partner/stats/sub_id.csv?range=30d").get_data(as_text=True)
    rows = {line.split(",")[0]: line.split(",")[1] for line in csv.splitlines()[1:]}
    assert rows["qr"] == "2"
    assert rows["print"] == "1"
    # The dashboard's own "By sub-ID" table: its first row, busiest first, is the scans.
    page = client.get("/partner/?range=30d").get_data(as_text=True)
    table = page.split('data-testid="by-sub_id"', 1)[1].split("</table>", 1)[0]
    assert re.search(r'<th scope="row"[^>]*>qr</th>\s*<td data-label="Clicks">2</td>', table), table


def test_operators_download_a_partners_link_codes_from_the_partner_page(client, db, program, login_as):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    link = create_link(partner, program, label="Shelf talker", channel="social")
    db.session.commit()
    login_as(Role.MANAGER)
    page = client.get(f"/admin/partners/{partner.id}").get_data(as_text=True)
    assert f'<a href="/admin/partners/{partner.id}/qr.svg" download>SVG' in page
    assert f'<a href="/admin/links/{link.id}/qr.png" download>PNG' in page

    main = client.get(f"/admin/partners/{partner.id}/qr.png")
    assert main.headers["Content-Disposition"] == f'attachment; filename="link-{partner.ref_code}-qr.png"'
    assert _decoded(main.data) == f"http://portal.test/go/{partner.ref_code}?sub=qr"
    svg = client.get(f"/admin/links/{link.id}/qr.svg")
    assert svg.mimetype == "image/svg+xml"
    assert svg.data == qrcodes.qr_svg(f"http://portal.test/go/{link.code}?sub=qr")
    assert client.get("/admin/links/999999/qr.svg").status_code == 404
