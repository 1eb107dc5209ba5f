"""Security headers on every response: CSP with a per-request nonce, framing, sniffing, referrer, HSTS."""

from __future__ import annotations

import json
import logging
import re

import pytest

from config import ProductionConfig, TestingConfig
from portal import create_app
from portal.models import PartnerStatus
from tests.factories import PartnerFactory

NONCE = re.compile(r"'nonce-([^']+)'")


def directives(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {
        part.split(" ", 1)[0]: part.split(" ", 1)[1] if " " in part else "" for part in policy.split("; ")
    }


def assert_common_headers(response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in response.headers  # testing is not production


def test_a_page_carries_a_strict_policy(client, db, program):
    response = client.get("/login")
    assert response.status_code == 200
    assert_common_headers(response)
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    policy = directives(response)
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self' ws://portal.test"
    assert "unsafe-inline" not in policy["script-src"]
    assert "unsafe-eval" not in policy["script-src"]
    assert policy["script-src"].startswith("'self'")
    assert "report-uri" not in policy  # reports are a development aid


def test_every_script_tag_carries_this_requests_nonce(client, db, login_as):
    login_as("partner")
    first = client.get("/partner/")
    second = client.get("/partner/")
    [nonce] = NONCE.findall(first.headers["Content-Security-Policy"])
    [other] = NONCE.findall(second.headers["Content-Security-Policy"])
    assert nonce != other and len(nonce) >= 22
    page = first.get_data(as_text=True)
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert len(scripts) >= 3  # htmx, socket.io, portal.js
    assert all(f'nonce="{nonce}"' in tag for tag in scripts), scripts
    assert "style=" not in page
    assert re.search(r"\son[a-z]+=", page) is None  # no inline event handlers


def test_htmx_runs_without_eval_or_injected_styles(client, db, program):
    page = client.get("/login").get_data(as_text=True)
    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", page).group(1)
    assert json.loads(config) == {"allowEval": False, "includeIndicatorStyles": False}


def test_error_pages_and_the_api_carry_the_headers_too(client, db, program):
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert_common_headers(missing)
    assert directives(missing)["frame-ancestors"] == "'none'"
    api = client.get("/api/v1/openapi.json")
    assert_common_headers(api)


def test_the_click_redirect_keeps_its_own_referrer_policy(client, db, program):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    db.session.commit()
    response = client.get(f"/go/{partner.ref_code}")
    assert response.status_code == 302
    assert response.headers["Referrer-Policy"] == "no-referrer-when-downgrade"
    assert_common_headers(response)
    assert directives(response)["frame-ancestors"] == "'none'"


def test_the_click_redirects_not_ready_page_is_covered(client, db):
    response = client.get("/go/anything")  # no program yet
    assert response.status_code == 503
    assert_common_headers(response)
    assert "script-src" in directives(response)


def test_production_adds_hsts(database_url, db):
    app = create_app(
        ProductionConfig,
        SECRET_KEY="x" * 40,
        SQLALCHEMY_DATABASE_URI=database_url,
        PORTAL_BASE_URL="https://partners.example",
        HSTS_MAX_AGE=31536000,
    )
    response = app.test_client().get("/login", headers={"Host": "partners.example"})
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert directives(response)["connect-src"] == "'self' wss://partners.example"


@pytest.fixture
def reporting_app(database_url, db):
    return create_app(
        TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, CSP_REPORTS=True, WTF_CSRF_ENABLED=True
    )


def test_development_reports_violations_to_a_log_endpoint(reporting_app, caplog):
    client = reporting_app.test_client()
    response = client.get("/login")
    assert directives(response)["report-uri"] == "/csp-report"
    assert directives(response)["report-to"] == "csp"
    assert response.headers["Reporting-Endpoints"] == 'csp="/csp-report"'

    legacy = {
        "csp-report": {
            "document-uri": "http://portal.test/login",
            "violated-directive": "script-src-elem",
            "blocked-uri": "inline",
        }
    }
    modern = [
        {"type": "csp-violation", "body": {"effectiveDirective": "style-src-attr", "blockedURL": "inline"}}
    ]
    with caplog.at_level(logging.WARNING, logger=reporting_app.logger.name):
        first = client.post("/csp-report", data=json.dumps(legacy), content_type="application/csp-report")
        second = client.post("/csp-report", data=json.dumps(modern), content_type="application/reports+json")
        junk = client.post("/csp-report", data=b"\x00not json", content_type="application/csp-report")
    assert (first.status_code, second.status_code, junk.status_code) == (204, 204, 204)
    logged = [r.getMessage() for r in caplog.records if "CSP violation" in r.getMessage()]
    assert "CSP violation: script-src-elem blocked inline on http://portal.test/login (None:None)" in logged
    assert any("style-src-attr blocked inline" in line for line in logged)
    assert len(logged) == 2


def test_the_report_endpoint_exists_only_where_reports_are_on(client, db, program):
    assert client.post("/csp-report", json={}).status_code in (404, 405)


def test_a_responses_own_headers_are_kept_and_the_rest_added(app):
    """The hook adds each header the response lacks, in one pass; a response with its own policy
    (a stored file's sandbox) keeps it and gets no reporting endpoint for ours."""
    from flask import Response

    from portal.headers import set_security_headers

    with app.test_request_context("/"):
        own = Response(
            "x", headers={"Content-Security-Policy": "default-src 'none'", "X-Frame-Options": "SAMEORIGIN"}
        )
        set_security_headers(own)
        assert own.headers.getlist("Content-Security-Policy") == ["default-src 'none'"]
        assert own.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
        assert own.headers["X-Content-Type-Options"] == "nosniff"
        assert "Reporting-Endpoints" not in own.headers
        plain = set_security_headers(Response("x"))
        assert plain.headers.getlist("X-Frame-Options") == ["DENY"]
        assert "'nonce-" not in plain.headers["Content-Security-Policy"]


def test_the_headers_follow_each_apps_settings(database_url, db):
    """The nonce-less headers are kept per settings, so two apps (or a changed setting) never
    share another's policy or HSTS."""

    def production(**settings):
        return create_app(
            ProductionConfig,
            SECRET_KEY="x" * 40,
            SQLALCHEMY_DATABASE_URI=database_url,
            PORTAL_BASE_URL="https://partners.example",
            **settings,
        )

    long, short, off = (
        production(HSTS_MAX_AGE=600),
        production(HSTS_MAX_AGE=60),
        production(HSTS_ENABLED=False),
    )
    for _ in range(2):  # the second time from what was kept
        answers = [
            app.test_client().get("/healthz", headers={"Host": "partners.example"})
            for app in (long, short, off)
        ]
        hsts = [answer.headers.get("Strict-Transport-Security") for answer in answers]
        assert hsts == ["max-age=600; includeSubDomains", "max-age=60; includeSubDomains", None]
    short.config["PORTAL_BASE_URL"] = "https://elsewhere.example"
    moved = short.test_client().get("/healthz", headers={"Host": "elsewhere.example"})
    assert directives(moved)["connect-src"] == "'self' wss://elsewhere.example"
