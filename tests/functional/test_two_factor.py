"""Two-factor sign-in (TOTP): enrolment from the account page, the second sign-in step,
recovery codes, replay and guessing, the program's requirement for the team."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
import sqlalchemy as sa
import time_machine
from werkzeug.datastructures import MultiDict

from config import TestingConfig
from portal import create_app
from portal.database import begin_write
from portal.extensions import db as _db
from portal.models import AuditEvent, PartnerStatus, RecoveryCode, Role, User
from portal.services import two_factor
from tests.factories import PASSWORD, PartnerFactory, UserFactory
from tests.functional.test_edit_roundtrip import forms_in

NOW = datetime(2030, 5, 6, 10, 0, 5, tzinfo=UTC)  # early in a 30-second step


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def browser(app, client):
    return app.test_client


def events(db, user, action: str) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).where(AuditEvent.action == action, AuditEvent.subject_id == user.id)
    )


def code_at(secret: str, instant: datetime) -> str:
    return pyotp.TOTP(secret).at(instant)


def enrolled(db, user) -> list[str]:
    """Switch two-factor sign-in on for ``user`` as the pages do; returns the recovery codes."""
    secret = two_factor.start_enrolment(user)
    codes = two_factor.confirm_enrolment(user, code_at(secret, NOW - timedelta(seconds=30)), NOW)
    db.session.commit()
    return codes


def password_step(client, email: str, **extra):
    response = client.post("/login", data={"email": email, "password": PASSWORD, **extra})
    assert response.status_code == 302
    return response


@pytest.fixture
def admin(db, program, clock):
    user = UserFactory(role=Role.ADMIN)
    db.session.commit()
    return user


# --- enrolment ----------------------------------------------------------------------


def test_an_admin_enrols_from_the_account_page(db, client, admin):
    password_step(client, admin.email)
    page = client.get("/account").get_data(as_text=True)
    assert "Off" in page and "you sign in with your password only" in page

    response = client.post("/account/two-factor/start")
    assert response.headers["Location"] == "/account/two-factor/setup"
    page = client.get("/account/two-factor/setup").get_data(as_text=True)
    assert "<svg" in page and "not on yet" in page
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', page).group(1)
    assert secret == admin.totp_secret
    # The secret lives on the server: the session cookie does not carry it.
    with client.session_transaction() as session:
        assert secret not in repr(dict(session))

    wrong = client.post("/account/two-factor/setup", data={"code": "000000"})
    assert wrong.status_code == 422
    assert "That code does not match" in wrong.get_data(as_text=True)
    assert not admin.two_factor_enabled

    response = client.post("/account/two-factor/setup", data={"code": code_at(secret, NOW)})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", page)
    assert len(codes) == 10 == len(set(codes))
    assert "this page shows them only this once" in page
    db.session.refresh(admin)
    assert admin.two_factor_enabled
    stored = db.session.scalars(
        sa.select(RecoveryCode.code_hash).where(RecoveryCode.user_id == admin.id)
    ).all()
    assert len(stored) == 10 and not set(codes) & set(stored)  # hashes only
    assert events(db, admin, "user.2fa_enabled") == 1
    page = client.get("/account").get_data(as_text=True)
    assert "On" in page and "10 unused recovery codes left." in page
    # Once on, the set-up page is closed.
    assert client.get("/account/two-factor/setup").headers["Location"] == "/account"


def test_partners_may_enrol_too(db, client, program, clock):
    partner = PartnerFactory(status=PartnerStatus.APPROVED).user
    db.session.commit()
    password_step(client, partner.email)
    client.post("/account/two-factor/start")
    page = client.get("/account/two-factor/setup").get_data(as_text=True)
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', page).group(1)
    assert client.post("/account/two-factor/setup", data={"code": code_at(secret, NOW)}).status_code == 200
    assert partner.two_factor_enabled


# --- the second step of signing in ----------------------------------------------------


def test_sign_in_asks_for_a_code_and_signs_in_only_when_it_passes(db, client, admin):
    enrolled(db, admin)
    response = password_step(client, admin.email, remember="y")
    assert response.headers["Location"] == "/login/code"
    # Half-way in is not signed in: no console, no remember-me cookie yet.
    assert client.get("/admin/").headers["Location"].startswith("/login")
    assert client.get_cookie("remember_token", domain="portal.test") is None
    page = client.get("/login/code").get_data(as_text=True)
    assert "You are not signed in yet" in page

    response = client.post("/login/code", data={"code": code_at(admin.totp_secret, NOW)})
    assert response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get_cookie("remember_token", domain="portal.test") is not None
    assert events(db, admin, "user.2fa_succeeded") == 1


def test_the_next_page_survives_the_second_step(db, client, admin):
    enrolled(db, admin)
    client.post("/login?next=/admin/settings", data={"email": admin.email, "password": PASSWORD})
    response = client.post("/login/code", data={"code": code_at(admin.totp_secret, NOW)})
    assert response.headers["Location"] == "/admin/settings"


def test_a_used_code_cannot_be_used_again_within_its_window(db, client, browser, admin, clock):
    enrolled(db, admin)
    code = code_at(admin.totp_secret, NOW)
    password_step(client, admin.email)
    assert client.post("/login/code", data={"code": code}).headers["Location"] == "/admin/"

    # Someone who watched it being typed, ten seconds later:
    clock.move_to(NOW + timedelta(seconds=10))
    other = browser()
    password_step(other, admin.email)
    response = other.post("/login/code", data={"code": code})
    assert response.status_code == 422
    assert "That code is not right" in response.get_data(as_text=True)
    assert events(db, admin, "user.2fa_failed") == 1
    # The next code (the next 30-second step) works.
    clock.move_to(NOW + timedelta(seconds=30))
    later = other.post("/login/code", data={"code": code_at(admin.totp_secret, NOW + timedelta(seconds=30))})
    assert later.headers["Location"] == "/admin/"


def test_a_code_from_the_step_before_still_counts_but_not_older(db, client, admin):
    enrolled(db, admin)  # used the step before NOW - 30 s
    password_step(client, admin.email)
    too_old = client.post(
        "/login/code", data={"code": code_at(admin.totp_secret, NOW - timedelta(seconds=90))}
    )
    assert too_old.status_code == 422
    drifted = client.post(
        "/login/code", data={"code": code_at(admin.totp_secret, NOW + timedelta(seconds=30))}
    )
    assert drifted.headers["Location"] == "/admin/"


def test_a_recovery_code_signs_in_once(db, client, browser, admin):
    codes = enrolled(db, admin)
    password_step(client, admin.email)
    response = client.post("/login/code", data={"code": codes[3].upper().replace("-", " ")})
    assert response.headers["Location"] == "/admin/"
    page = client.get("/admin/").get_data(as_text=True)
    assert "You signed in with a recovery code. 9 recovery codes are left." in page
    assert events(db, admin, "user.2fa_recovery_code_used") == 1

    other = browser()
    password_step(other, admin.email)
    again = other.post("/login/code", data={"code": codes[3]})
    assert again.status_code == 422
    assert two_factor.recovery_codes_left(admin) == 9


def test_wrong_codes_are_counted_and_pause_sign_in(db, client, admin, clock):
    enrolled(db, admin)
    password_step(client, admin.email)
    first = client.post("/login/code", data={"code": "123456"})
    assert first.status_code == 422
    assert "That code is not right. 4 more tries before sign-in pauses." in first.get_data(as_text=True)
    for _ in range(3):
        assert client.post("/login/code", data={"code": "not-a-recovery-code"}).status_code == 422
    last = client.post("/login/code", data={"code": "654321"})
    assert last.headers["Location"] == "/login"
    assert "Too many wrong codes" in client.get("/login").get_data(as_text=True)
    assert events(db, admin, "user.2fa_failed") == 5

    # Even the right password and code wait out the pause (per account, from any address) ...
    password_step(client, admin.email)
    paused = client.post("/login/code", data={"code": code_at(admin.totp_secret, NOW)})
    assert paused.headers["Location"] == "/login"
    # ... and work after it.
    later = NOW + two_factor.LOCK_WINDOW + timedelta(seconds=1)
    clock.move_to(later)
    password_step(client, admin.email)
    response = client.post("/login/code", data={"code": code_at(admin.totp_secret, later)})
    assert response.headers["Location"] == "/admin/"


def test_the_second_step_expires(db, client, admin, clock):
    enrolled(db, admin)
    password_step(client, admin.email)
    clock.move_to(NOW + timedelta(minutes=6))
    response = client.get("/login/code")
    assert response.headers["Location"] == "/login"


def test_the_second_step_ends_when_every_session_does(db, client, admin):
    enrolled(db, admin)
    password_step(client, admin.email)
    admin.rotate_session_token()  # e.g. a password reset meanwhile
    db.session.commit()
    assert client.get("/login/code").headers["Location"] == "/login"


def test_the_code_page_is_rate_limited(database_url, db):
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        RATELIMIT_ENABLED=True,
        LOGIN_RATE_LIMIT="3 per minute",
    )
    client = app.test_client()
    codes = [client.post("/login/code", data={"code": "123456"}).status_code for _ in range(4)]
    assert codes == [302, 302, 302, 429]


# --- switching off, new recovery codes ---------------------------------------------------


def test_switching_off_needs_the_password_and_a_code(db, client, admin, clock):
    enrolled(db, admin)
    password_step(client, admin.email)
    client.post("/login/code", data={"code": code_at(admin.totp_secret, NOW)})

    later = NOW + timedelta(seconds=30)
    clock.move_to(later)
    wrong = client.post("/account/two-factor/disable", data={"password": "nope", "code": "123456"})
    assert wrong.status_code == 422
    assert "That is not your current password." in wrong.get_data(as_text=True)
    wrong_code = client.post("/account/two-factor/disable", data={"password": PASSWORD, "code": "123456"})
    assert wrong_code.status_code == 422
    assert "That code does not match." in wrong_code.get_data(as_text=True)
    assert events(db, admin, "user.2fa_failed") == 1
    assert admin.two_factor_enabled
    response = client.post(
        "/account/two-factor/disable", data={"password": PASSWORD, "code": code_at(admin.totp_secret, later)}
    )
    assert response.headers["Location"] == "/account"
    db.session.refresh(admin)
    assert not admin.two_factor_enabled and admin.totp_secret is None
    assert two_factor.recovery_codes_left(admin) == 0
    assert events(db, admin, "user.2fa_disabled") == 1
    client.post("/logout")
    assert password_step(client, admin.email).headers["Location"] == "/admin/"


def test_new_recovery_codes_replace_the_old_ones(db, client, admin):
    old = enrolled(db, admin)
    password_step(client, admin.email)
    client.post("/login/code", data={"code": old[0]})
    assert client.post("/account/two-factor/recovery-codes", data={"code": "111111"}).status_code == 422
    assert events(db, admin, "user.2fa_failed") == 1  # counted like a wrong code at sign-in
    response = client.post(
        "/account/two-factor/recovery-codes", data={"code": code_at(admin.totp_secret, NOW)}
    )
    new = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", response.get_data(as_text=True))
    assert len(new) == 10
    assert two_factor.recovery_codes_left(admin) == 10
    assert two_factor.verify(admin, old[1], NOW).method is None
    assert two_factor.verify(admin, new[1], NOW).method == "recovery"


# --- the program's requirement for the team ---------------------------------------------


def test_the_team_requirement_sends_managers_to_enrol_before_the_console(db, client, program, clock):
    program.require_team_2fa = True
    manager = UserFactory(role=Role.MANAGER)
    partner = PartnerFactory(status=PartnerStatus.APPROVED).user
    db.session.commit()

    response = password_step(client, manager.email)
    assert response.headers["Location"] == "/account"
    page = client.get("/account").get_data(as_text=True)
    assert "Your program requires two-factor sign-in for the team" in page
    assert client.get("/admin/").headers["Location"] == "/account"
    assert client.get("/admin/partners").headers["Location"] == "/account"

    client.post("/account/two-factor/start")
    assert (
        client.post("/account/two-factor/setup", data={"code": code_at(manager.totp_secret, NOW)}).status_code
        == 200
    )
    assert client.get("/admin/").status_code == 200

    # Partners are not part of the team: it stays optional for them.
    other = client.application.test_client()
    assert password_step(other, partner.email).headers["Location"] == "/partner/"


def test_the_settings_page_switches_the_team_requirement(db, client, admin, program):
    password_step(client, admin.email)
    page = client.get("/admin/settings").get_data(as_text=True)
    assert "Two-factor sign-in required for the team" in page
    form = next(form for form in forms_in(page) if form.action in ("", "/admin/settings"))
    data = [(name, value) for name, value in form.fields if name != "require_team_2fa"]
    response = client.post("/admin/settings", data=MultiDict([*data, ("require_team_2fa", "y")]))
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    db.session.refresh(program)
    assert program.require_team_2fa
    # The admin who switched it on is sent to enrol before going on.
    assert client.get("/admin/").headers["Location"] == "/account"


# --- the same code at once, on a real database ---------------------------------------------


@pytest.fixture
def committed_user(database_url):
    """A user with two-factor sign-in on, committed for real (threads use their own connections)."""
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context(), time_machine.travel(NOW, tick=False):
        user = UserFactory(role=Role.ADMIN)
        _db.session.flush()
        codes = enrolled(_db, user)
        user_id, secret = user.id, user.totp_secret
    yield app, user_id, secret, codes
    with app.app_context():
        _db.session.execute(sa.delete(AuditEvent).where(AuditEvent.subject_id == user_id))
        _db.session.execute(sa.delete(User).where(User.id == user_id))
        _db.session.commit()
        _db.engine.dispose()


def _verify_together(app, user_id: int, code: str, parallel: int = 6) -> list[str | None]:
    """``parallel`` sign-ins with ``code`` at once, each on its own thread and connection."""
    barrier = threading.Barrier(parallel)
    results: list[str | None] = []
    lock = threading.Lock()

    def worker():
        barrier.wait(timeout=10)
        with app.app_context():
            begin_write(_db.session())  # as the view does
            user = _db.session.get(User, user_id)
            method = two_factor.verify(user, code).method
            _db.session.commit()
        with lock:
            results.append(method)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    with time_machine.travel(NOW + timedelta(seconds=1), tick=False):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    return results


@pytest.mark.postgres
def test_one_code_sent_at_once_from_many_places_signs_in_once(committed_user, database_backend):
    app, user_id, secret, _codes = committed_user
    results = _verify_together(app, user_id, code_at(secret, NOW))
    assert Counter(results) == {"totp": 1, None: 5}


@pytest.mark.postgres
def test_one_recovery_code_sent_at_once_signs_in_once(committed_user, database_backend):
    app, user_id, _secret, codes = committed_user
    results = _verify_together(app, user_id, codes[0])
    assert Counter(results) == {"recovery": 1, None: 5}


def test_the_command_line_resets_two_factor_for_a_lost_phone(db, runner, client, admin):
    enrolled(db, admin)
    password_step(client, admin.email)
    client.post("/login/code", data={"code": code_at(admin.totp_secret, NOW)})
    assert client.get("/admin/").status_code == 200

    result = runner.invoke(args=["portal", "reset-two-factor", admin.email.upper()])
    assert result.exit_code == 0, result.output
    assert "Two-factor sign-in is off" in result.output
    db.session.refresh(admin)
    assert not admin.two_factor_enabled and two_factor.recovery_codes_left(admin) == 0
    assert events(db, admin, "user.2fa_reset") == 1
    assert client.get("/admin/").headers["Location"].startswith("/login")  # signed out everywhere
    assert password_step(client, admin.email).headers["Location"] == "/admin/"

    missing = runner.invoke(args=["portal", "reset-two-factor", "nobody@example.org"])
    assert missing.exit_code != 0 and "No account has the e-mail" in missing.output
