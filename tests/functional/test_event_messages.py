"""Every automatic message fires from its outbox event: once, in the inbox and by e-mail.

Each case calls the service an operator, the API or a job calls (never ``lifecycle``), commits,
and checks that the change left its event and nothing else yet; then the dispatcher runs twice
(a retry, or a second process) and the partner has exactly one message of that kind in the
portal and exactly one e-mail copy, received by a real SMTP server (aiosmtpd). The wake-up is
time-driven (the daily job, tests/unit/test_automatic_messages.py), not an event.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.extensions import db as _db
from portal.models import (
    AutomaticKind,
    Campaign,
    Message,
    OutboxEvent,
    PartnerStatus,
    Role,
    Sender,
    Thread,
    Tier,
)
from portal.services import accounts, events, outbox, payouts, rewards, tracking
from portal.services.payouts import PayoutDetails, save_payout_account
from portal.services.tracking import ConversionInput
from tests.creative_support import make_banner
from tests.factories import PartnerFactory, UserFactory, earn

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # after the 15 Nov payout date of a monthly program


def sale(program, partner, transaction_id: str):
    data = ConversionInput(transaction_id, 10_000, program.currency, ref=partner.ref_code)
    conversion, _ = tracking.record_conversion(program, data, {"transaction_id": transaction_id})
    return conversion


def approved_payout_item(program, manager):
    """A partner with PayPal details, paid-out earnings settled into an approved batch."""
    program.payout_schedule, program.payout_day, program.minimum_payout_minor = "monthly", 15, 5000
    partner = PartnerFactory()
    save_payout_account(
        partner, PayoutDetails(method="paypal", paypal_email=f"pay{partner.id}@example.org"), partner.user
    )
    earn(partner, 6000, at=datetime(2026, 11, 10, tzinfo=UTC))
    batch, _ = payouts.settle(program, date(2026, 11, 20))
    payouts.approve_batch(batch, manager)
    return partner, batch.items[0]


def _welcome(program, manager):
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    accounts.approve_partner(partner, manager)
    return partner, "partner.approved", ["Test Outdoor"]


def _first_conversion(program, manager):
    partner = PartnerFactory()
    sale(program, partner, "first-1")
    return partner, "conversion.created", ["first\\-1"]


def _conversion_rejected(program, manager):
    partner = PartnerFactory()
    conversion = sale(program, partner, "qa-1")
    db_commit_and_dispatch()  # the first-sale message goes out before the rejection
    tracking.reject_conversion(conversion, manager, "test_order", "Placed by QA.")
    return partner, "conversion.rejected", ["Placed by QA\\."]


def _tier_upgrade(program, manager):
    partner = PartnerFactory()
    gold = Tier(
        name="Gold",
        rank=1,
        rate_type="percent",
        rate_percent_bp=2000,
        rate_flat_minor=0,
        threshold_metric="conversions",
        threshold_value=5,
        period="rolling_30",
    )
    _db.session.add(gold)
    _db.session.flush()
    rewards.set_tier(program, partner, gold, reason="manual", since=NOW, actor=manager)
    return partner, "partner.tier_changed", ["Gold"]


def _payout_sent(program, manager):
    partner, item = approved_payout_item(program, manager)
    payouts.mark_item_paid(item, manager, "PP-42", NOW.date())
    return partner, "payout.paid", ["PP\\-42", "$60\\.00"]


def _payout_failed(program, manager):
    partner, item = approved_payout_item(program, manager)
    payouts.mark_item_failed(item, manager, "IBAN rejected")
    return partner, "payout.failed", ["IBAN rejected", "$60\\.00"]


def _new_creatives(program, manager):
    partner = PartnerFactory(channels=["video"])
    make_banner(manager, program, name="Winter clip", channels=("video",))
    return partner, "creative.published", ["Winter clip"]


def _campaign_starting(program, manager):
    partner = PartnerFactory()
    _db.session.add(
        Campaign(
            name="Snow days",
            starts_at=NOW + timedelta(hours=20),
            ends_at=NOW + timedelta(days=10),
            rate_type="percent",
            rate_percent_bp=2500,
            rate_flat_minor=0,
        )
    )
    _db.session.flush()
    assert rewards.announce_starting_campaigns(program, now=NOW) == 1
    return partner, "campaign.started", ["Snow days"]


TRIGGERS = {
    AutomaticKind.WELCOME: _welcome,
    AutomaticKind.FIRST_CONVERSION: _first_conversion,
    AutomaticKind.CONVERSION_REJECTED: _conversion_rejected,
    AutomaticKind.TIER_UPGRADE: _tier_upgrade,
    AutomaticKind.PAYOUT_SENT: _payout_sent,
    AutomaticKind.PAYOUT_FAILED: _payout_failed,
    AutomaticKind.NEW_CREATIVES: _new_creatives,
    AutomaticKind.CAMPAIGN_STARTING: _campaign_starting,
}


def db_commit_and_dispatch() -> None:
    _db.session.commit()
    outbox.dispatch()


def messages_of(db, partner, kind: str) -> list[Message]:
    return list(
        db.session.scalars(
            sa.select(Message)
            .join(Thread)
            .where(
                Thread.partner_id == partner.id,
                Thread.automatic_kind == kind,
                Message.sender == Sender.SYSTEM,
            )
        )
    )


def test_every_kind_but_the_time_driven_wake_up_has_a_case():
    assert set(AutomaticKind) - set(TRIGGERS) == {AutomaticKind.WAKE_UP}


@pytest.mark.smtp
@pytest.mark.parametrize("kind", list(TRIGGERS), ids=str)
def test_each_automatic_message_fires_from_its_event_once_in_the_inbox_and_by_email(
    app, db, program, mail_outbox, kind
):
    with time_machine.travel(NOW, tick=False):
        manager = UserFactory(role=Role.MANAGER)
        partner, event_type, says = TRIGGERS[kind](program, manager)
        db.session.commit()
        # The change committed its event; the message waits for the dispatcher.
        assert (
            db.session.scalar(
                sa.select(sa.func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.type == event_type)
                .where(sa.or_(OutboxEvent.partner_id == partner.id, OutboxEvent.partner_id.is_(None)))
            )
            >= 1
        )
        assert messages_of(db, partner, kind) == []

        outbox.dispatch()
        outbox.dispatch()  # a second pass (a retry, another process) adds nothing

        [message] = messages_of(db, partner, kind)
        for words in says:
            assert words in message.body or words.replace("\\", "") in message.thread.subject, (
                words,
                message.body,
            )
        emails = [
            email
            for email in mail_outbox
            if email["To"] == partner.user.email and email["Subject"] == message.thread.subject
        ]
        assert len(emails) == 1, [(e["To"], e["Subject"]) for e in mail_outbox]

        # Every event written on the way carries the keys of its documented example (README, OpenAPI).
        for event in db.session.scalars(sa.select(OutboxEvent)):
            _description, example = events.TYPES[event.type]
            assert set(event.data) == set(example), (event.type, event.data)
