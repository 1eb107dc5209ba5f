"""The partner's creative library: filters, get-code, downloads, the public banner address,
creative clicks through /go, live announcements and the partner's own statistics."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import g

from portal.extensions import socketio
from portal.models import Click, Role
from portal.services import clicks, creatives
from tests.creative_support import make_banner, make_landing, make_text, upload
from tests.factories import PartnerFactory, UserFactory
from tests.images import png

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36"}


@pytest.fixture(autouse=True)
def _fresh_caches():
    clicks.forget_target()
    clicks.forget_routing()
    clicks.forget_creative()
    yield
    clicks.forget_creative()


@pytest.fixture
def operator(db):
    return UserFactory(role=Role.MANAGER)


@pytest.fixture
def partner_user(login_as):
    return login_as(Role.PARTNER, channels=["social"])


def text_of(response) -> str:
    return re.sub(r"\s+", " ", html.unescape(response.get_data(as_text=True)))


def test_library_lists_published_creatives_with_filters(client, db, program, operator, partner_user):
    make_banner(operator, program, name="Social square", channels=("social",), campaign="summer")
    make_text(operator, program, name="Review copy", channels=("seo",))
    make_text(operator, program, name="Secret draft", channels=("social",), publish=False)
    db.session.commit()
    page = text_of(client.get("/partner/creatives"))
    assert "Social square" in page and "Review copy" in page
    assert "Secret draft" not in page
    page = text_of(client.get("/partner/creatives?channel=social"))
    assert "Social square" in page and "Review copy" not in page
    page = text_of(client.get("/partner/creatives?kind=text"))
    assert "Review copy" in page and "Social square" not in page
    page = text_of(client.get("/partner/creatives?campaign=summer&q=square"))
    assert "Social square" in page and "Review copy" not in page
    assert client.get("/partner/creatives?channel=tv&kind=x&language=zz&page=40").status_code == 200


def test_get_code_for_a_banner(store, client, db, program, operator, partner_user):
    creative = make_banner(operator, program, name="Summer sale")
    db.session.commit()
    page = client.get(f"/partner/creatives/{creative.id}").get_data(as_text=True)
    ref = partner_user.partner.ref_code
    link = f"http://portal.test/go/{ref}?creative={creative.id}"
    embed = html.unescape(re.search(r'data-testid="embed-code">(.*?)</textarea>', page, re.S).group(1))
    assert embed == (
        f'<a href="{link}" target="_blank" rel="sponsored noopener">'
        f'<img src="http://portal.test/media/banners/{creative.id}" width="300" height="250" '
        f'alt="Summer sale" style="border:0;max-width:100%;height:auto"></a>'
    )
    assert 'data-copy="#code-embed"' in page
    assert f'value="{link}"' in page.replace("&amp;", "&")
    download = re.search(r'href="([^"]+)" download="summer-sale-300x250.png"', page).group(1)
    download = html.unescape(download)
    if download.startswith("http://portal.test") or download.startswith("/"):
        with client.get(download) as response:
            assert response.status_code == 200
            assert response.headers["Content-Disposition"].startswith("attachment")
            assert response.get_data() == store.get(creative.current.file_key)
    else:
        import requests

        response = requests.get(download, timeout=5)
        assert response.status_code == 200
        assert response.content == store.get(creative.current.file_key)


def test_get_code_for_text_and_landing_pages(client, db, program, operator, partner_user):
    text = make_text(operator, program)
    landing = make_landing(operator, program)
    db.session.commit()
    ref = partner_user.partner.ref_code
    page = text_of(client.get(f"/partner/creatives/{text.id}"))
    assert f"Our favourite tent this year: http://portal.test/go/{ref}?creative={text.id}" in page
    assert "{link}" not in page
    page = text_of(client.get(f"/partner/creatives/{landing.id}"))
    assert f"http://portal.test/go/{ref}?creative={landing.id}" in page
    assert "Opens https://shop.example/tents" in page


def test_drafts_and_archived_creatives_are_not_for_partners(client, db, program, operator, partner_user):
    draft = make_text(operator, program, publish=False)
    archived = make_text(operator, program)
    creatives.set_creative_status(archived, operator, "archive")
    db.session.commit()
    assert client.get(f"/partner/creatives/{draft.id}").status_code == 404
    assert client.get(f"/partner/creatives/{archived.id}").status_code == 404


# --- the public banner address ----------------------------------------------------------


def test_banner_address_always_shows_the_current_version(client, db, program, operator):
    creative = make_banner(operator, program)
    db.session.commit()
    first = client.get(f"/media/banners/{creative.id}")
    assert first.status_code == 302
    assert "max-age" in first.headers["Cache-Control"]
    assert first.headers["Referrer-Policy"] == "no-referrer"
    assert creative.current.file_key in urlsplit(first.headers["Location"]).path
    creatives.replace_file(creative, operator, upload(png((728, 90)), "wide.png"))
    db.session.commit()
    second = client.get(f"/media/banners/{creative.id}")
    assert creative.current.file_key in urlsplit(second.headers["Location"]).path
    assert second.headers["Location"] != first.headers["Location"]


def test_banner_address_of_a_draft_archived_or_non_banner_is_gone(client, db, program, operator):
    draft = make_banner(operator, program, publish=False)
    archived = make_banner(operator, program)
    creatives.set_creative_status(archived, operator, "archive")
    text = make_text(operator, program)
    db.session.commit()
    for creative_id in (draft.id, archived.id, text.id, 424242):
        assert client.get(f"/media/banners/{creative_id}").status_code == 404


# --- creative clicks through /go --------------------------------------------------------------


def test_a_click_on_the_creative_link_is_counted_for_that_creative(client, db, program, operator):
    partner = PartnerFactory(ref_code="pat")
    creative = make_banner(operator, program)
    db.session.commit()
    response = client.get(f"/go/pat?creative={creative.id}", headers=BROWSER)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://shop.example/?")
    click_id = parse_qs(urlsplit(response.headers["Location"]).query)["click_id"][0]
    click = db.session.get(Click, click_id)
    assert (click.partner_id, click.creative_id) == (partner.id, creative.id)


def test_a_landing_page_creative_sends_its_clicks_to_its_page(client, db, program, operator):
    PartnerFactory(ref_code="pat")
    landing = make_landing(operator, program, url="https://shop.example/tents?colour=green")
    banner = make_banner(operator, program)
    db.session.commit()
    response = client.get(f"/go/pat?creative={landing.id}", headers=BROWSER)
    assert response.headers["Location"].startswith(
        "https://shop.example/tents?colour=green&ref=pat&click_id="
    )
    # Other kinds, unknown ids and rubbish keep the default landing page.
    for value in (banner.id, 999999, "1 OR 1=1", "-3"):
        response = client.get(f"/go/pat?creative={value}", headers=BROWSER)
        assert response.headers["Location"].startswith("https://shop.example/?ref=pat")


def test_a_landing_page_creative_stops_redirecting_once_off_the_allowed_domains(
    client, db, program, operator
):
    PartnerFactory(ref_code="pat")
    landing = make_landing(operator, program, url="https://shop.example/tents")
    program.allowed_domains = ["brand.example"]
    program.default_landing_url = "https://brand.example/"
    db.session.commit()
    response = client.get(f"/go/pat?creative={landing.id}", headers=BROWSER)
    assert response.headers["Location"].startswith("https://brand.example/?ref=pat")


def test_archiving_a_landing_page_stops_its_redirect_at_once(client, db, program, operator):
    PartnerFactory(ref_code="pat")
    landing = make_landing(operator, program, url="https://shop.example/tents")
    db.session.commit()
    assert (
        client.get(f"/go/pat?creative={landing.id}")
        .headers["Location"]
        .startswith("https://shop.example/tents")
    )
    creatives.set_creative_status(landing, operator, "archive")
    db.session.commit()
    assert (
        client.get(f"/go/pat?creative={landing.id}").headers["Location"].startswith("https://shop.example/?")
    )


# --- live announcement ------------------------------------------------------------------------


def test_publishing_reaches_partners_in_its_channels_after_commit(
    app, client, db, program, operator, login_as
):
    user = login_as(Role.PARTNER, channels=["social"])
    for key in list(g):
        g.pop(key)
    sio = socketio.test_client(app, flask_test_client=client)
    try:
        sio.get_received()
        creative = make_banner(operator, program, channels=("social",), publish=False)
        db.session.commit()
        creatives.set_creative_status(creative, operator, "publish")
        assert sio.get_received() == []  # not before the commit
        db.session.commit()
        received = [(m["name"], m["args"]) for m in sio.get_received()]
        payload = {"creative": creative.id, "action": "published", "kind": "banner", "name": creative.name}
        assert received in ([("creative", payload)], [("creative", [payload])])
        elsewhere = make_text(operator, program, channels=("email",), publish=False)
        creatives.set_creative_status(elsewhere, operator, "publish")
        db.session.commit()
        assert sio.get_received() == []
    finally:
        sio.disconnect()
    assert user.partner.channels == ["social"]


def test_library_list_refreshes_on_announcements(client, db, program, partner_user):
    page = client.get("/partner/creatives").get_data(as_text=True)
    assert re.search(r'id="creative-library"[^>]*hx-trigger="[^"]*portal:creative from:body', page)
    assert 'hx-select="#creative-library"' in page


# --- the partner's statistics -----------------------------------------------------------------


def test_partner_stats_show_their_numbers_and_the_programs_best(client, db, program, operator, partner_user):
    mine = partner_user.partner
    others = [PartnerFactory(channels=["social"]) for _ in range(3)]
    banner = make_banner(operator, program, name="Popular square", channels=("social",))
    db.session.commit()
    for i in range(21):
        client.get(f"/go/{others[i % 3].ref_code}?creative={banner.id}", headers=BROWSER)
    client.get(f"/go/{mine.ref_code}?creative={banner.id}", headers=BROWSER)
    client.get(f"/go/{mine.ref_code}?creative={banner.id}", headers={"User-Agent": "Googlebot/2.1"})
    db.session.commit()
    page = client.get("/partner/creatives/stats").get_data(as_text=True)
    mine_table = page[page.index('data-testid="my-creative-stats"') : page.index('id="channels-heading"')]
    assert re.search(r'data-figure="clicks">1<', mine_table)  # their one click; the bot is left out
    best = page[page.index('data-testid="best-social"') :]
    assert "Popular square" in best
    assert re.search(r'data-figure="clicks">22<', best)  # the program's total, no partner's own
    assert client.get("/partner/creatives/stats?from=2001-01-01&to=2001-01-02").status_code == 200


def test_partner_stats_without_activity(client, db, program, partner_user):
    page = text_of(client.get("/partner/creatives/stats"))
    assert "No clicks on your creative links in these days." in page
    assert "Not enough clicks in this channel yet to compare." in page
