"""One canonical origin: every absolute address the portal hands out is built on PORTAL_BASE_URL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import url_for

from config import ProductionConfig, TestingConfig, finalise_base_url, parse_base_url
from portal import create_app
from portal.models import AutomaticKind, Message, PartnerStatus, Role, Sender, Thread
from portal.urls import absolute_url
from tests.factories import PartnerFactory, UserFactory

BASE = "https://partners.northwind.example"
EVIL = "evil.example"


@pytest.fixture
def proxied_app(database_url: str, db, tmp_path) -> Iterator:
    """The portal as production runs it: behind one proxy, on its public origin."""
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        STORAGE_LOCAL_DIR=str(tmp_path / "media"),
        SERVER_NAME=None,
        PROXY_FIX_HOPS=1,
        PORTAL_BASE_URL=BASE,
    )
    with app.app_context():
        yield app


def reset_link(message) -> str:
    return re.search(r"\S+/password/reset/\S+", message.get_content()).group(0)


HOSTILE_HEADERS = [
    pytest.param({"Host": EVIL}, id="host"),
    pytest.param({"X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "https"}, id="x-forwarded-host"),
    pytest.param({"Host": EVIL, "X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "http"}, id="both"),
]


@pytest.mark.smtp
@pytest.mark.parametrize("headers", HOSTILE_HEADERS)
def test_password_reset_mail_links_to_the_base_url_whatever_the_host(proxied_app, db, smtp_server, headers):
    controller, collector = smtp_server
    proxied_app.config.update(MAIL_SERVER=controller.hostname, MAIL_PORT=controller.port)
    with collector.lock:
        collector.messages.clear()
    UserFactory(email="admin@example.org", role=Role.ADMIN)
    db.session.commit()

    response = proxied_app.test_client().post(
        "/password/forgot", data={"email": "admin@example.org"}, headers=headers
    )

    assert response.status_code == 200
    [message] = collector.messages
    link = reset_link(message)
    assert link.startswith(f"{BASE}/password/reset/")
    assert EVIL not in message.get_content()


@pytest.mark.smtp
def test_the_test_apps_reset_mail_uses_its_base_url_not_the_host(client, db, mail_outbox):
    UserFactory(email="ops@example.org")
    db.session.commit()
    client.post("/password/forgot", data={"email": "ops@example.org"}, headers={"Host": EVIL})
    [message] = mail_outbox
    assert reset_link(message).startswith("http://portal.test/password/reset/")


@pytest.mark.parametrize("headers", HOSTILE_HEADERS)
def test_openapi_servers_name_the_base_url(proxied_app, headers):
    document = proxied_app.test_client().get("/api/v1/openapi.json", headers=headers).get_json()
    assert document["servers"] == [{"url": f"{BASE}/api/v1"}]


def test_pages_show_partner_links_on_the_base_url(proxied_app, db):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    db.session.commit()
    client = proxied_app.test_client()
    with client.session_transaction(headers={"Host": EVIL}) as session:
        session["_user_id"] = partner.user.get_id()
        session["_fresh"] = True
    page = client.get("/partner/links", headers={"X-Forwarded-Host": EVIL, "Host": EVIL}).get_data(
        as_text=True
    )
    assert f"{BASE}/go/{partner.ref_code}" in page
    assert EVIL not in page


def test_an_automatic_message_links_to_the_base_url(proxied_app, db):
    admin = UserFactory(role=Role.ADMIN)
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    db.session.commit()
    client = proxied_app.test_client()
    with client.session_transaction(headers={"Host": EVIL}) as session:
        session["_user_id"] = admin.get_id()
        session["_fresh"] = True

    response = client.post(
        f"/admin/partners/{partner.id}/approve", headers={"Host": EVIL, "X-Forwarded-Host": EVIL}
    )

    assert response.status_code == 302
    body = db.session.scalars(
        sa.select(Message.body)
        .join(Thread)
        .where(
            Thread.partner_id == partner.id,
            Thread.automatic_kind == AutomaticKind.WELCOME,
            Message.sender == Sender.SYSTEM,
        )
    ).one()
    assert f"{BASE}/partner/links" in body
    assert EVIL not in body


def test_url_for_outside_a_request_builds_on_the_base_url(proxied_app):
    assert absolute_url("partner.dashboard") == f"{BASE}/partner/"
    assert url_for("auth.login", _external=True) == f"{BASE}/login"


def test_a_base_url_with_a_path_prefixes_every_address(database_url, db):
    app = create_app(
        TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, PORTAL_BASE_URL="https://example.org/portal/"
    )
    with app.test_request_context("/", headers={"Host": EVIL}):
        assert url_for("auth.login", _external=True) == "https://example.org/portal/login"


def test_redirects_never_name_a_client_host(proxied_app):
    response = proxied_app.test_client().get("/partner", headers={"Host": EVIL})  # strict slash: 308
    assert response.status_code in (301, 308)
    assert response.headers["Location"].startswith(f"{BASE}/partner/")


def test_production_refuses_to_start_without_a_base_url(monkeypatch):
    config = {"ENV_NAME": "production", "PORTAL_BASE_URL": None, "TRUSTED_HOSTS": None}
    with pytest.raises(RuntimeError, match="PORTAL_BASE_URL must be set in production"):
        finalise_base_url(config)
    with pytest.raises(RuntimeError, match="PORTAL_BASE_URL must be set in production"):
        create_app(ProductionConfig, SECRET_KEY="x" * 40, PORTAL_BASE_URL=None)


def test_development_defaults_to_the_address_make_run_prints():
    config = {"ENV_NAME": "development", "PORTAL_BASE_URL": None, "TRUSTED_HOSTS": None}
    finalise_base_url(config)
    assert config["PORTAL_BASE_URL"] == "http://127.0.0.1:5000"
    assert config["TRUSTED_HOSTS"] is None


@pytest.mark.parametrize(
    "value",
    [
        "partners.example",
        "ftp://partners.example",
        "https://",
        "https://u:p@partners.example",
        "https://x.example/?a=1",
    ],
)
def test_a_malformed_base_url_is_refused(value):
    with pytest.raises(RuntimeError, match="PORTAL_BASE_URL"):
        parse_base_url(value)


def test_production_trusts_only_the_base_host_and_localhost(database_url, db):
    app = create_app(
        ProductionConfig,
        SECRET_KEY="x" * 40,
        SQLALCHEMY_DATABASE_URI=database_url,
        PORTAL_BASE_URL=BASE,
        TRUSTED_HOSTS=None,
    )
    assert app.config["TRUSTED_HOSTS"] == ["partners.northwind.example", "localhost", "127.0.0.1"]
    client = app.test_client()
    assert client.get("/login", headers={"Host": "partners.northwind.example"}).status_code == 200
    assert client.get("/login", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/login", headers={"Host": EVIL}).status_code == 400


def signed_in(app, user):
    client = app.test_client()
    with client.session_transaction(headers={"Host": EVIL}) as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True
    return client


@pytest.mark.smtp
def test_an_invitation_mail_links_to_the_base_url(proxied_app, db, smtp_server):
    controller, collector = smtp_server
    proxied_app.config.update(MAIL_SERVER=controller.hostname, MAIL_PORT=controller.port)
    with collector.lock:
        collector.messages.clear()
    admin = UserFactory(role=Role.ADMIN)
    db.session.commit()
    response = signed_in(proxied_app, admin).post(
        "/admin/team",
        data={"name": "Nia New", "email": "nia@example.org", "role": "manager"},
        headers={"Host": EVIL, "X-Forwarded-Host": EVIL},
    )
    assert response.status_code == 302
    [message] = collector.messages
    assert reset_link(message).startswith(f"{BASE}/password/reset/")
    assert EVIL not in message.get_content()


def test_a_banners_embed_code_uses_the_base_url(proxied_app, db, program):
    from tests.creative_support import make_banner

    manager = UserFactory(role=Role.MANAGER)
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    banner = make_banner(manager, program)
    db.session.commit()
    page = (
        signed_in(proxied_app, partner.user)
        .get(f"/partner/creatives/{banner.id}", headers={"Host": EVIL, "X-Forwarded-Host": EVIL})
        .get_data(as_text=True)
    )
    assert f"{BASE}/go/{partner.ref_code}?creative={banner.id}" in page
    assert f"{BASE}/media/banners/{banner.id}" in page
    assert EVIL not in page
