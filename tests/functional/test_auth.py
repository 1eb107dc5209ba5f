"""Public pages: sign-in, the application form, password reset."""

import re

import flask
import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.models import Partner, PartnerStatus, Role, User
from portal.services import accounts, delivery
from tests.factories import PASSWORD, UserFactory

GOOD_APPLICATION = {
    "name": "Rae Rivers",
    "email": "rae@example.org",
    "password": "mountain river sunrise",
    "confirm": "mountain river sunrise",
    "website": "https://rae.example",
    "social_profiles": "",
    "channels": ["seo", "video"],
    "promotion_description": "Trail running stories and gear tests for 20k readers.",
    "country": "DE",
}


def count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_apply_then_see_status(client, db, program):
    response = client.post("/apply", data=GOOD_APPLICATION)
    assert response.status_code == 200
    assert "Your application is in" in response.get_data(as_text=True)
    partner = db.session.scalars(sa.select(Partner)).one()
    assert partner.status == PartnerStatus.APPLIED
    assert partner.channels == ["seo", "video"]
    # not signed in by the form (a known address gets the same answer): sign in to follow it
    assert client.get("/status").status_code == 302
    signed_in = client.post(
        "/login", data={"email": GOOD_APPLICATION["email"], "password": GOOD_APPLICATION["password"]}
    )
    assert signed_in.headers["Location"] == "/status"
    page = client.get("/status").get_data(as_text=True)
    assert "waiting for review" in page
    # not yet allowed into the portal
    assert client.get("/partner/").headers["Location"] == "/status"


@pytest.mark.parametrize(
    ("overrides", "field_error"),
    [
        ({"email": "not-an-email"}, "Enter a valid e-mail address."),
        ({"password": "short", "confirm": "short"}, "Use at least 10 characters."),
        ({"password": "password123", "confirm": "password123"}, "too easy to guess"),
        ({"confirm": "something else entirely"}, "The two passwords differ."),
        ({"name": "x" * 121}, "At most 120 characters."),
        ({"name": ""}, "Tell us who you are."),
        ({"promotion_description": "too short"}, "Between 20 and 2000 characters."),
        ({"promotion_description": "y" * 5000}, "Between 20 and 2000 characters."),
        ({"website": "not a url"}, "Enter a full address"),
        ({"website": "", "social_profiles": ""}, "Give a website or at least one social profile."),
        ({"channels": []}, "Pick at least one channel."),
        ({"channels": ["telepathy"]}, "not a valid choice"),
        ({"country": "XX"}, "Not a valid choice"),
        ({"country": ""}, "Choose your country."),
    ],
)
def test_apply_bad_input_shows_errors_keeps_input_saves_nothing(client, db, program, overrides, field_error):
    data = {**GOOD_APPLICATION, **overrides}
    response = client.post("/apply", data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_error.lower() in page.lower()
    assert 'aria-invalid="true"' in page
    # what was typed stays (except passwords, which browsers should never get back)
    if overrides.get("name", "ok") and len(data["name"]) <= 120:
        assert f'value="{data["name"]}"' in page
    assert "mountain river sunrise" not in page
    assert count(db, User) == 0
    assert count(db, Partner) == 0


def test_apply_with_a_taken_email_answers_as_for_a_new_one(client, db, program):
    UserFactory(email="rae@example.org")
    db.session.commit()
    response = client.post("/apply", data={**GOOD_APPLICATION, "email": "RAE@example.org"})
    assert response.status_code == 200
    assert "Your application is in" in response.get_data(as_text=True)
    assert "already exists" not in response.get_data(as_text=True)
    assert count(db, Partner) == 0


def test_login_and_logout(client, db, program):
    UserFactory(email="ops@example.org", role=Role.MANAGER)
    db.session.commit()
    response = client.post("/login", data={"email": "ops@example.org", "password": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/admin/").status_code == 302


def test_wrong_password_keeps_the_email(client, db, program):
    UserFactory(email="ops@example.org")
    db.session.commit()
    response = client.post("/login", data={"email": "ops@example.org", "password": "nope nope nope"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "do not match an active account" in page
    assert 'value="ops@example.org"' in page


def test_login_follows_only_local_next(client, db, program):
    UserFactory(email="ops@example.org")
    db.session.commit()
    for target, expected in [
        ("/admin/partners", "/admin/partners"),
        ("https://evil.example/", "/admin/"),
        ("//evil.example/", "/admin/"),
        ("/\\evil.example", "/admin/"),
    ]:
        client.post("/logout")
        response = client.post(
            "/login", query_string={"next": target}, data={"email": "ops@example.org", "password": PASSWORD}
        )
        assert response.headers["Location"] == expected


def test_deactivated_user_is_signed_out(client, db, login_as):
    user = login_as(Role.MANAGER)
    assert client.get("/admin/").status_code == 200
    user.active = False
    db.session.commit()
    assert client.get("/admin/").status_code == 302


def test_suspended_partner_sees_the_portal_with_a_notice(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    user.partner.status = PartnerStatus.SUSPENDED
    user.partner.status_reason = "Brand bidding"
    db.session.commit()
    page = client.get("/partner/").get_data(as_text=True)
    assert "Your account is suspended." in page
    assert "Brand bidding" in page


def test_missing_csrf_token_is_refused_and_saves_nothing(database_url, db):
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, WTF_CSRF_ENABLED=True)
    client = app.test_client()
    with app.app_context():
        response = client.post("/apply", data=GOOD_APPLICATION)
        assert response.status_code == 400
        assert "Form expired" in response.get_data(as_text=True)
        # with the token from the page, the same post goes through
        page = client.get("/apply").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        assert token
    assert count(db, User) == 0


def test_login_is_rate_limited(database_url, db):
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        RATELIMIT_ENABLED=True,
        LOGIN_RATE_LIMIT="3 per minute",
    )
    client = app.test_client()
    codes = [
        client.post("/login", data={"email": "x@example.org", "password": "wrong password"}).status_code
        for _ in range(4)
    ]
    assert codes == [422, 422, 422, 429]
    page = client.post("/login", data={"email": "x@example.org", "password": "x"}).get_data(as_text=True)
    assert "Too many attempts" in page


@pytest.mark.smtp
def test_password_reset_by_email(client, db, program, mail_outbox):
    UserFactory(email="ops@example.org", name="Olive Ops")
    db.session.commit()
    response = client.post("/password/forgot", data={"email": "ops@example.org"})
    assert response.status_code == 200
    assert "Check your e-mail" in response.get_data(as_text=True)
    assert len(mail_outbox) == 1
    message = mail_outbox[0]
    assert message["To"] == "ops@example.org"
    body = message.get_content()
    link = re.search(r"http://portal\.test(/password/reset/\S+)", body).group(1)

    weak = client.post(link, data={"password": "short", "confirm": "short"})
    assert weak.status_code == 422
    assert "Use at least 10 characters." in weak.get_data(as_text=True)

    done = client.post(link, data={"password": "a fresh pass phrase", "confirm": "a fresh pass phrase"})
    assert done.status_code == 302
    assert client.get(link).status_code == 400  # used once, never again
    login = client.post("/login", data={"email": "ops@example.org", "password": "a fresh pass phrase"})
    assert login.status_code == 302


@pytest.mark.smtp
def test_password_reset_for_unknown_email_says_the_same_and_sends_nothing(client, db, program, mail_outbox):
    response = client.post("/password/forgot", data={"email": "ghost@example.org"})
    assert response.status_code == 200
    assert "Check your e-mail" in response.get_data(as_text=True)
    assert mail_outbox == []


def _without_tokens(page: str) -> str:
    return re.sub(r'name="csrf_token"[^>]*value="[^"]*"|nonce="[^"]*"|"X-CSRFToken": "[^"]*"', "", page)


def test_password_reset_when_mail_server_is_down_answers_as_for_an_unknown_address(
    client, app, db, program, caplog
):
    """A mail server that is down shows in the log, not in the answer: a 503 for known
    addresses only told anyone who has an account."""
    from tests.conftest import free_port

    UserFactory(email="ops@example.org")
    db.session.commit()
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), MAIL_TIMEOUT=2)
    known = client.post("/password/forgot", data={"email": "ops@example.org"})
    unknown = client.post("/password/forgot", data={"email": "ops@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert "Check your e-mail" in known.get_data(as_text=True)
    shown = _without_tokens(known.get_data(as_text=True)).replace("ops@example.org", "ADDRESS")
    assert shown == _without_tokens(unknown.get_data(as_text=True)).replace("ops@example.com", "ADDRESS")
    assert "sent after its request failed" in caplog.text


@pytest.mark.smtp
def test_password_reset_mail_leaves_the_request_in_background_mode(
    client, app, db, program, mail_outbox, monkeypatch
):
    """In production mode the reset e-mail goes out from the process's sender thread after
    the response, never inside the request (whose length would tell a known address)."""
    UserFactory(email="ops@example.org")
    db.session.commit()
    app.config.update(MAIL_SEND_MODE="background")
    sender = app.extensions["mail_sender"]
    sent_in_request = []
    real_send = delivery._send_direct

    def watched(messages):
        sent_in_request.append(flask.has_request_context())
        real_send(messages)

    monkeypatch.setattr(delivery, "_send_direct", watched)
    response = client.post("/password/forgot", data={"email": "ops@example.org"})
    assert response.status_code == 200
    sender.queue.join()  # the sender thread has done what the request handed it
    assert sent_in_request == [False]
    assert [message["To"] for message in mail_outbox] == ["ops@example.org"]
    assert "/password/reset/" in mail_outbox[0].get_content()


@pytest.mark.smtp
def test_a_reset_request_that_rolls_back_sends_nothing(app, db, program, mail_outbox):
    """The reset e-mail goes out only after its transaction commits, like every e-mail."""
    UserFactory(email="ops@example.org")
    db.session.commit()
    with app.test_request_context("/password/forgot", method="POST"):
        accounts.send_password_reset("ops@example.org", lambda token: f"http://portal.test/{token}")
        db.session.rollback()
        response = app.process_response(app.response_class("ok"))
    assert response.status_code == 200
    assert mail_outbox == []
