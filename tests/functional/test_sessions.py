"""Sessions that end: signing out, a new password, deactivation and "sign out everywhere"
end every session and remember-me cookie of the user; sign-in starts a fresh session."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from portal.models import AuditEvent, PartnerStatus, Role
from portal.services import accounts
from tests.factories import PASSWORD, PartnerFactory, UserFactory

NEW_PASSWORD = "granite-heron-orchard-42"


@pytest.fixture
def browser(app, client):
    """Another browser (its own cookies) beside ``client``."""

    def make():
        return app.test_client()

    return make


def sign_in(client, email: str, password: str = PASSWORD, remember: bool = False):
    data = {"email": email, "password": password}
    if remember:
        data["remember"] = "y"
    response = client.post("/login", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)[:400]
    return response


def signed_in(client, page: str) -> bool:
    response = client.get(page)
    if response.status_code == 302 and response.headers["Location"].startswith("/login"):
        return False
    assert response.status_code == 200, response.status_code
    return True


@pytest.fixture
def partner_user(db, program):
    user = PartnerFactory(status=PartnerStatus.APPROVED).user
    db.session.commit()
    return user


def test_signing_out_ends_the_sessions_in_other_browsers(client, browser, partner_user):
    other = browser()
    sign_in(client, partner_user.email)
    sign_in(other, partner_user.email)
    assert signed_in(other, "/partner/")

    response = client.post("/logout")
    assert response.headers["Location"] == "/login"

    assert not signed_in(client, "/partner/")
    assert not signed_in(other, "/partner/")


def test_an_old_remember_me_cookie_stops_working_after_sign_out(app, client, browser, partner_user):
    sign_in(client, partner_user.email, remember=True)
    remember = client.get_cookie("remember_token", domain="portal.test")
    assert remember is not None

    # The cookie alone (a browser whose session cookie expired) signs in ...
    returning = browser()
    returning.set_cookie("remember_token", remember.value, domain=remember.domain)
    assert signed_in(returning, "/partner/")

    client.post("/logout")
    # ... and signing out deletes it in this browser ...
    assert client.get_cookie("remember_token", domain="portal.test") is None
    # ... and makes a copy of it worthless everywhere else.
    stolen = browser()
    stolen.set_cookie("remember_token", remember.value, domain=remember.domain)
    assert not signed_in(stolen, "/partner/")


def test_a_new_password_signs_out_other_browsers_and_keeps_this_one(db, client, browser, partner_user):
    other = browser()
    sign_in(client, partner_user.email)
    sign_in(other, partner_user.email, remember=True)
    remember = other.get_cookie("remember_token", domain="portal.test")

    response = client.post(
        "/account/password",
        data={"current_password": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"

    assert signed_in(client, "/partner/")
    assert not signed_in(other, "/partner/")
    stolen = browser()
    stolen.set_cookie("remember_token", remember.value, domain=remember.domain)
    assert not signed_in(stolen, "/partner/")
    assert db.session.scalar(
        sa.select(sa.func.count()).where(
            AuditEvent.action == "user.password_changed", AuditEvent.subject_id == partner_user.id
        )
    )
    # The new password is the one that works now.
    fresh = browser()
    assert fresh.post("/login", data={"email": partner_user.email, "password": PASSWORD}).status_code == 422
    sign_in(fresh, partner_user.email, NEW_PASSWORD)


def test_a_new_password_needs_the_current_one(client, partner_user):
    sign_in(client, partner_user.email)
    response = client.post(
        "/account/password",
        data={"current_password": "not-my-password", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert response.status_code == 422
    assert "That is not your current password." in response.get_data(as_text=True)
    assert signed_in(client, "/partner/")


def test_a_password_reset_ends_every_session(db, client, browser, partner_user):
    sign_in(client, partner_user.email, remember=True)
    token = accounts.make_password_reset_token(partner_user)
    db.session.commit()

    stranger = browser()
    response = stranger.post(
        f"/password/reset/{token}", data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    )
    assert response.status_code == 302

    assert not signed_in(client, "/partner/")


def test_sign_out_everywhere_ends_every_session_this_one_too(db, client, browser, partner_user):
    other = browser()
    sign_in(client, partner_user.email)
    sign_in(other, partner_user.email, remember=True)
    page = client.get("/account").get_data(as_text=True)
    assert "Sign out everywhere" in page

    response = client.post("/account/sign-out-everywhere")
    assert response.headers["Location"] == "/login"

    assert not signed_in(client, "/partner/")
    assert not signed_in(other, "/partner/")
    assert db.session.scalar(
        sa.select(sa.func.count()).where(
            AuditEvent.action == "user.signed_out_everywhere", AuditEvent.subject_id == partner_user.id
        )
    )


def test_deactivating_a_team_member_ends_their_sessions(db, client, browser, program):
    admin = UserFactory(role=Role.ADMIN)
    manager = UserFactory(role=Role.MANAGER)
    db.session.commit()
    theirs = browser()
    sign_in(theirs, manager.email, remember=True)
    remember = theirs.get_cookie("remember_token", domain="portal.test")
    assert signed_in(theirs, "/admin/")

    sign_in(client, admin.email)
    response = client.post(f"/admin/team/{manager.id}/deactivate")
    assert response.status_code == 302

    assert not signed_in(theirs, "/admin/")
    stolen = browser()
    stolen.set_cookie("remember_token", remember.value, domain=remember.domain)
    assert not signed_in(stolen, "/admin/")


def test_switching_off_a_partners_sign_in_ends_their_sessions(db, client, browser, partner_user):
    admin = UserFactory(role=Role.ADMIN)
    db.session.commit()
    theirs = browser()
    sign_in(theirs, partner_user.email, remember=True)
    remember = theirs.get_cookie("remember_token", domain="portal.test")
    assert signed_in(theirs, "/partner/")
    partner_id = partner_user.partner.id

    sign_in(client, admin.email)
    assert "allowed" in client.get(f"/admin/partners/{partner_id}").get_data(as_text=True)
    response = client.post(f"/admin/partners/{partner_id}/access/deactivate")
    assert response.headers["Location"] == f"/admin/partners/{partner_id}"
    assert "switched off" in client.get(f"/admin/partners/{partner_id}").get_data(as_text=True)

    assert not signed_in(theirs, "/partner/")
    stolen = browser()
    stolen.set_cookie("remember_token", remember.value, domain=remember.domain)
    assert not signed_in(stolen, "/partner/")
    assert (
        browser().post("/login", data={"email": partner_user.email, "password": PASSWORD}).status_code == 422
    )

    client.post(f"/admin/partners/{partner_id}/access/activate")
    sign_in(browser(), partner_user.email)
    assert (
        events_of(db, partner_user, "user.deactivated") == events_of(db, partner_user, "user.activated") == 1
    )


def test_only_admins_switch_a_partners_sign_in(db, client, partner_user):
    manager = UserFactory(role=Role.MANAGER)
    db.session.commit()
    sign_in(client, manager.email)
    page = client.get(f"/admin/partners/{partner_user.partner.id}").get_data(as_text=True)
    assert "Switch sign-in off" not in page
    assert client.post(f"/admin/partners/{partner_user.partner.id}/access/deactivate").status_code == 403


def events_of(db, user, action: str) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).where(AuditEvent.action == action, AuditEvent.subject_id == user.id)
    )


def test_sign_in_starts_a_fresh_session_with_a_new_csrf_token(client, partner_user):
    client.get("/login")
    with client.session_transaction() as session:
        before = session["csrf_token"]
        session["planted"] = "by someone who handed over this session cookie"

    sign_in(client, partner_user.email)

    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.get("csrf_token") != before
    client.get("/account")  # a page with forms makes the new token
    with client.session_transaction() as session:
        after = session["csrf_token"]
        user_id = session["_user_id"]
    assert after != before
    assert user_id == partner_user.session_token

    # Signing out forgets it again.
    client.post("/logout")
    with client.session_transaction() as session:
        assert session.get("csrf_token") != after
        assert "_user_id" not in session


def test_signing_out_twice_or_anonymously_is_harmless(client, partner_user):
    assert client.post("/logout").headers["Location"] == "/login"
    sign_in(client, partner_user.email)
    client.post("/logout")
    assert client.post("/logout").headers["Location"] == "/login"
    sign_in(client, partner_user.email)  # the password still works after signing out
    assert signed_in(client, "/partner/")
