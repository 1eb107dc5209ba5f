"""GET /go/<code>: record the click, send the shopper on, never anywhere unsafe."""

from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from portal.models import Click, PartnerStatus
from portal.services import clicks
from portal.services.links import create_link, set_link_active
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


@pytest.fixture
def partner(db, program):
    partner = PartnerFactory(ref_code="pat")
    db.session.commit()
    return partner


def query(response) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def test_ref_code_redirects_to_the_default_landing_with_ref_and_click_id(client, db, partner):
    response = client.get("/go/pat", headers={**BROWSER, "Referer": "https://blog.example/post"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://shop.example/?")
    params = query(response)
    assert params["ref"] == "pat"
    click = db.session.get(Click, params["click_id"])
    assert click.partner_id == partner.id
    assert click.link_id is None
    assert click.referrer == "https://blog.example/post"
    assert click.is_unique
    assert not click.is_bot
    assert len(click.ip_hash) == 32
    assert "127.0.0.1" not in click.ip_hash
    assert response.headers["Cache-Control"] == "no-store"


def test_link_with_destination_channel_sub_and_creative(client, db, program, partner):
    link = create_link(
        partner, program, label="Tent review", channel="seo", destination_url="https://shop.example/tents?c=1"
    )
    db.session.commit()
    response = client.get(f"/go/{link.code}?sub=post42&creative=7", headers=BROWSER)
    assert response.headers["Location"].startswith("https://shop.example/tents?")
    params = query(response)
    assert params["c"] == "1"
    click = db.session.get(Click, params["click_id"])
    assert (click.link_id, click.channel, click.sub_id, click.creative_id) == (link.id, "seo", "post42", 7)


def test_returning_visitor_within_a_day_is_not_unique(client, db, partner):
    first = client.get("/go/pat", headers=BROWSER)
    second = client.get("/go/pat", headers=BROWSER)
    assert db.session.get(Click, query(first)["click_id"]).is_unique
    assert not db.session.get(Click, query(second)["click_id"]).is_unique


@pytest.mark.parametrize("agent", ["", "Googlebot/2.1", "curl/8.5.0", "python-requests/2.32"])
def test_bots_are_flagged_and_not_unique(client, db, partner, agent):
    response = client.get("/go/pat", headers={"User-Agent": agent})
    click = db.session.get(Click, query(response)["click_id"])
    assert click.is_bot
    assert not click.is_unique


def test_click_flooding_is_flagged(client, db, program, partner):
    program.click_flood_per_minute = 3
    db.session.commit()
    for _ in range(5):
        client.delete_cookie("pp_seen", domain="portal.test", path="/go/pat")
        client.get("/go/pat", headers=BROWSER)
    rows = db.session.scalars(sa.select(Click).order_by(Click.created_at)).all()
    assert [c.flagged for c in rows] == [None, None, None, "click_flood", "click_flood"]
    assert [c.is_unique for c in rows] == [True, True, True, False, False]


# (a NUL in the code is refused with 400: tests/security/test_bad_input.py)
@pytest.mark.parametrize("code", ["nope", "a/b/c", "a" * 300, "%2F%2Fevil.example"])
def test_unknown_codes_go_to_the_default_landing_and_record_nothing(client, db, partner, code):
    response = client.get(f"/go/{code}", headers=BROWSER)
    assert response.status_code == 302
    assert response.headers["Location"] == "https://shop.example/"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Click)) == 0


def test_disabled_link_goes_to_the_default_landing(client, db, program, partner):
    link = create_link(
        partner, program, label="Old", channel="ads", destination_url="https://shop.example/old"
    )
    set_link_active(link, False)
    db.session.commit()
    response = client.get(f"/go/{link.code}", headers=BROWSER)
    assert response.headers["Location"] == "https://shop.example/"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Click)) == 0


def test_suspended_partner_links_send_shoppers_on_but_do_not_track(client, db, program, partner):
    partner.status = PartnerStatus.SUSPENDED
    db.session.commit()
    response = client.get("/go/pat", headers=BROWSER)
    assert response.headers["Location"] == "https://shop.example/"
    assert "ref=" not in response.headers["Location"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Click)) == 0


def test_a_destination_no_longer_allowed_falls_back_to_the_default_landing(client, db, program, partner):
    link = create_link(partner, program, label="x", channel="seo", destination_url="https://shop.example/a")
    program.allowed_domains = ["other.example"]
    program.default_landing_url = "https://other.example/"
    db.session.commit()
    response = client.get(f"/go/{link.code}", headers=BROWSER)
    assert urlsplit(response.headers["Location"]).hostname == "other.example"


def test_custom_parameter_names(client, db, program, partner):
    program.ref_param, program.click_id_param = "aff", "cid"
    db.session.commit()
    params = query(client.get("/go/pat", headers=BROWSER))
    assert set(params) == {"aff", "cid"}


def test_before_set_up_the_redirect_explains_instead_of_guessing(client, db):
    PartnerFactory(ref_code="early")
    db.session.commit()
    response = client.get("/go/early")
    assert response.status_code == 503
    assert "not set up yet" in response.get_data(as_text=True)


def test_redirect_does_not_touch_the_session(client, db, partner):
    response = client.get("/go/pat", headers=BROWSER)
    assert "session=" not in " ".join(response.headers.getlist("Set-Cookie"))
