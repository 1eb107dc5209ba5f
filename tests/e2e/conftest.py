"""End-to-end harness: a live portal on 127.0.0.1 and Debian's Chromium driven by Playwright.

One server and one browser serve the whole run; every test gets fresh browser
contexts (its own cookies), so tests share the database but never a session.
Tests therefore create their own applicants with unique e-mails and never
change the demo data that other tests look at.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, got_request_exception
from playwright.sync_api import Page, expect, sync_playwright
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from config import TestingConfig
from portal import create_app
from portal.demo import seed_demo
from portal.extensions import db, socketio
from portal.models import Partner, PartnerStatus, User
from portal.services import accounts
from tests.conftest import CHROMIUM, migrate_database
from tests.e2e.support import (
    ACTION_TIMEOUT_MS,
    APPLICANT_PASSWORD,
    CHROMIUM_ARGS,
    DEMO_EMAILS,
    DESKTOP,
    EXPECT_TIMEOUT_MS,
    MOBILE,
    sign_in,
    unique_email,
)

# --- the live server --------------------------------------------------------------


class _QuietRequestHandler(WSGIRequestHandler):
    """No access log per request; errors are still logged (and collected below)."""

    def log_request(self, code="-", size="-"):
        pass


@dataclass
class LiveServer:
    url: str
    app: Flask
    server: BaseWSGIServer
    socketio_server: object
    errors: list[BaseException] = field(default_factory=list)

    def __call__(self, path: str = "/") -> str:
        return self.url + path

    def partner_id(self, email: str) -> int:
        with self.app.app_context():
            return db.session.scalar(
                sa.select(Partner.id).join(Partner.user).where(User.email == email.lower())
            )

    def partner_status(self, partner_id: int) -> tuple[str, str | None]:
        with self.app.app_context():
            partner = db.session.get(Partner, partner_id)
            return partner.status, partner.status_reason


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The portal on a free port of 127.0.0.1, with real websockets, CSRF on, demo data seeded."""
    path = tmp_path_factory.mktemp("e2e-db") / "portal-e2e.db"
    url = f"sqlite:///{path}"
    migrate_database(url)
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=url,
        STORAGE_LOCAL_DIR=str(tmp_path_factory.mktemp("e2e-media")),
        WTF_CSRF_ENABLED=True,
        SERVER_NAME=None,
        # Run as production does: errors become error pages, not test-client exceptions.
        TESTING=False,
    )
    # Flask-SocketIO keeps one server per extension instance; remember the one this app got.
    socketio_server = socketio.server
    with app.app_context():
        seed_demo()
        db.session.commit()

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietRequestHandler)
    live = LiveServer(
        url=f"http://127.0.0.1:{server.server_port}",
        app=app,
        server=server,
        socketio_server=socketio_server,
    )
    app.config["PORTAL_BASE_URL"] = live.url

    def record_error(sender, exception, **extra):
        live.errors.append(exception)

    got_request_exception.connect(record_error, app, weak=False)
    thread = threading.Thread(target=server.serve_forever, name="e2e-live-server", daemon=True)
    thread.start()
    try:
        yield live
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        socketio_server.eio.shutdown()
        got_request_exception.disconnect(record_error, app)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(autouse=True)
def _live_server_health(live_server: LiveServer) -> Iterator[None]:
    """Point Socket.IO at the live app for the test, and fail on any server-side exception."""
    # Every create_app() re-initialises the one global SocketIO; a test elsewhere in
    # the run may have built an app since, so the live server's must be current.
    previous = socketio.server
    socketio.server = live_server.socketio_server
    live_server.errors.clear()
    yield
    socketio.server = previous
    if live_server.errors:
        errors = ", ".join(repr(e) for e in live_server.errors)
        live_server.errors.clear()
        pytest.fail(f"the live server raised: {errors}")


# --- data the tests make -----------------------------------------------------------


@pytest.fixture
def make_applicant(live_server: LiveServer) -> Callable[..., tuple[int, str]]:
    """Create a partner application through the service, as /apply would; returns (id, e-mail)."""

    def make(label: str = "applicant", password: str = APPLICANT_PASSWORD) -> tuple[int, str]:
        email = unique_email(label)
        with live_server.app.app_context():
            partner = accounts.apply_as_partner(
                accounts.Application(
                    name=f"E2E {label.title()}",
                    email=email,
                    password=password,
                    country="NL",
                    channels=["seo"],
                    promotion_description="Weekly canoe trip reports read by 8k paddlers.",
                    website="https://paddle-notes.example",
                )
            )
            db.session.commit()
            return partner.id, email

    return make


@pytest.fixture(scope="session")
def demo_applicant_id(live_server: LiveServer) -> int:
    """A demo partner waiting for review; the layout tests look at it and nobody changes it."""
    with live_server.app.app_context():
        return db.session.scalar(
            sa.select(Partner.id).where(Partner.status == PartnerStatus.APPLIED).order_by(Partner.id).limit(1)
        )


# --- the browser -------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright_instance():
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance, live_server: LiveServer):
    # Depends on live_server so that the browser (and its websockets) closes first.
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def role_states(browser, live_server: LiveServer) -> Callable[[str], dict]:
    """Signed-in cookies per demo role, made once through the login form and reused."""
    cache: dict[str, dict] = {}

    def state_for(role: str) -> dict:
        if role not in cache:
            context = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
            try:
                sign_in(context.new_page(), DEMO_EMAILS[role])
                cache[role] = context.storage_state()
            finally:
                context.close()
        return cache[role]

    return state_for


@pytest.fixture
def new_context(browser, live_server: LiveServer, role_states):
    """Open a fresh browser context: ``new_context(role=None, viewport=DESKTOP)``."""
    contexts = []

    def open_context(role: str | None = None, viewport: dict | None = None):
        context = browser.new_context(
            base_url=live_server.url,
            viewport=viewport or DESKTOP,
            storage_state=role_states(role) if role else None,
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context) -> Page:
    """An anonymous page at desktop size, in its own context."""
    return new_context().new_page()


@pytest.fixture
def mobile_page(new_context) -> Callable[[str | None], Page]:
    """``mobile_page(role)``: a page 375 × 740 px wide, signed in as ``role`` (or anonymous)."""

    def open_page(role: str | None = None) -> Page:
        return new_context(role=role, viewport=MOBILE).new_page()

    return open_page


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where page screenshots go: $PORTAL_E2E_SCREENSHOTS to keep them, else a pytest tmp dir."""
    chosen = os.environ.get("PORTAL_E2E_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("e2e-screenshots")
