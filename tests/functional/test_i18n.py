"""Languages and time zones: who reads what, in which language and zone (issue #17)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.errors import DomainError
from portal.i18n import LOCALE_COOKIE, html_lang, negotiate
from portal.models import AutomaticKind, Click, Message, PartnerStatus, Role, Sender, Thread
from portal.services import accounts, delivery, lifecycle, outbox, tracking
from portal.services.program import settings_of, update_program_settings
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory, UserFactory

ZH = "zh_Hans_CN"
SUPPORTED = ("en", ZH)
# 20:30 UTC on 2 March: 21:30 on the 2nd in Berlin (the program's zone), 04:30 on the 3rd in Shanghai.
EVENING = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)


def page(client, url: str, **headers) -> str:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, (url, response.status_code)
    return response.get_data(as_text=True)


def system_messages(db, partner) -> list[Message]:
    """The partner's automatic messages, once the outbox's consumers have run (as after a commit)."""
    outbox.dispatch()
    return list(
        db.session.scalars(
            sa.select(Message)
            .join(Thread)
            .where(Thread.partner_id == partner.id, Message.sender == Sender.SYSTEM)
            .order_by(Message.id)
        )
    )


# --- choosing the language ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accepted", "chosen"),
    [
        (["zh-CN"], ZH),
        (["zh-Hans"], ZH),
        (["zh"], ZH),
        (["zh-SG"], ZH),
        (["zh-hans-cn"], ZH),
        (["zh_CN"], ZH),
        (["zh-TW"], None),  # Traditional Chinese is another script
        (["zh-Hant"], None),
        (["en-US"], "en"),
        (["fr-FR", "zh-CN", "en"], ZH),
        (["fr-FR", "en", "zh-CN"], "en"),
        (["*"], None),
        (["xx-nonsense", "!!"], None),
    ],
)
def test_negotiate_matches_language_and_script(accepted, chosen):
    assert negotiate(accepted, SUPPORTED) == chosen


def test_html_lang_is_a_bcp47_tag():
    assert html_lang("en") == "en"
    assert html_lang(ZH) == "zh-CN"


@pytest.mark.parametrize("header", ["zh-CN", "zh-Hans", "zh", "zh-CN,zh;q=0.9,en;q=0.8"])
def test_a_new_visitor_asking_for_chinese_gets_sign_in_and_apply_in_chinese(client, program, header):
    login = page(client, "/login", **{"Accept-Language": header})
    assert '<html lang="zh-CN">' in login
    assert "<h1>登录</h1>" in login
    assert "忘记密码？" in login
    apply = page(client, "/apply", **{"Accept-Language": header})
    assert '<html lang="zh-CN">' in apply
    assert "申请加入 Test Outdoor 推广计划" in apply
    assert ">中国<" in apply  # country names in Chinese too
    assert ">Germany<" not in apply


def test_a_visitor_asking_for_english_gets_english(client, program):
    login = page(client, "/login", **{"Accept-Language": "en-GB,en;q=0.9"})
    assert '<html lang="en">' in login
    assert "<h1>Sign in</h1>" in login
    assert ">Germany<" in page(client, "/apply", **{"Accept-Language": "en"})


def test_without_a_usable_accept_language_the_programs_default_decides(client, db, program):
    assert '<html lang="en">' in page(client, "/login", **{"Accept-Language": "fr-FR"})
    program.default_locale = ZH
    db.session.commit()
    assert "<h1>登录</h1>" in page(client, "/login", **{"Accept-Language": "fr-FR"})
    assert "<h1>登录</h1>" in page(client, "/login")


def test_the_switch_sets_a_cookie_for_a_visitor_and_beats_the_browser(client, program):
    login = page(client, "/login", **{"Accept-Language": "en"})
    assert 'name="locale" value="zh_Hans_CN"' in login  # the switch, in the header of the sign-in page
    assert "简体中文" in login
    assert 'name="locale" value="zh_Hans_CN"' in page(client, "/apply", **{"Accept-Language": "en"})

    response = client.post("/language", data={"locale": ZH, "next": "/apply?x=1"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/apply?x=1"
    assert f"{LOCALE_COOKIE}={ZH}" in response.headers["Set-Cookie"]
    assert "<h1>登录</h1>" in page(client, "/login", **{"Accept-Language": "en"})
    # Back to English the same way; the switch now offers English, named in English.
    chinese = page(client, "/login")
    assert 'name="locale" value="en"' in chinese
    client.post("/language", data={"locale": "en", "next": "/login"})
    assert "<h1>Sign in</h1>" in page(client, "/login", **{"Accept-Language": "zh-CN"})


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "javascript:alert(1)"])
def test_the_switch_never_redirects_off_site(client, program, target):
    response = client.post("/language", data={"locale": ZH, "next": target})
    assert response.headers["Location"] == "/"


def test_the_switch_refuses_an_unknown_language(client, program):
    response = client.post("/language", data={"locale": "xx", "next": "/login"})
    assert response.status_code == 302
    assert LOCALE_COOKIE not in response.headers.get("Set-Cookie", "")


def test_a_signed_in_switch_is_kept_on_the_account(client, db, program, login_as):
    user = login_as("partner")
    client.post("/language", data={"locale": ZH, "next": "/partner/"})
    db.session.refresh(user)
    assert user.locale == ZH
    # The account's choice beats the browser and a cookie saying otherwise.
    client.set_cookie(LOCALE_COOKIE, "en", domain="portal.test")
    dashboard = page(client, "/partner/", **{"Accept-Language": "en"})
    assert '<html lang="zh-CN">' in dashboard
    assert "概览" in dashboard


@pytest.mark.parametrize("role", ["partner", "manager", "admin"])
def test_the_account_page_sets_language_and_time_zone(client, db, program, login_as, role):
    user = login_as(role)
    form = page(client, "/account", **{"Accept-Language": "en"})
    assert 'name="locale"' in form and 'name="timezone"' in form
    assert "(Europe/Berlin)</option>" in form
    response = client.post("/account/reading", data={"locale": ZH, "timezone": "Asia/Shanghai"})
    assert response.status_code == 302
    db.session.refresh(user)
    assert (user.locale, user.timezone) == (ZH, "Asia/Shanghai")
    saved = page(client, "/account", **{"Accept-Language": "en"})
    assert "您的语言和时区已保存。" in saved  # the confirmation already in the new language
    # Empty means automatic again.
    client.post("/account/reading", data={"locale": "", "timezone": ""})
    db.session.refresh(user)
    assert (user.locale, user.timezone) == (None, None)


def test_the_account_page_refuses_an_unknown_zone(client, db, program, login_as):
    user = login_as("partner")
    response = client.post("/account/reading", data={"locale": "", "timezone": "Mars/Olympus"})
    assert response.status_code == 422
    db.session.refresh(user)
    assert user.timezone is None


def test_the_program_default_language_is_a_setting(db, program):
    admin = UserFactory(role=Role.ADMIN)
    settings = settings_of(program)
    settings.default_locale = ZH
    update_program_settings(program, admin, settings)
    assert program.default_locale == ZH
    settings.default_locale = "fr"
    with pytest.raises(DomainError) as refused:
        update_program_settings(program, admin, settings)
    assert refused.value.field == "default_locale"


def test_the_settings_page_offers_the_default_language(client, program, login_as):
    login_as("admin")
    settings = page(client, "/admin/settings", **{"Accept-Language": "en"})
    assert 'name="default_locale"' in settings
    assert '<option selected value="en">English</option>' in settings
    assert '<option value="zh_Hans_CN">简体中文</option>' in settings


# --- the acceptance: a partner who chose 中文 and their own zone ---------------------------------


def sell(program, partner, transaction_id: str, amount_minor: int = 10_000):
    data = ConversionInput(transaction_id, amount_minor, "USD", ref=partner.ref_code)
    conversion, _ = tracking.record_conversion(program, data, {"transaction_id": transaction_id})
    return conversion


@pytest.mark.smtp
def test_a_partner_who_chose_chinese_reads_pages_messages_and_emails_in_chinese_in_their_zone(
    app, client, db, program, mail_outbox
):
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    partner.user.locale = ZH
    partner.user.timezone = "Asia/Shanghai"
    manager = UserFactory(role=Role.MANAGER)  # reads English
    db.session.commit()
    with client.session_transaction() as session:
        session["_user_id"] = manager.get_id()
    response = client.post(f"/admin/partners/{partner.id}/approve", headers={"Accept-Language": "en"})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/partners/{partner.id}"
    with time_machine.travel(EVENING, tick=False):
        sell(program, partner, "T-1")
        db.session.commit()
        outbox.dispatch()  # what runs after the commit: the first-sale message, written that evening

    # The welcome message, sent during the manager's English request: in the partner's Chinese.
    [welcome, first_sale] = system_messages(db, partner)
    assert welcome.thread.subject == "欢迎加入 Test Outdoor，" + partner.user.name
    assert "您加入 Test Outdoor 的申请已通过" in welcome.body
    assert "恭喜" in first_sale.body and "US$100\\.00" in first_sale.body  # markdown-escaped
    # ... and its e-mail copy, the wrapper's own words too.
    emails = {email["Subject"]: email for email in mail_outbox}
    email = emails[welcome.thread.subject]
    text = email.get_body(("plain",)).get_content()
    assert "在门户中阅读并回复" in text and "一键停止接收此类邮件" in text
    assert 'lang="zh-CN"' in email.get_body(("html",)).get_content()

    # The pages, in Chinese and in Shanghai time (04:30 on the 3rd, not 21:30 on the 2nd in Berlin).
    with client.session_transaction() as session:
        session["_user_id"] = partner.user.get_id()
    conversions = page(client, "/partner/conversions", **{"Accept-Language": "en"})
    assert "您的转化" in conversions
    assert "2026/3/3 04:30" in conversions
    assert "Your conversions" not in conversions


def test_a_wake_up_says_the_last_click_on_the_partners_own_calendar(db, program):
    shanghai = PartnerFactory(status_changed_at=EVENING)
    shanghai.user.locale, shanghai.user.timezone = ZH, "Asia/Shanghai"
    berlin = PartnerFactory(status_changed_at=EVENING)  # chose nothing: the program's zone
    berlin.user.locale = ZH
    for partner in (shanghai, berlin):
        db.session.add(
            Click(
                id=f"c-{partner.id}",
                partner_id=partner.id,
                code=partner.ref_code,
                channel="seo",
                destination_url="https://shop.example/",
                ip_hash="x",
                created_at=EVENING,
            )
        )
    db.session.flush()
    with time_machine.travel(datetime(2026, 4, 20, 12, tzinfo=UTC), tick=False):
        assert lifecycle.send_wake_ups() == 2
    assert "最后一次点击：2026年3月3日" in system_messages(db, shanghai)[-1].body
    assert "最后一次点击：2026年3月2日" in system_messages(db, berlin)[-1].body


def test_partners_who_never_chose_are_written_to_in_the_programs_language(db, program):
    program.default_locale = ZH
    never_chose = PartnerFactory(status=PartnerStatus.APPROVED)
    chose_english = PartnerFactory(status=PartnerStatus.APPROVED)
    chose_english.user.locale = "en"
    db.session.flush()
    lifecycle.payout_sent(
        never_chose, amount_minor=12_345, currency="USD", reference="P-1", paid_at=EVENING, key="i:1"
    )
    lifecycle.payout_sent(
        chose_english, amount_minor=12_345, currency="USD", reference="P-2", paid_at=EVENING, key="i:2"
    )
    [chinese] = system_messages(db, never_chose)
    assert chinese.thread.subject == "结算已发出：US$123.45"
    assert "我们已于 2026年3月2日 向您支付" in chinese.body  # the program's calendar day
    [english] = system_messages(db, chose_english)
    assert english.thread.subject == "Payout sent: $123.45"
    assert "on March 2, 2026" in english.body


def test_a_template_the_team_rewrote_is_sent_as_written(db, program):
    manager = UserFactory(role=Role.MANAGER)
    lifecycle.save_template(
        AutomaticKind.WELCOME,
        manager,
        lifecycle.TemplateChange(enabled=True, subject="Hello {{ partner.name }}", body="Our own words."),
    )
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    partner.user.locale = ZH
    accounts.approve_partner(partner, manager)
    [welcome] = system_messages(db, partner)
    assert welcome.thread.subject == f"Hello {partner.user.name}"
    assert welcome.body.strip() == "Our own words."


def test_the_built_in_wording_is_recognised_in_whichever_language_it_was_stored(app, db, program):
    from flask_babel import force_locale

    with force_locale(ZH):
        stored = lifecycle.get_template(AutomaticKind.WELCOME)  # first used by someone reading Chinese
    assert stored.subject.startswith("欢迎加入")
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    partner.user.locale = "en"
    accounts.approve_partner(partner, UserFactory(role=Role.MANAGER))
    [welcome] = system_messages(db, partner)
    assert welcome.thread.subject.startswith("Welcome to Test Outdoor")


def test_email_preferences_labels_follow_the_partner(db, program):
    from flask_babel import force_locale

    with force_locale(ZH):
        assert delivery.email_kind_label("payout_sent") == "结算已发出"


def test_the_api_answers_its_messages_in_the_clients_language_and_keeps_its_codes(client, db, program):
    from portal.services.api_keys import create_api_key

    _key, plain = create_api_key("i18n", None)
    db.session.commit()
    headers = {"Authorization": f"Bearer {plain}", "Accept-Language": "zh-CN"}
    invalid = client.post("/api/v1/conversions", json={"amount": "1.00"}, headers=headers)
    assert invalid.status_code == 422
    assert invalid.json["error"]["message"] == "部分字段缺失或格式不正确。"
    missing = client.get("/api/v1/conversions/nope", headers=headers)
    assert missing.status_code == 404
    assert missing.json["error"]["message"] == "没有交易号为 'nope' 的转化。"
    english = client.get("/api/v1/conversions/nope", headers={**headers, "Accept-Language": "en"})
    assert english.json["error"]["message"] == "No conversion has transaction id 'nope'."
    assert english.json["error"]["code"] == missing.json["error"]["code"]
