"""CSRF on every state-changing route, generated from the app's URL map.

Every route that accepts POST is sent, by a user it would otherwise act for, without a
token, with a made-up token and with another session's valid token: each must be refused
(400) and the database must be exactly as before. A new POST route is covered the moment
it exists; one that should take no token must be added to ``EXEMPT`` with the reason.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
import sqlalchemy as sa
from werkzeug.routing.converters import NumberConverter

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import PartnerStatus, PayoutBatch, PayoutItem, Role
from portal.models.types import utcnow
from portal.services.links import create_link
from tests.factories import PartnerFactory, UserFactory

# Routes that take no CSRF token, and why. Anything else that accepts POST must want one.
EXEMPT = {
    "api.*": "the tracking API authenticates each request with a bearer key, never a cookie",
    "auth.unsubscribe": "RFC 8058: mail clients POST List-Unsubscribe=One-Click without a form token; "
    "the signed token in the address is the permission",
}
VARIANTS = ["missing", "made_up", "other_session"]


@pytest.fixture
def app(database_url, tmp_path):
    """The app with CSRF protection on, as in production (the test config switches it off)."""
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        STORAGE_LOCAL_DIR=str(tmp_path / "media"),
        WTF_CSRF_ENABLED=True,
    )
    yield app
    with app.app_context():
        _db.engine.dispose()


def _exempt(endpoint: str) -> bool:
    return endpoint in EXEMPT or f"{endpoint.split('.')[0]}.*" in EXEMPT


def post_rules(app):
    return sorted(
        (rule for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())),
        key=lambda rule: (rule.endpoint, rule.rule),
    )


def _role_for(endpoint: str) -> str | None:
    if endpoint.startswith("admin."):
        return Role.ADMIN
    if endpoint.startswith("partner."):
        return Role.PARTNER
    return None  # the public forms: as a visitor


def _url(app, rule, ids: dict[str, int]) -> str:
    values = {}
    for name in rule.arguments:
        converter = rule._converters[name]
        items = getattr(converter, "items", None)
        if items:
            values[name] = sorted(items)[0]
        elif isinstance(converter, NumberConverter):
            values[name] = ids.get(name, 1)
        else:
            values[name] = "x"
    with app.test_request_context():
        adapter = app.url_map.bind("localhost")
        return adapter.build(rule.endpoint, values, method="POST")


def _snapshot() -> dict[str, int]:
    """The row count of every table: any write would show."""
    return {
        table.name: _db.session.scalar(sa.select(sa.func.count()).select_from(table))
        for table in _db.metadata.sorted_tables
    }


def _token_of_another_session(app) -> str:
    other = app.test_client()
    page = other.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def _world(db, program) -> dict[str, int]:
    """Rows for the routes' ids to point at, so a request that got through would change them."""
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    applied = PartnerFactory(status=PartnerStatus.APPLIED)
    link = create_link(partner, program, label="theirs", channel="seo")
    batch = PayoutBatch(currency="USD", period_end=date(2026, 11, 15), cutoff_at=utcnow())
    item = PayoutItem(batch=batch, partner_id=partner.id, amount_minor=5000, currency="USD")
    db.session.add_all([batch, item])
    user = UserFactory(role=Role.MANAGER)
    db.session.commit()
    return {
        "partner_id": applied.id,
        "link_id": link.id,
        "batch_id": batch.id,
        "item_id": item.id,
        "user_id": user.id,
    }


def test_every_post_route_wants_a_token_or_says_why_not(app):
    endpoints = {rule.endpoint for rule in post_rules(app)}
    listed = {e for e in EXEMPT if not e.endswith(".*")}
    assert listed <= endpoints, "remove exemptions for routes that no longer exist"
    from portal.extensions import csrf

    exempt_blueprints = {getattr(bp, "name", bp) for bp in csrf._exempt_blueprints}
    for rule in post_rules(app):
        view = app.view_functions[rule.endpoint]
        declared = (
            f"{view.__module__}.{view.__name__}" in csrf._exempt_views
            or rule.endpoint.split(".")[0] in exempt_blueprints
        )
        uploads = getattr(view, "accepts_uploads", False)  # checks its token itself, in the view
        if declared and not uploads:
            assert _exempt(rule.endpoint), f"{rule.endpoint} skips CSRF: add it to EXEMPT with the reason"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_state_change_without_a_valid_token_is_refused_and_changes_nothing(
    app, client, db, program, make_user, variant
):
    ids = _world(db, program)
    users = {role: make_user(role) for role in (Role.ADMIN, Role.PARTNER)}
    db.session.commit()
    stolen = _token_of_another_session(app)
    checked, failures = 0, []
    for rule in post_rules(app):
        if _exempt(rule.endpoint):
            continue
        role = _role_for(rule.endpoint)
        with client.session_transaction() as session:
            session.clear()
            if role is not None:
                session["_user_id"] = users[role].get_id()
                session["_fresh"] = True
        data = {"name": "x", "label": "x", "body": "x", "reason": "x", "confirm": "y"}
        if variant == "made_up":
            data["csrf_token"] = (
                "IjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAi.aaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbb"
            )
        elif variant == "other_session":
            data["csrf_token"] = stolen
        url = _url(app, rule, ids)
        before = _snapshot()
        response = client.post(url, data=data)
        after = _snapshot()
        checked += 1
        if response.status_code != 400:
            failures.append(f"{rule.endpoint} {url}: {response.status_code}")
        elif after != before:
            changed = {k for k in after if after[k] != before[k]}
            failures.append(f"{rule.endpoint} {url}: changed {sorted(changed)}")
    assert failures == []
    assert checked >= 50  # the app has dozens of state-changing routes; this saw them


def test_the_same_request_with_the_right_token_does_act(app, client, db, program, login_as):
    """The control: the snapshot notices a change, and the token the page gives works."""
    login_as(Role.PARTNER)
    page = client.get("/partner/links").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    before = _snapshot()
    refused = client.post("/partner/links", data={"label": "Blog", "channel": "seo"})
    assert refused.status_code == 400 and _snapshot() == before
    response = client.post("/partner/links", data={"label": "Blog", "channel": "seo", "csrf_token": token})
    assert response.status_code == 302
    assert _snapshot()["links"] == before["links"] + 1
