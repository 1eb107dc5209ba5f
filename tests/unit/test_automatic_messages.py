"""Automatic messages: each fires once, respects its switch and the partner's e-mail choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.errors import DomainError
from portal.jobs import run_triggers
from portal.models import (
    AutomaticKind,
    AutomaticMessageLog,
    Click,
    Message,
    MessageTemplate,
    OutboundEmail,
    PartnerStatus,
    Role,
    Sender,
    Thread,
)
from portal.services import accounts, delivery, inbox, lifecycle, outbox, tracking
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory, UserFactory

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def system_messages(db, partner, kind: str | None = None) -> list[Message]:
    query = (
        sa.select(Message)
        .join(Thread)
        .where(Thread.partner_id == partner.id, Message.sender == Sender.SYSTEM)
        .order_by(Message.id)
    )
    if kind:
        query = query.where(Thread.automatic_kind == kind)
    return list(db.session.scalars(query))


def dispatch() -> None:
    """What runs after the commit: the outbox's consumers (the automatic messages among them)."""
    outbox.dispatch()


def switch(kind: str, enabled: bool, **extra) -> None:
    template = lifecycle.get_template(kind)
    template.enabled = enabled
    for key, value in extra.items():
        setattr(template, key, value)


@pytest.fixture
def manager(db):
    return UserFactory(role=Role.MANAGER)


def sell(program, partner, transaction_id: str, amount_minor: int = 10_000):
    data = ConversionInput(transaction_id, amount_minor, "USD", ref=partner.ref_code)
    conversion, _ = tracking.record_conversion(program, data, {"transaction_id": transaction_id})
    dispatch()
    return conversion


# --- welcome --------------------------------------------------------------------------------


def test_welcome_on_approval_once_even_after_a_second_approval(db, program, manager):
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    accounts.approve_partner(partner, manager)
    dispatch()
    [welcome] = system_messages(db, partner, AutomaticKind.WELCOME)
    assert partner.user.name in welcome.thread.subject or partner.user.name.split()[0] in welcome.body
    assert f"`{partner.ref_code}`" in welcome.body
    assert "http://portal.test/partner/links" in welcome.body

    # rejected later and approved again: the welcome does not repeat
    partner.status = PartnerStatus.REJECTED
    accounts.approve_partner(partner, manager)
    dispatch()
    assert len(system_messages(db, partner, AutomaticKind.WELCOME)) == 1


def test_welcome_switched_off_sends_nothing(db, program, manager):
    switch(AutomaticKind.WELCOME, False)
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    accounts.approve_partner(partner, manager)
    dispatch()
    assert system_messages(db, partner) == []


def test_the_event_is_part_of_the_callers_transaction(db, program, manager):
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    db.session.commit()
    accounts.approve_partner(partner, manager)
    db.session.rollback()
    dispatch()
    assert system_messages(db, partner) == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AutomaticMessageLog)) == 0


# --- first conversion -------------------------------------------------------------------------


def test_first_conversion_congratulates_once(db, program):
    partner = PartnerFactory()
    first = sell(program, partner, "order-1")
    dispatch()
    [message] = system_messages(db, partner, AutomaticKind.FIRST_CONVERSION)
    assert "order\\-1" in message.body  # the order number is text, escaped for Markdown
    assert "$100\\.00" in message.body and "$10\\.00" in message.body
    assert f"/partner/conversions/{first.id}" in message.body
    sell(program, partner, "order-2")
    dispatch()
    assert len(system_messages(db, partner, AutomaticKind.FIRST_CONVERSION)) == 1


def test_a_first_and_second_sale_dispatched_together_congratulate_on_the_first(db, program):
    """Both committed before the dispatcher ran (a burst): each sees the other stored, but only
    an earlier sale makes a sale not the first."""
    partner = PartnerFactory()
    for transaction_id in ("burst-1", "burst-2"):
        data = ConversionInput(transaction_id, 10_000, "USD", ref=partner.ref_code)
        tracking.record_conversion(program, data, {"transaction_id": transaction_id})
    dispatch()
    [message] = system_messages(db, partner, AutomaticKind.FIRST_CONVERSION)
    assert "burst\\-1" in message.body


def test_an_operators_rejection_says_why_once(db, program, manager):
    partner = PartnerFactory()
    conversion = sell(program, partner, "late-1")
    dispatch()
    tracking.reject_conversion(conversion, manager, "test_order", "Placed by QA.")
    dispatch()
    [rejected] = system_messages(db, partner, AutomaticKind.CONVERSION_REJECTED)
    assert "a test order" in rejected.body and "Placed by QA\\." in rejected.body
    assert rejected.thread.subject == "Order late-1 was not counted"
    tracking.refund_conversion(conversion, None, None)  # refunding it afterwards says nothing new
    assert len(system_messages(db, partner, AutomaticKind.CONVERSION_REJECTED)) == 1


def test_a_sale_rejected_on_arrival_is_not_a_first_sale(db, program):
    partner = PartnerFactory()
    program.cookie_window_days = 1
    add_click(db, partner, START)
    click_id = db.session.scalar(sa.select(Click.id).where(Click.partner_id == partner.id))
    data = ConversionInput("late-2", 5000, "USD", click_id=click_id, occurred_at=START + timedelta(days=3))
    tracking.record_conversion(program, data, {"t": "late-2"})
    dispatch()
    assert system_messages(db, partner, AutomaticKind.FIRST_CONVERSION) == []
    [rejected] = system_messages(db, partner, AutomaticKind.CONVERSION_REJECTED)
    assert "after the cookie window had closed" in rejected.body


def test_first_conversion_switched_off(db, program):
    switch(AutomaticKind.FIRST_CONVERSION, False)
    partner = PartnerFactory()
    sell(program, partner, "order-1")
    dispatch()
    assert system_messages(db, partner, AutomaticKind.FIRST_CONVERSION) == []


# --- conversion rejected ---------------------------------------------------------------------


def test_full_refund_rejects_with_the_reason_once(db, program):
    partner = PartnerFactory()
    conversion = sell(program, partner, "order-9")
    dispatch()
    tracking.refund_conversion(conversion, None, "customer returned it")
    dispatch()
    tracking.refund_conversion(conversion, None, None)  # repeated: changes nothing
    [message] = system_messages(db, partner, AutomaticKind.CONVERSION_REJECTED)
    assert "the order was refunded" in message.body
    assert "customer returned it" in message.body


def test_conversion_rejected_switched_off(db, program):
    switch(AutomaticKind.CONVERSION_REJECTED, False)
    partner = PartnerFactory()
    conversion = sell(program, partner, "order-9")
    dispatch()
    tracking.refund_conversion(conversion, None, None)
    dispatch()
    assert system_messages(db, partner, AutomaticKind.CONVERSION_REJECTED) == []


# --- wake-up (time injected) -------------------------------------------------------------------


def add_click(db, partner, when: datetime) -> None:
    db.session.add(
        Click(
            id=f"c{partner.id}{int(when.timestamp())}",
            partner_id=partner.id,
            code=partner.ref_code,
            channel="seo",
            destination_url="https://shop.example/",
            ip_hash="x",
            created_at=when,
        )
    )
    db.session.flush()


def test_wake_up_once_per_quiet_spell(db, program):
    partner = PartnerFactory(status_changed_at=START - timedelta(days=60))
    busy = PartnerFactory(status_changed_at=START - timedelta(days=60))
    add_click(db, partner, START)
    add_click(db, busy, START)

    with time_machine.travel(START + timedelta(days=20, hours=23), tick=False):
        assert lifecycle.send_wake_ups() == 0  # 20 days: not yet
    with time_machine.travel(START + timedelta(days=21, hours=1), tick=False):
        add_click(db, busy, START + timedelta(days=21))
        assert lifecycle.send_wake_ups() == 1
        [wake] = system_messages(db, partner, AutomaticKind.WAKE_UP)
        assert "no clicks for 21 days" in wake.body
    for days in (22, 30, 41):  # still the same quiet spell: never nags
        with time_machine.travel(START + timedelta(days=days), tick=False):
            assert lifecycle.send_wake_ups() == 0
    assert system_messages(db, busy) == []

    # a click ends the spell; 21 quiet days later there is a new one
    add_click(db, partner, START + timedelta(days=91))
    add_click(db, busy, START + timedelta(days=91))
    add_click(db, busy, START + timedelta(days=112))
    with time_machine.travel(START + timedelta(days=111), tick=False):
        assert lifecycle.send_wake_ups() == 0
    with time_machine.travel(START + timedelta(days=112, hours=1), tick=False):
        assert lifecycle.send_wake_ups() == 1
    assert len(system_messages(db, partner, AutomaticKind.WAKE_UP)) == 2


def test_wake_up_for_a_partner_who_never_clicked_counts_from_approval(db, program):
    partner = PartnerFactory(status_changed_at=START)
    PartnerFactory(status=PartnerStatus.APPLIED, applied_at=START - timedelta(days=100))
    with time_machine.travel(START + timedelta(days=21, minutes=1), tick=False):
        assert lifecycle.send_wake_ups() == 1
    [wake] = system_messages(db, partner, AutomaticKind.WAKE_UP)
    assert "last click: never" in wake.body


def test_wake_up_respects_its_switch_and_its_number_of_days(db, program):
    partner = PartnerFactory(status_changed_at=START)
    switch(AutomaticKind.WAKE_UP, False)
    with time_machine.travel(START + timedelta(days=40), tick=False):
        assert lifecycle.send_wake_ups() == 0
    switch(AutomaticKind.WAKE_UP, True, quiet_days=50)
    with time_machine.travel(START + timedelta(days=40), tick=False):
        assert lifecycle.send_wake_ups() == 0
    with time_machine.travel(START + timedelta(days=51), tick=False):
        assert lifecycle.send_wake_ups() == 1
    assert len(system_messages(db, partner)) == 1


def test_run_triggers_is_idempotent(db, program):
    PartnerFactory(status_changed_at=START)
    with time_machine.travel(START + timedelta(days=30), tick=False):
        first = run_triggers()
        second = run_triggers()
    assert (first.wake_ups, second.wake_ups) == (1, 0)


# --- events other modules raise -----------------------------------------------------------------


def test_tier_payout_creatives_and_campaign_fire_once_each(db, program):
    partner = PartnerFactory(channels=["video", "seo"])
    outsider = PartnerFactory(channels=["ads"])
    lifecycle.tier_upgraded(
        partner, tier_name="Gold", previous_tier="Silver", rate="12% of each sale", key="t1"
    )
    lifecycle.tier_upgraded(
        partner, tier_name="Gold", previous_tier="Silver", rate="12% of each sale", key="t1"
    )
    lifecycle.payout_sent(
        partner, amount_minor=12_345, currency="USD", reference="PAY-7", paid_at=START, key="item:7"
    )
    lifecycle.payout_sent(
        partner, amount_minor=12_345, currency="USD", reference="PAY-7", paid_at=START, key="item:7"
    )
    creatives = [
        lifecycle.NewCreative("Spring banner", "seo"),
        lifecycle.NewCreative("Unboxing clip", "video"),
    ]
    assert lifecycle.creatives_published(creatives, key="batch:1") == 1
    assert lifecycle.creatives_published(creatives, key="batch:1") == 0
    assert (
        lifecycle.campaign_starting(
            [partner], name="Summer 20", starts_at=START, ends_at=None, details="20% more.", key="campaign:3"
        )
        == 1
    )
    assert lifecycle.campaign_starting([partner], name="Summer 20", starts_at=START, ends_at=None,
                                       details="20% more.", key="campaign:3") == 0  # fmt: skip

    kinds = [m.thread.automatic_kind for m in system_messages(db, partner)]
    assert kinds == ["tier_upgrade", "payout_sent", "new_creatives", "campaign_starting"]
    tier, payout, creative, campaign = system_messages(db, partner)
    assert tier.thread.subject == "You moved up to Gold" and "12% of each sale" in tier.body
    assert "$123\\.45" in payout.body and "PAY\\-7" in payout.body and "March 2, 2026" in payout.body
    assert "Spring banner, Unboxing clip" in creative.body and "2 new creatives" in creative.body
    assert "Summer 20" in campaign.body and "until further notice" in campaign.body
    assert system_messages(db, outsider) == []


def test_switched_off_kinds_from_other_modules_send_nothing(db, program):
    partner = PartnerFactory()
    for kind in (AutomaticKind.TIER_UPGRADE, AutomaticKind.PAYOUT_SENT):
        switch(kind, False)
    assert lifecycle.tier_upgraded(partner, tier_name="Gold", previous_tier="-", rate="-", key="k") is None
    assert (
        lifecycle.payout_sent(partner, amount_minor=1, currency="USD", reference="r", paid_at=START, key="k")
        is None
    )


def test_notify_refuses_values_the_kind_does_not_have(db, program):
    with pytest.raises(ValueError, match="unknown values"):
        lifecycle.notify(AutomaticKind.WELCOME, PartnerFactory(), key="x", payout__amount="1")


# --- templates: checked when saved --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("Hi {{ partner.nmae }}", "Unknown variable {{ partner.nmae }}"),
        ("Hi {{ payout.amount }}", "Unknown variable {{ payout.amount }}"),
        ("Hi {{ secret_key }}", "Unknown variable"),
        ("{{ partner.name | upper }}", "without filters"),
        ("{{ partner.__class__ }}", "Unknown variable"),
        ("{% for x in partner %}{% endfor %}", "no {% … %} blocks"),
        ("{{ partner.name ", "cannot be read"),
        ("{{ ''.__class__.__mro__ }}", "without filters or expressions"),
    ],
)
def test_a_template_with_an_unknown_variable_is_refused_when_saved(db, manager, body, why):
    before = lifecycle.get_template(AutomaticKind.WELCOME).body
    with pytest.raises(DomainError, match=__import__("re").escape(why)) as caught:
        lifecycle.save_template(
            AutomaticKind.WELCOME, manager, lifecycle.TemplateChange(True, "Welcome", body)
        )
    assert caught.value.field == "body"
    assert lifecycle.get_template(AutomaticKind.WELCOME).body == before


def test_a_good_template_is_saved_and_used(db, program, manager):
    lifecycle.save_template(
        AutomaticKind.WELCOME,
        manager,
        lifecycle.TemplateChange(
            True, "Hello {{ partner.name }}", "Code: {{ partner.code }} at {{ program.name }}"
        ),
    )
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    accounts.approve_partner(partner, manager)
    dispatch()
    [message] = system_messages(db, partner)
    assert message.thread.subject == f"Hello {partner.user.name}"
    assert message.body == f"Code: {partner.ref_code} at Test Outdoor"


# --- e-mail: on, off, unsubscribed ------------------------------------------------------------------


@pytest.mark.smtp
def test_automatic_message_by_email_with_a_working_unsubscribe_link(app, db, program, manager, mail_outbox):
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    accounts.approve_partner(partner, manager)
    db.session.commit()
    dispatch()  # the consumer writes the message and its e-mail, and sends what it wrote
    [email] = mail_outbox
    assert email["To"] == partner.user.email
    assert email["Subject"].startswith("Welcome to Test Outdoor")
    text = email.get_body(("plain",)).get_content()
    unsubscribe = email["List-Unsubscribe"].strip("<>")
    assert unsubscribe in text
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = email.get_body(("html",)).get_content()
    assert f'href="{unsubscribe}"' in html
    assert db.session.scalars(sa.select(OutboundEmail)).one().sent_at is not None

    token = unsubscribe.rsplit("/", 1)[1]
    delivery.unsubscribe(token)
    assert delivery.email_preferences(partner)["welcome"] is False
    assert delivery.email_preferences(partner)["message"] is True


@pytest.mark.smtp
def test_opted_out_partner_gets_the_message_in_the_portal_only(app, db, program, mail_outbox):
    partner = PartnerFactory()
    delivery.set_email_preference(partner, "first_conversion", False)
    sell(program, partner, "order-1")
    dispatch()
    db.session.commit()
    delivery.send_ready()
    assert len(system_messages(db, partner, AutomaticKind.FIRST_CONVERSION)) == 1
    assert mail_outbox == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboundEmail)) == 0


def test_no_email_is_queued_without_smtp(db, program, manager):
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    accounts.approve_partner(partner, manager)
    dispatch()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboundEmail)) == 0


@pytest.mark.smtp
def test_a_failed_send_stays_in_the_outbox_and_the_job_retries_it(app, db, program, manager, mail_outbox):
    from tests.conftest import free_port

    port = app.config["MAIL_PORT"]
    app.config["MAIL_PORT"] = free_port()  # nobody listens: the send fails
    thread = inbox.start_thread(PartnerFactory(), manager, "Hello", "First message")
    db.session.commit()
    assert delivery.send_ready() == 0
    outbound = db.session.scalars(sa.select(OutboundEmail)).one()
    assert outbound.sent_at is None and outbound.attempts == 1 and outbound.last_error

    app.config["MAIL_PORT"] = port
    assert run_triggers().emails == 0  # its minute of back-off is not up yet
    with time_machine.travel(outbound.next_attempt_at + timedelta(seconds=1), tick=False):
        assert run_triggers().emails == 1
        assert run_triggers().emails == 0
    [email] = mail_outbox
    assert email["Subject"] == "Hello"
    assert f"/partner/inbox/{thread.id}" in email.get_body(("plain",)).get_content()


def test_the_development_scheduler_runs_the_triggers(app, db, program):
    from portal.jobs import Scheduler, start_scheduler

    PartnerFactory(status_changed_at=START)
    db.session.commit()
    assert start_scheduler(app) is None  # off unless SCHEDULER_ENABLED (development only)
    with time_machine.travel(START + timedelta(days=30), tick=False):
        report = Scheduler(app, interval=3600).run_once()
    assert (report.announcements, report.wake_ups, report.emails) == (0, 1, 0)


# --- the tracking API: messages come from the outbox, after the commit ---


def test_the_api_leaves_the_first_sale_message_to_the_job(db, program):
    partner = PartnerFactory()
    db.session.commit()
    data = ConversionInput("api-1", 10_000, "USD", ref=partner.ref_code)
    conversion, _ = tracking.record_conversion(program, data, {"t": "api-1"}, defer_messages=True)
    db.session.commit()
    assert system_messages(db, partner, AutomaticKind.FIRST_CONVERSION) == []  # not in the request

    # The sale's conversion.created; its commission.created calls for no message, so the
    # messages consumer passes over it without handling it.
    assert run_triggers().events == 1
    [message] = system_messages(db, partner, AutomaticKind.FIRST_CONVERSION)
    assert f"/partner/conversions/{conversion.id}" in message.body
    run_triggers()
    assert len(system_messages(db, partner, AutomaticKind.FIRST_CONVERSION)) == 1  # once

    data = ConversionInput("api-2", 10_000, "USD", ref=partner.ref_code)
    tracking.record_conversion(program, data, {"t": "api-2"}, defer_messages=True)
    db.session.commit()
    run_triggers()  # a second sale is not a first
    assert len(system_messages(db, partner, AutomaticKind.FIRST_CONVERSION)) == 1


def test_the_api_leaves_a_rejection_on_arrival_to_the_job(db, program):
    partner = PartnerFactory()
    program.cookie_window_days = 1
    add_click(db, partner, START)
    click_id = db.session.scalar(sa.select(Click.id).where(Click.partner_id == partner.id))
    data = ConversionInput("late-3", 5000, "USD", click_id=click_id, occurred_at=START + timedelta(days=3))
    tracking.record_conversion(program, data, {"t": "late-3"}, defer_messages=True)
    db.session.commit()
    assert system_messages(db, partner) == []
    run_triggers()
    [rejected] = system_messages(db, partner, AutomaticKind.CONVERSION_REJECTED)
    assert "after the cookie window had closed" in rejected.body
    assert system_messages(db, partner, AutomaticKind.FIRST_CONVERSION) == []


def test_a_deferred_message_switched_off_in_between_is_not_sent(db, program):
    partner = PartnerFactory()
    data = ConversionInput("api-3", 10_000, "USD", ref=partner.ref_code)
    tracking.record_conversion(program, data, {"t": "api-3"}, defer_messages=True)
    switch(AutomaticKind.FIRST_CONVERSION, False)
    db.session.commit()
    run_triggers()
    assert system_messages(db, partner) == []
    run_triggers()
    assert system_messages(db, partner) == []  # and not kept for later either


def test_a_template_another_request_made_a_moment_ago_is_the_one_used(db, program, monkeypatch):
    # Two partners' first tier upgrades at once (PostgreSQL): the other request inserted the
    # template row after this one looked for it; this one's insert fails and it reads that row.
    db.session.execute(
        sa.insert(MessageTemplate).values(kind="tier_upgrade", enabled=False, subject="S", body="B")
    )
    real_get = db.session.get
    monkeypatch.setattr(
        db.session,
        "get",
        lambda model, key, **kw: None if model is MessageTemplate else real_get(model, key, **kw),
    )
    template = lifecycle.get_template("tier_upgrade")
    assert (template.kind, template.enabled, template.subject) == ("tier_upgrade", False, "S")


@pytest.mark.parametrize("partners", [3, 12])
def test_new_creatives_reach_every_partner_of_the_channel_in_a_few_statements(db, program, partners):
    """One INSERT each for the threads and the messages whatever the number of partners
    told, each message to its own partner, and the count sent; a second publication of the
    same creative sends nothing."""
    from tests.statements import statements_during

    for kind in AutomaticKind:
        lifecycle.get_template(kind)
    fans = [PartnerFactory(channels=["video"], user__name=f"Fan {n}") for n in range(partners)]
    PartnerFactory(channels=["ads"])  # not this channel's
    db.session.commit()
    creatives = [lifecycle.NewCreative("Unboxing clip", "video")]
    seen, sent = statements_during(db.engine, lambda: lifecycle.creatives_published(creatives, key="clip:1"))
    assert sent == partners
    assert sum(sql.startswith("INSERT INTO threads ") for sql in seen) == 1
    assert sum(sql.startswith("INSERT INTO messages ") for sql in seen) == 1
    for fan in fans:
        [message] = system_messages(db, fan, AutomaticKind.NEW_CREATIVES)
        assert message.thread.partner_id == fan.id and "Unboxing clip" in message.body
    assert lifecycle.creatives_published(creatives, key="clip:1") == 0
