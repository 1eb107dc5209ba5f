"""One URL check (portal.urlcheck) for every destination, and the redirect re-checks what is stored."""

from __future__ import annotations

from urllib.parse import unquote

import idna
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal import urlcheck
from portal.errors import DomainError, InvalidSetting
from portal.models import CreativeKind, Link, PartnerTier, Role, Tier
from portal.services import clicks, creatives
from portal.services.campaign_requests import RequestInput, submit_request
from portal.services.creatives import CreativeInput
from portal.services.links import create_link
from portal.services.program import ProgramSettings, settings_of, update_program_settings
from tests.factories import PASSWORD, PartnerFactory, UserFactory

SHOP = "northwind-outdoor.example"
DOMAINS = [SHOP]
EVIL_BACKSLASH = "https://evil.example\\.northwind-outdoor.example/"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36"}


@pytest.fixture(autouse=True)
def _fresh_caches():
    clicks.forget_routing()
    clicks.forget_creative()
    yield
    clicks.forget_routing()
    clicks.forget_creative()


@pytest.fixture
def shop(db, program):
    program.allowed_domains = [SHOP]
    program.default_landing_url = f"https://{SHOP}/"
    db.session.commit()
    return program


# --- the check itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (f"https://{SHOP}/", f"https://{SHOP}/"),
        (
            "  HTTPS://WWW.Northwind-Outdoor.Example/Tents?A=1#Top ",
            "https://www.northwind-outdoor.example/Tents?A=1#Top",
        ),
        (f"http://{SHOP}:8443/x", f"http://{SHOP}:8443/x"),
        (f"https://{SHOP}./", f"https://{SHOP}./"),
        (f"https://{SHOP}/ü?q=ä", f"https://{SHOP}/ü?q=ä"),
        # An ideographic full stop is a dot to a browser too: a real subdomain, sent as ASCII.
        ("https://evil.example\u3002northwind-outdoor.example/", f"https://evil.example.{SHOP}/"),
        (f"https://bücher.{SHOP}/", f"https://xn--bcher-kva.{SHOP}/"),
    ],
)
def test_accepted_addresses_come_back_normalised(raw, clean):
    assert urlcheck.clean_destination(raw, DOMAINS) == clean
    assert urlcheck.is_allowed_destination(raw, DOMAINS)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (EVIL_BACKSLASH, "backslash"),
        (f"https://{SHOP}\\@evil.example/", "backslash"),
        (f"https://{SHOP}/path\\x", "backslash"),
        ("https://evil.example\t.northwind-outdoor.example/", "control"),
        (f"https://evil.example\n.{SHOP}/", "control"),
        (f"https://{SHOP}/\x00", "control"),
        (f"https://{SHOP}/\u200b", "control"),
        (f"https://{SHOP}/a b", "control"),
        (f"https://{SHOP}\u3000/", "control"),
        (f"https://{SHOP}@evil.example/", "userinfo"),
        (f"https://user:pw@{SHOP}/", "userinfo"),
        (f"https://evil.example%2F.{SHOP}/", "host"),
        (f"https://evil.example%2e{SHOP}/", "host"),
        (f"https://evil..{SHOP}/", "host"),
        (f"https://[::1]/{SHOP}", "host"),
        (f"https://[{SHOP}/", "malformed"),
        ("https://evil.example\uff0f.northwind-outdoor.example/", "malformed"),
        (f"https:evil.example/{SHOP}", "authority"),
        (f"https:/{SHOP}/", "authority"),
        (f"https:///{SHOP}/", "host"),
        (f"//{SHOP}/", "scheme"),
        (f"javascript://{SHOP}/%0aalert(1)", "scheme"),
        (f"ftp://{SHOP}/", "scheme"),
        (f"https://{SHOP}:99999/", "malformed"),
        (f"https://{SHOP}:x/", "malformed"),
        ("https://evil.example/", "domain"),
        (f"https://{SHOP}.evil.example/", "domain"),
        (f"https://evil{SHOP}/", "domain"),
        ("", "empty"),
        (None, "empty"),
        (f"https://{SHOP}/" + "a" * 2000, "length"),
    ],
)
def test_refused_addresses_say_why(raw, reason):
    with pytest.raises(urlcheck.UnsafeUrl) as refused:
        urlcheck.clean_destination(raw, DOMAINS)
    assert refused.value.reason == reason
    assert not urlcheck.is_allowed_destination(raw, DOMAINS)
    assert urlcheck.checked_destination(raw, DOMAINS) is None


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/partner/links?x=1", True),
        ("/admin/", True),
        ("//evil.example/", False),
        ("/\\evil.example/", False),
        ("\\\\evil.example", False),
        ("https://evil.example/", False),
        ("/partner\r\nSet-Cookie: x=1", False),
        ("/partner%0d%0a", True),  # still escaped: harmless in a Location header
        ("/\tevil", False),
        ("partner/links", False),
        ("", False),
        (None, False),
    ],
)
def test_sign_in_next_is_a_path_on_this_site(target, kept):
    assert urlcheck.safe_next(target) == (target if kept else None)


# --- every place that saves an address refuses the backslash trick ------------------------------


def test_a_partner_cannot_save_the_backslash_destination(client, db, shop, login_as):
    user = login_as(Role.PARTNER)
    response = client.post(
        "/partner/links", data={"label": "x", "channel": "seo", "destination_url": EVIL_BACKSLASH}
    )
    assert response.status_code == 422
    assert (
        db.session.scalar(
            sa.select(sa.func.count()).select_from(Link).where(Link.partner_id == user.partner.id)
        )
        == 0
    )


def test_campaign_requests_creatives_and_settings_refuse_it(db, shop):
    partner = PartnerFactory()
    gold = Tier(name="Gold", rank=3, rate_percent_bp=1500, can_request_campaigns=True)
    db.session.add(gold)
    db.session.flush()
    db.session.add(PartnerTier(partner_id=partner.id, tier_id=gold.id))
    db.session.flush()
    with pytest.raises(DomainError) as refused:
        submit_request(partner, shop, RequestInput("Tents", EVIL_BACKSLASH, 1200, None))
    assert refused.value.field == "landing_url"
    with pytest.raises(DomainError) as refused:
        creatives.create_creative(
            CreativeKind.LANDING,
            UserFactory(role=Role.MANAGER),
            shop,
            CreativeInput(name="Tents page", channels=["seo"], url=EVIL_BACKSLASH),
        )
    assert refused.value.field == "url"
    settings = settings_of(shop)
    settings.default_landing_url = EVIL_BACKSLASH
    with pytest.raises(InvalidSetting) as refused:
        update_program_settings(shop, UserFactory(role=Role.ADMIN), settings)
    assert refused.value.field == "default_landing_url"
    assert isinstance(settings, ProgramSettings)


def test_saved_addresses_are_stored_normalised(db, shop):
    partner = PartnerFactory()
    link = create_link(
        partner, shop, label="x", channel="seo", destination_url=f" HTTPS://WWW.{SHOP.upper()}/a "
    )
    assert link.destination_url == f"https://www.{SHOP}/a"


# --- the redirect re-checks what is stored ----------------------------------------------------


def test_a_stored_backslash_destination_is_not_redirected_to(client, db, shop):
    partner = PartnerFactory(ref_code="pat")
    link = create_link(partner, shop, label="x", channel="seo", destination_url=f"https://{SHOP}/tents")
    db.session.commit()
    db.session.execute(sa.update(Link).where(Link.id == link.id).values(destination_url=EVIL_BACKSLASH))
    db.session.commit()
    clicks.forget_target()
    response = client.get(f"/go/{link.code}", headers=BROWSER)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(f"https://{SHOP}/?")
    assert "evil" not in location and "\\" not in location


def test_a_stored_backslash_landing_creative_is_not_redirected_to(client, db, shop):
    manager = UserFactory(role=Role.MANAGER)
    PartnerFactory(ref_code="pat")
    creative = creatives.create_creative(
        CreativeKind.LANDING,
        manager,
        shop,
        CreativeInput(name="Tents page", channels=["seo"], url=f"https://{SHOP}/tents"),
    )
    creatives.set_creative_status(creative, manager, "publish")
    db.session.commit()
    good = client.get(f"/go/pat?creative={creative.id}", headers=BROWSER)
    assert good.headers["Location"].startswith(f"https://{SHOP}/tents?")
    db.session.execute(
        sa.text("UPDATE creative_versions SET url = :url WHERE creative_id = :id"),
        {"url": EVIL_BACKSLASH, "id": creative.id},
    )
    db.session.commit()
    clicks.forget_creative()
    response = client.get(f"/go/pat?creative={creative.id}", headers=BROWSER)
    assert response.headers["Location"].startswith(f"https://{SHOP}/?")
    assert "evil" not in response.headers["Location"]


def test_a_stored_default_landing_off_the_list_is_not_redirected_to(client, db, shop):
    PartnerFactory(ref_code="pat")
    db.session.execute(sa.text("UPDATE programs SET default_landing_url = :url"), {"url": EVIL_BACKSLASH})
    db.session.commit()
    clicks.forget_routing()
    response = client.get("/go/pat", headers=BROWSER)
    assert response.status_code == 503
    assert "Location" not in response.headers


# --- nothing accepted leaves the list, as a browser reads it -------------------------------------


def browser_host(url: str) -> str:
    """The host a WHATWG URL parser (a browser) finds in an address the check accepted.

    Accepted addresses have no backslash, control character or space, so a browser's
    special-scheme parsing reduces to: the authority runs from ``//`` to the first of
    ``/ ? #``; the user info ends at its last ``@``; the port follows the last ``:``; the
    host is percent-decoded and mapped with UTS #46 (full-width forms, ideographic dots).
    """
    authority = url.split("//", 1)[1]
    for stop in "/?#":
        authority = authority.split(stop, 1)[0]
    host = authority.rpartition("@")[2]
    if ":" in host:
        host = host.rpartition(":")[0]
    host = unquote(host)
    return idna.uts46_remap(host, std3_rules=False, transitional=False).lower()


_PIECES = st.sampled_from(
    [
        "evil.example", SHOP, "www", ".", "..", "/", "\\", "@", ":", "#", "?", "%2e", "%2f", "%5c", "%40",
        "\u3002", "\uff0e", "\uff20", "\uff0f", "\t", "\n", " ", "\x00", "\u200b", "user:pw", "80",
        "ＥＶＩＬ", "xn--", "-", "[", "]",
    ]
)  # fmt: skip


@st.composite
def _addresses(draw) -> str:
    scheme = draw(
        st.sampled_from(["https://", "http://", "HTTPS://", "https:", "https:/", "//", "javascript:"])
    )
    middle = "".join(draw(st.lists(_PIECES, max_size=6)))
    tail = draw(st.sampled_from(["", "/", "/x?y=1", "#f", ":8443/"]))
    return scheme + middle + draw(st.sampled_from(["", "." + SHOP, SHOP])) + tail


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_addresses())
def test_nothing_accepted_has_a_host_off_the_list(url):
    try:
        clean = urlcheck.clean_destination(url, DOMAINS)
    except urlcheck.UnsafeUrl:
        return
    assert "\\" not in clean
    for address in (url.strip(), clean):
        host = browser_host(address)
        assert urlcheck.host_is_allowed(host, DOMAINS), (url, host)


# --- every redirect with a target that is not the portal's own route ---------------------------

# module: function -> how its target is made safe (and which test shows it).
REDIRECTS = {
    # (the WSGI-level ``serve`` sends the same ``follow()`` outcome as its Location header)
    (
        "portal.blueprints.track.routes",
        "follow_link",
    ): "destinations re-checked by portal.urlcheck when cached",
    ("portal.blueprints.auth.routes", "_sign_in"): "next= through urlcheck.safe_next (login, code step)",
    ("portal.blueprints.auth.routes", "set_language"): "next= through urlcheck.safe_next (language switch)",
    ("portal.blueprints.media", "banner_image"): "the file store's own signed address",
    (
        "portal.blueprints.admin.coupons",
        "decide_coupon",
    ): "the coupon list with its filters: the Referer through urlcheck.safe_next, the list's path only",
}


def _own_address(node) -> bool:
    """``url_for(...)``, ``home_url_for(...)``, ``url_for(...) + "#part"``, ``request.path``."""
    import ast

    if isinstance(node, ast.BinOp):
        return _own_address(node.left)
    if isinstance(node, ast.Call):
        return getattr(node.func, "id", None) in ("url_for", "home_url_for")
    return node is not None and ast.unparse(node) in ("request.path", "request.full_path")


def _dynamic_redirects() -> set[tuple[str, str]]:
    """Functions in the blueprints that call ``redirect(x)`` with ``x`` not a ``url_for(...)``
    (nor a ``home_url_for`` / ``request.path``: the portal's own addresses)."""
    import ast
    import importlib
    import inspect
    import pkgutil

    import portal.blueprints

    found = set()
    for info in pkgutil.walk_packages(portal.blueprints.__path__, "portal.blueprints."):
        module = importlib.import_module(info.name)
        tree = ast.parse(inspect.getsource(module))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for call in ast.walk(function):
                if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "redirect"):
                    continue
                if not _own_address(call.args[0] if call.args else None):
                    found.add((info.name, function.name))
    return found


def test_every_redirect_to_a_computed_address_is_listed():
    assert _dynamic_redirects() == set(REDIRECTS)


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example/",
        "https://evil.example/",
        "http:evil.example",
        "/\t/evil.example",
        "/partner/\r\nLocation: https://evil.example/",
        "javascript:alert(1)",
    ],
)
def test_sign_in_never_sends_anyone_off_site(client, db, program, make_user, target):
    user = make_user(Role.PARTNER)
    db.session.commit()
    response = client.post(
        "/login", query_string={"next": target}, data={"email": user.email, "password": PASSWORD}
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location == "/partner/"
    assert "evil" not in location


def test_sign_in_follows_a_path_on_this_site(client, db, program, make_user):
    user = make_user(Role.PARTNER)
    db.session.commit()
    response = client.post(
        "/login",
        query_string={"next": "/partner/links?x=1"},
        data={"email": user.email, "password": PASSWORD},
    )
    assert response.headers["Location"] == "/partner/links?x=1"
