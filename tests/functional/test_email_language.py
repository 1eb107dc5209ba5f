"""E-mails about someone's account are in that person's language (their choice, else the
program's default) and time zone, whatever the language of the request that sends them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import OutboundEmail, Role
from tests.factories import PASSWORD, UserFactory
from tests.functional.test_auth import GOOD_APPLICATION

ZH = "zh_Hans_CN"


@pytest.fixture
def mail_on(app):
    """SMTP "set up" so the outbox is written (nothing listens: the rows stay unsent)."""
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=9)


def test_the_payout_details_notice_is_in_the_programs_language_for_a_partner_who_never_chose(
    client, db, program, login_as, mail_on
):
    program.default_locale = ZH
    # 20:30 UTC: 04:30 the next morning in Shanghai.
    with time_machine.travel(datetime(2026, 3, 2, 20, 30, tzinfo=UTC), tick=False):
        user = login_as(Role.PARTNER, user__timezone="Asia/Shanghai")
        assert user.locale is None
        response = client.post(
            "/partner/payout-details",
            data={"method": "paypal", "paypal_email": "pat@example.org", "current_password": PASSWORD},
            headers={"Accept-Language": "en"},  # the page is read in English…
        )
    assert response.status_code == 302, response.get_data(as_text=True)[-3000:]
    notice = db.session.scalars(
        sa.select(OutboundEmail).where(OutboundEmail.kind == "payout_details_changed")
    ).one()
    # … the e-mail in the program's language, on the partner's clock.
    assert notice.subject == "您的收款信息已更改"
    assert "2026年3月3日 04:30" in notice.text
    assert "payout details" not in notice.text


def test_someone_applying_with_a_taken_address_is_told_in_the_accounts_language(
    client, db, program, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        "portal.services.accounts.send_mail", lambda to, subject, text: sent.append((to, subject))
    )
    UserFactory(email="rae@example.org", locale=ZH)
    db.session.commit()
    response = client.post("/apply", data=GOOD_APPLICATION, headers={"Accept-Language": "en"})
    assert response.status_code == 200
    assert "Your application is in" in response.get_data(as_text=True)  # the visitor reads English
    assert sent == [("rae@example.org", "有人使用您的邮箱地址提交了申请")]


def test_a_new_applicant_gets_the_confirmation_in_the_language_they_applied_in(
    client, db, program, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        "portal.services.accounts.send_mail", lambda to, subject, text: sent.append((to, subject))
    )
    response = client.post("/apply", data=GOOD_APPLICATION, headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 200
    [(to, subject)] = sent
    assert to == "rae@example.org" and subject != "Your partner application is in"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in subject)
