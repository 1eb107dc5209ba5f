"""No account enumeration through /apply; unsubscribe asks on GET, acts on POST, expires; RFC 8058 headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.errors import DomainError
from portal.models import Partner, PartnerStatus, Role
from portal.services import accounts, delivery
from tests.factories import PartnerFactory, UserFactory

APPLICATION = {
    "name": "Rae Rivers",
    "email": "rae@example.org",
    "password": "mountain river sunrise",
    "confirm": "mountain river sunrise",
    "website": "https://rae.example",
    "social_profiles": "",
    "channels": ["seo"],
    "promotion_description": "Trail running stories and gear tests for 20k readers.",
    "country": "DE",
}


def answer(response) -> tuple[int, str]:
    """The response as a visitor sees it, less the typed address and the per-request nonce and token."""
    text = response.get_data(as_text=True)
    text = re.sub(r"[\w.+-]+@example\.org", "EMAIL", text, flags=re.IGNORECASE)
    text = re.sub(r'nonce="[^"]+"', "NONCE", text)
    text = re.sub(r'"X-CSRFToken": "[^"]+"', "TOKEN", text)
    text = re.sub(r'type="hidden" name="csrf_token" value="[^"]+"', "TOKEN", text)  # the language switch
    return response.status_code, re.sub(r'name="csrf_token" type="hidden" value="[^"]+"', "TOKEN", text)


@pytest.mark.smtp
def test_apply_answers_a_known_address_exactly_as_a_new_one_and_mails_the_owner(
    app, client, db, program, mail_outbox
):
    owner = UserFactory(email="known@example.org", role=Role.ADMIN, name="Kim Known")
    db.session.commit()

    # two visitors, each in their own browser (the client fixture gives each request a fresh g)
    fresh = app.test_client().post("/apply", data=APPLICATION)
    known = app.test_client().post("/apply", data={**APPLICATION, "email": "KNOWN@example.org"})

    assert answer(fresh) == answer(known)
    assert fresh.status_code == 200
    assert "already" not in known.get_data(as_text=True)
    cookies = [[c.split("=", 1)[0] for c in r.headers.getlist("Set-Cookie")] for r in (fresh, known)]
    assert cookies[0] == cookies[1]  # neither is signed in (a session only carries the CSRF token)
    assert db.session.scalars(sa.select(Partner)).one().user.email == "rae@example.org"
    assert owner.partner is None and owner.role == Role.ADMIN  # nothing changed on the account

    to_fresh, to_known = mail_outbox
    assert to_fresh["To"] == "rae@example.org"
    assert "application is in" in to_fresh["Subject"]
    assert to_known["To"] == "known@example.org"
    assert to_known["Subject"] == "Someone applied with your e-mail address"
    body = to_known.get_content()
    assert "http://portal.test/login" in body and "http://portal.test/password/forgot" in body


def test_a_weak_password_is_refused_alike_for_known_and_new_addresses(client, db, program):
    UserFactory(email="known@example.org")
    db.session.commit()
    weak = {"password": "short", "confirm": "short"}
    fresh = client.post("/apply", data={**APPLICATION, **weak})
    known = client.post("/apply", data={**APPLICATION, **weak, "email": "known@example.org"})
    assert fresh.status_code == known.status_code == 422
    assert answer(fresh) == answer(known)


def test_apply_or_notify_registers_nothing_for_a_known_address(db, program):
    user = UserFactory(email="known@example.org")
    application = accounts.Application(
        name="X",
        email="Known@Example.org",
        password="mountain river sunrise",
        country="DE",
        channels=["seo"],
        promotion_description="A long enough description of the audience.",
        website="https://x.example",
    )
    assert accounts.apply_or_notify(application) == (user, None)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Partner)) == 0


# --- unsubscribe -----------------------------------------------------------------------------------


def test_opening_an_unsubscribe_link_only_asks(client, db):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    db.session.commit()
    path = f"/unsubscribe/{delivery.unsubscribe_token(partner, 'announcement')}"

    page = client.get(path)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Stop these e-mails?" in text
    assert f'action="{path}"' in text and 'method="post"' in text
    assert delivery.email_preferences(partner)["announcement"] is True  # a mail scanner changes nothing

    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert "You are unsubscribed" in done.get_data(as_text=True)
    assert delivery.email_preferences(partner)["announcement"] is False


def test_unsubscribe_tokens_expire_after_a_year(client, db, app):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    db.session.commit()
    issued = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    with time_machine.travel(issued, tick=False):
        token = delivery.unsubscribe_token(partner, "message")
    with time_machine.travel(issued + timedelta(days=364), tick=False):
        assert client.get(f"/unsubscribe/{token}").status_code == 200
    with time_machine.travel(issued + timedelta(days=366), tick=False):
        for response in (client.get(f"/unsubscribe/{token}"), client.post(f"/unsubscribe/{token}")):
            assert response.status_code == 400
            assert "expired" in response.get_data(as_text=True)
    assert delivery.email_preferences(partner)["message"] is True


@pytest.fixture
def raw_mail(smtp_server, mail_outbox, monkeypatch) -> list[bytes]:
    """The bytes of each message as the SMTP server received them (mail_outbox re-parses them)."""
    _controller, collector = smtp_server
    received: list[bytes] = []
    keep = collector.handle_DATA

    async def handle_data(server, session, envelope):
        received.append(envelope.content)
        return await keep(server, session, envelope)

    monkeypatch.setattr(collector, "handle_DATA", handle_data, raising=False)
    return received


@pytest.mark.smtp
def test_list_unsubscribe_headers_follow_rfc_8058_unencoded(app, client, db, program, raw_mail):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    manager = UserFactory(role=Role.MANAGER)
    db.session.commit()
    with client.session_transaction() as session:
        session["_user_id"] = manager.get_id()
    client.post(f"/admin/partners/{partner.id}/messages", data={"subject": "Hi", "body": "News."})
    [received] = raw_mail

    head = received.decode("ascii").split("\r\n\r\n", 1)[0].splitlines()
    [line] = [h for h in head if h.lower().startswith("list-unsubscribe:")]
    assert re.fullmatch(r"List-Unsubscribe: <http://portal\.test/unsubscribe/[\w.-]+>", line), line
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in head

    url = line.split("<", 1)[1].rstrip(">")
    with client.session_transaction() as session:
        session.clear()
    one_click = client.post(url.removeprefix("http://portal.test"), data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert delivery.email_preferences(partner)["message"] is False


@pytest.mark.parametrize("known", [False, True])
def test_a_website_that_is_not_an_http_address_is_refused_alike_for_every_address(client, db, known):
    """``javascript://example.com/%0Aalert(1)`` passed the form's URL check and became a link in
    the console; the service refuses it, the same way whether the address has an account or not."""
    email = "known@example.org" if known else "new@example.org"
    if known:
        UserFactory(email=email)
        db.session.commit()
    before = db.session.scalar(sa.select(sa.func.count()).select_from(Partner))
    response = client.post(
        "/apply", data={**APPLICATION, "email": email, "website": "javascript://example.com/%0Aalert(1)"}
    )
    assert response.status_code == 422
    assert 'id="website-error"' in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Partner)) == before


@pytest.mark.parametrize("known", [False, True])
def test_the_service_refuses_a_website_the_console_could_not_link_to(db, known):
    """Behind the form's own check: what reaches the service is checked again, alike for every address."""
    email = "known@example.org" if known else "new@example.org"
    if known:
        UserFactory(email=email)
    fields = {k: v for k, v in APPLICATION.items() if k not in {"confirm", "email", "website"}}
    for website in (
        "javascript://example.com/%0Aalert(1)",
        "https://evil.example\\.rae.example/",
        "ftp://x.example",
    ):
        application = accounts.Application(**fields, email=email, website=website)
        with pytest.raises(DomainError) as refused:
            accounts.apply_or_notify(application)
        assert refused.value.field == "website"
