"""GET /go/<code>: record the click, send the shopper on, never anywhere unsafe."""

import html
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
import time_machine

from portal import clickwriter, lookups
from portal.models import Click, Conversion, PartnerDailyStat, PartnerStatus
from portal.models.types import utcnow
from portal.services import clicks
from portal.services.api_keys import create_api_key
from portal.services.links import create_link, set_link_active
from tests.factories import PartnerFactory, store_clicks

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


# --- signed click ids ------------------------------------------------------------------


def test_a_click_id_is_signed_and_names_its_link_and_time(app, client, db, program, partner):
    link = create_link(
        partner, program, label="Shoes", channel="seo", destination_url="https://shop.example/shoes"
    )
    db.session.commit()
    moment = datetime(2026, 12, 3, 10, 30, 15, 123456, tzinfo=UTC)
    with time_machine.travel(moment, tick=False):
        by_link = query(client.get(f"/go/{link.code}", headers=BROWSER))["click_id"]
        by_ref = query(client.get("/go/pat", headers=BROWSER))["click_id"]
    secret = app.config["SECRET_KEY"]
    assert len(by_link) == 32 and re.fullmatch(r"k[A-Za-z0-9_-]{31}", by_link)
    assert clicks.read_click_id(by_link, secret) == clicks.SignedClick(
        by_link, moment.replace(microsecond=123000), link_id=link.id, partner_id=None
    )
    assert clicks.read_click_id(by_ref, secret) == clicks.SignedClick(
        by_ref, moment.replace(microsecond=123000), link_id=None, partner_id=partner.id
    )
    assert db.session.get(Click, by_link).link_id == link.id


def test_only_the_ids_the_portal_issued_read_as_signed(app, client, db, partner):
    click_id = query(client.get("/go/pat", headers=BROWSER))["click_id"]
    secret = app.config["SECRET_KEY"]
    flipped = click_id[:10] + ("A" if click_id[10] != "A" else "B") + click_id[11:]
    # The last character carries 2 spare bits: another spelling of the same bytes.
    spare = click_id[:-1] + "ABCD"[("ABCD".index(click_id[-1]) + 1) % 4] if click_id[-1] in "ABCD" else None
    for other in (flipped, spare, "0" * 32, click_id[:-1], "k" + "+" * 31, "k" + "=" * 31):
        if other is not None:
            assert clicks.read_click_id(other, secret) is None, other
    assert clicks.read_click_id(click_id, "another-secret") is None


@pytest.fixture
def unwritten(app, monkeypatch):
    """Clicks the redirect answered whose rows are still in a writer's buffer."""
    held: list[dict] = []
    monkeypatch.setattr(app.extensions["click_writer"], "record", held.append)
    return held


def _sale(client, key: str, **body):
    return client.post("/api/v1/conversions", json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def api_key(db, program):
    _key, plain = create_api_key("tests", None)
    db.session.commit()
    return plain


def test_a_sale_naming_a_click_not_written_yet_is_attributed(
    client, db, program, partner, api_key, unwritten
):
    link = create_link(
        partner, program, label="Shoes", channel="seo", destination_url="https://shop.example/shoes"
    )
    db.session.commit()
    ids = [query(client.get(f"/go/{link.code}", headers=BROWSER))["click_id"] for _ in range(5)]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Click)) == 0
    for n, click_id in enumerate(ids):  # 0 s after the click
        response = _sale(
            client, api_key, transaction_id=f"o-{n}", amount="10.00", currency="USD", click_id=click_id
        )
        assert response.status_code == 201, response.json
        assert response.json["conversion"]["attributed_by"] == "click_id"
        assert response.json["conversion"]["partner_ref"] == "pat"
    conversions = db.session.scalars(sa.select(Conversion).order_by(Conversion.transaction_id)).all()
    assert [c.click_id for c in conversions] == ids
    assert {c.partner_id for c in conversions} == {partner.id}
    written = db.session.get(Click, ids[0])
    assert (written.link_id, written.channel, written.partner_id) == (link.id, "seo", partner.id)
    # The late rows from the writer are skipped: each click stored and counted once.
    assert clicks.store_clicks(db.session, unwritten) == set()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Click)) == 5
    stat = db.session.scalars(
        sa.select(PartnerDailyStat).where(PartnerDailyStat.partner_id == partner.id)
    ).one()
    assert (stat.clicks, stat.conversions) == (5, 5)


def test_a_signup_naming_a_ref_code_click_not_written_yet_is_attributed(
    client, db, partner, api_key, unwritten
):
    click_id = query(client.get("/go/pat", headers=BROWSER))["click_id"]
    response = client.post(
        "/api/v1/signups",
        json={"customer_id": "cus-9", "click_id": click_id},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 201
    assert response.json["signup"]["attributed_by"] == "click_id"
    assert db.session.get(Click, click_id).code == "pat"


def test_a_forged_click_id_is_unknown_and_an_old_style_one_still_counts(client, db, partner, api_key):
    forged = "k" + "A" * 31
    response = _sale(client, api_key, transaction_id="o-f", amount="10.00", currency="USD", click_id=forged)
    assert response.json["conversion"]["attributed_by"] is None
    stored = db.session.scalars(sa.select(Conversion).filter_by(transaction_id="o-f")).one()
    assert stored.attribution_note == "unknown click id"
    assert db.session.get(Click, forged) is None
    old = "ab" * 16  # issued before click ids were signed
    store_clicks(db, partner, utcnow().date(), 1, id=old)
    response = _sale(client, api_key, transaction_id="o-o", amount="10.00", currency="USD", click_id=old)
    assert response.json["conversion"]["attributed_by"] == "click_id"


# --- look-ups: every code loaded at once, each code on its own beyond clicks.BULK_TARGETS ----


def _look_ups(db) -> list[str]:
    """The statements that read links or partners, as the test runs."""
    seen: list[str] = []

    @sa.event.listens_for(db.session.get_bind(), "before_cursor_execute")
    def note(conn, cursor, statement, *args):
        if "FROM links" in statement or "FROM partners" in statement:
            seen.append(statement)

    return seen


def test_after_the_first_click_no_code_needs_a_query_of_its_own(client, db, program, partner):
    links = [create_link(partner, program, label=f"Link {n}", channel="seo") for n in range(3)]
    db.session.commit()
    codes = {link.code: link.id for link in links}
    client.get("/go/pat", headers=BROWSER)  # loads every code
    seen = _look_ups(db)
    for code, link_id in codes.items():
        response = client.get(f"/go/{code}", headers=BROWSER)
        assert query(response)["ref"] == "pat"
        assert db.session.get(Click, query(response)["click_id"]).link_id == link_id
    assert client.get("/go/no-such-code", headers=BROWSER).status_code == 302
    assert seen == []


def test_a_link_made_after_every_code_was_loaded_is_found(client, db, program, partner):
    client.get("/go/pat", headers=BROWSER)  # loads every code
    link = create_link(
        partner, program, label="New", channel="seo", destination_url="https://shop.example/new"
    )
    db.session.commit()  # a watched change: this process reloads on its next look-up
    response = client.get(f"/go/{link.code}", headers=BROWSER)
    assert response.headers["Location"].startswith("https://shop.example/new?")


def test_beyond_the_bulk_limit_each_code_is_looked_up_on_its_own(client, db, program, partner, monkeypatch):
    monkeypatch.setattr(clicks, "BULK_TARGETS", 1)
    link = create_link(
        partner, program, label="Tent", channel="seo", destination_url="https://shop.example/t"
    )
    db.session.commit()
    assert client.get("/go/pat", headers=BROWSER).headers["Location"].startswith("https://shop.example/?")
    response = client.get(f"/go/{link.code}", headers=BROWSER)
    assert response.headers["Location"].startswith("https://shop.example/t?")
    assert lookups.lookups().get("target", link.code).link_id == link.id


# --- the redirect when the database cannot be reached -------------------------------------


def _database_down(monkeypatch):
    def refused(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(lookups, "read_version", refused)
    monkeypatch.setattr(clicks, "store_clicks", refused)
    monkeypatch.setattr(clickwriter, "store_clicks", refused)
    monkeypatch.setattr(clicks, "_load_target", refused)
    monkeypatch.setattr(clicks, "_load_every_target", refused)
    monkeypatch.setattr(clicks, "_load_routing", refused)
    lookups.forget_everywhere("target", "never-seen")
    for cache in list(lookups._every):
        cache._checked_at = float("-inf")


def test_during_an_outage_a_cached_link_still_redirects_and_keeps_the_click(
    app, client, db, program, partner, monkeypatch
):
    link = create_link(
        partner, program, label="Shoes", channel="seo", destination_url="https://shop.example/shoes"
    )
    db.session.commit()
    client.get(f"/go/{link.code}", headers=BROWSER)  # cached in this process
    kept: list[dict] = []
    monkeypatch.setattr(app.extensions["click_writer"], "keep", kept.append)
    _database_down(monkeypatch)
    lookups.lookups().ttl = 0  # expired entries too: the cache is all there is
    response = client.get(f"/go/{link.code}", headers=BROWSER)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://shop.example/shoes?")
    click_id = query(response)["click_id"]
    assert [row["id"] for row in kept] == [click_id]
    assert kept[0]["link_id"] == link.id
    assert "Set-Cookie" not in response.headers or "session" not in response.headers["Set-Cookie"]
    # A code this process never saw goes to the default landing page.
    unknown = client.get("/go/never-seen", headers=BROWSER)
    assert (unknown.status_code, unknown.headers["Location"]) == (302, "https://shop.example/")
    assert len(kept) == 1


def test_during_an_outage_with_nothing_cached_the_redirect_answers_a_plain_503(
    client, db, partner, monkeypatch
):
    _database_down(monkeypatch)
    response = client.get("/go/pat", headers=BROWSER)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"
    assert b"try again" in response.data


def test_an_unexpected_error_on_the_redirect_still_sends_the_shopper_on(
    app, client, db, partner, monkeypatch
):
    client.get("/go/pat", headers=BROWSER)
    app.config["PROPAGATE_TEST_ERRORS"] = False

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(clicks, "creative_landing", broken)
    kept: list[dict] = []
    monkeypatch.setattr(app.extensions["click_writer"], "keep", kept.append)
    response = client.get("/go/pat?creative=5", headers=BROWSER)
    assert response.status_code == 302
    assert query(response)["click_id"] == kept[0]["id"]


def test_the_redirect_is_answered_before_flask_and_its_request_hooks(app, client, db, partner):
    """``/go/`` is routed at the WSGI level (portal/blueprints/track/routes.py ``serve``): no
    app-wide request hook runs for a click, and the answer still carries every security
    header, its own Referrer-Policy and the seen cookie on the link's path."""
    hooked = []
    app.before_request(lambda: hooked.append("before"))
    app.after_request(lambda response: hooked.append("after") or response)
    response = client.get("/go/pat", headers=BROWSER)
    assert response.status_code == 302
    assert hooked == []
    assert response.headers["Referrer-Policy"] == "no-referrer-when-downgrade"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "pp_seen=1" in response.headers["Set-Cookie"]
    assert "Path=/go/pat" in response.headers["Set-Cookie"]
    assert html.escape(response.headers["Location"]) in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Click)) == 1
    # A page is Flask's: its hooks run.
    client.get("/login")
    assert hooked == ["before", "after"]


def test_head_redirects_without_a_body_and_other_methods_reach_flask(client, db, partner):
    head = client.head("/go/pat", headers=BROWSER)
    assert head.status_code == 302
    assert head.get_data() == b""
    assert head.headers["Location"].startswith("https://shop.example/?")
    assert client.post("/go/pat").status_code == 405
    assert client.get("/go/bad%01code").status_code == 404


def test_a_location_with_non_ascii_characters_is_sent_as_a_uri(client, db, program, partner):
    link = create_link(
        partner, program, label="Café", channel="seo", destination_url="https://shop.example/café"
    )
    db.session.commit()
    response = client.get(f"/go/{link.code}", headers=BROWSER)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://shop.example/caf%C3%A9?")
