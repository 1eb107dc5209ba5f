"""Payout details are guarded: the password is asked again, the partner is e-mailed (masked),
the change is audited, and a batch built within 48 h of a changed destination holds the item
until an operator releases it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.errors import DomainError
from portal.models import (
    AuditEvent,
    BatchStatus,
    HoldReason,
    ItemStatus,
    OutboundEmail,
    PayoutAccount,
    PayoutLine,
    Role,
)
from portal.services import accounts, payouts
from portal.services.payouts import PayoutDetails, save_payout_account, settle
from tests.factories import PASSWORD, PartnerFactory, ProgramFactory, UserFactory, earn

pytestmark = pytest.mark.postgres

CUTOFF = datetime(2026, 11, 15, tzinfo=UTC)  # payout day 15, program in UTC
AS_OF = date(2026, 11, 16)


@pytest.fixture
def program(db):
    program = ProgramFactory(
        currency="USD", timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=5000
    )
    db.session.flush()
    return program


@pytest.fixture
def mail_on(app):
    """SMTP "set up" so the outbox is written (nothing listens: the rows stay unsent)."""
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=9)


def paypal(address: str) -> PayoutDetails:
    return PayoutDetails(method="paypal", paypal_email=address)


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def actions(partner_id: int) -> list[str]:
    return list(
        db_session().scalars(
            sa.select(AuditEvent.action)
            .where(AuditEvent.subject_type == "partner", AuditEvent.subject_id == partner_id)
            .order_by(AuditEvent.id)
        )
    )


def db_session():
    from portal.extensions import db

    return db.session


# --- the password is asked again ------------------------------------------------------------


def test_confirm_identity_checks_the_current_password(db):
    user = UserFactory(role=Role.PARTNER)
    accounts.confirm_identity(user, PASSWORD)
    for wrong in (None, "", "not the password"):
        with pytest.raises(DomainError) as refused:
            accounts.confirm_identity(user, wrong)
        assert refused.value.field == "current_password"


def test_with_two_factor_on_the_code_is_asked_too(client, db, program, login_as, mail_on):
    import pyotp

    from portal.services import two_factor

    user = login_as(Role.PARTNER)
    save_payout_account(user.partner, paypal("mine@example.org"), user)
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with at(now):
        secret = two_factor.start_enrolment(user)
        two_factor.confirm_enrolment(user, pyotp.TOTP(secret).at(now - timedelta(seconds=30)), now)
        db.session.commit()
        with client.session_transaction() as session:  # enrolling ended the other sessions
            session["_user_id"] = user.get_id()
        form = {"method": "paypal", "paypal_email": "new@example.org", "current_password": PASSWORD}
        refusals = (("", "Enter the code from your authenticator app."), ("000000", "does not match"))
        for code, message in refusals:
            response = client.post("/partner/payout-details", data={**form, "code": code})
            assert response.status_code == 422
            assert message in response.get_data(as_text=True)
            assert payouts.account_of(user.partner).paypal_email == "mine@example.org"
        response = client.post("/partner/payout-details", data={**form, "code": pyotp.TOTP(secret).at(now)})
    assert response.status_code == 302
    db.session.expire_all()
    assert payouts.account_of(user.partner).paypal_email == "new@example.org"


@pytest.mark.parametrize(
    ("password", "message"),
    [("", "Enter your current password"), ("guess", "That is not your current password.")],
)
def test_a_wrong_password_is_a_field_error_and_saves_nothing(
    client, db, program, login_as, mail_on, password, message
):
    user = login_as(Role.PARTNER)
    save_payout_account(user.partner, paypal("mine@example.org"), user)
    db.session.commit()
    before = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    emails = db.session.scalar(sa.select(sa.func.count()).select_from(OutboundEmail))
    response = client.post(
        "/partner/payout-details",
        data={"method": "paypal", "paypal_email": "thief@example.org", "current_password": password},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in page
    assert 'id="current_password-error"' in page
    assert 'value="guess"' not in page  # a password is never sent back
    assert db.session.scalar(sa.select(PayoutAccount.paypal_email)) == "mine@example.org"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboundEmail)) == emails


def test_detail_errors_come_before_the_password(client, db, program, login_as):
    login_as(Role.PARTNER)
    response = client.post("/partner/payout-details", data={"method": "paypal", "paypal_email": "nope"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Enter the e-mail address of your PayPal account." in page
    assert 'id="current_password-error"' not in page


def test_the_right_password_saves_audits_and_emails_the_partner_masked(
    client, db, program, login_as, mail_on
):
    user = login_as(Role.PARTNER, user__email="pat@example.org")
    save_payout_account(user.partner, paypal("jonathan@oldmail.example"), user)
    db.session.commit()
    response = client.post(
        "/partner/payout-details",
        data={
            "method": "bank",
            "account_holder": "Pat Partner",
            "iban": "DE89 3704 0044 0532 0130 00",
            "current_password": PASSWORD,
        },
    )
    assert response.status_code == 302
    account = db.session.scalar(sa.select(PayoutAccount))
    assert (account.method, account.iban) == ("bank", "DE89370400440532013000")
    assert actions(user.partner.id)[-2:] == ["payout.details_changed", payouts.DESTINATION_CHANGED]
    notice = db.session.scalars(sa.select(OutboundEmail).order_by(OutboundEmail.id.desc())).first()
    assert notice.to_address == "pat@example.org"
    assert notice.kind == "payout_details_changed"
    assert notice.unsubscribe_url == ""  # a security notice cannot be switched off
    assert "j•••@o•••.example" in notice.text  # before
    assert "DE•••3000" in notice.text  # now
    assert "jonathan" not in notice.text and "DE89370400440532013000" not in notice.text
    assert "held until the program team has checked it" in notice.text


def test_the_notice_goes_out_without_an_unsubscribe_header(client, db, program, login_as, mail_outbox):
    user = login_as(Role.PARTNER, user__email="pat@example.org")
    save_payout_account(user.partner, paypal("old@example.org"), user)
    db.session.commit()
    mail_outbox.clear()
    client.post(
        "/partner/payout-details",
        data={"method": "paypal", "paypal_email": "new@example.org", "current_password": PASSWORD},
    )
    # The first setup's notice and this change's: both to the partner, neither unsubscribable.
    notices = [m for m in mail_outbox if m["Subject"] == "Your payout details were changed"]
    assert [m["To"] for m in notices] == ["pat@example.org", "pat@example.org"]
    assert all(m["List-Unsubscribe"] is None for m in notices)
    change = [m.get_content() for m in notices if "Now: PayPal n•••@e•••.org" in m.get_content()]
    assert len(change) == 1 and "Before: PayPal o•••@e•••.org" in change[0]


def test_a_first_setup_is_emailed_but_not_held_and_a_tax_change_is_neither(db, program, mail_on):
    partner = PartnerFactory()
    save_payout_account(partner, paypal("first@example.org"), partner.user)
    first = db.session.scalars(sa.select(OutboundEmail)).all()
    assert len(first) == 1 and "none" in first[0].text and "held" not in first[0].text
    save_payout_account(
        partner, PayoutDetails(method="paypal", paypal_email="first@example.org", tax_id="X1"), partner.user
    )
    assert len(db.session.scalars(sa.select(OutboundEmail)).all()) == 1
    assert payouts.DESTINATION_CHANGED not in actions(partner.id)


# --- the hold -------------------------------------------------------------------------------


def _partner_paid_by_paypal(address: str, changed_at: datetime | None):
    """A partner with a balance whose PayPal address was set long ago and, when
    ``changed_at``, replaced then."""
    partner = PartnerFactory()
    with at(CUTOFF - timedelta(days=60)):
        save_payout_account(partner, paypal(address), partner.user)
    earn(partner, 6000, at=CUTOFF - timedelta(days=20))
    if changed_at is not None:
        with at(changed_at):
            save_payout_account(partner, paypal("new-" + address), partner.user)
    return partner


@pytest.mark.parametrize(
    ("changed_at", "held"),
    [
        (None, False),
        (CUTOFF - timedelta(hours=49), False),
        (CUTOFF - timedelta(hours=47), True),
        (CUTOFF + timedelta(hours=10), True),  # after the cutoff, before the batch
    ],
)
def test_a_batch_built_within_48_hours_of_a_change_holds_the_item(db, program, changed_at, held):
    partner = _partner_paid_by_paypal("pat@example.org", changed_at)
    with at(CUTOFF + timedelta(hours=12)):
        batch, _ = settle(program, AS_OF)
    item = batch.items[0]
    if held:
        assert (item.status, item.hold_reason) == (ItemStatus.HELD, HoldReason.DETAILS_CHANGED)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutLine)) == 0
        assert payouts.hold_of(partner) == HoldReason.DETAILS_CHANGED
        held_events = db.session.scalars(
            sa.select(AuditEvent).where(
                AuditEvent.action == "payout.item_held", AuditEvent.subject_id == item.id
            )
        ).all()
        assert [e.data["reason"] for e in held_events] == ["details_changed"]
    else:
        assert (item.status, item.hold_reason) == (ItemStatus.PENDING, None)


def test_a_withdrawal_right_after_a_change_is_held(db, program):
    program.allow_withdrawals = True
    partner = _partner_paid_by_paypal("pat@example.org", CUTOFF)
    with at(CUTOFF + timedelta(hours=1)):
        batch = payouts.request_withdrawal(program, partner)
    assert batch.items[0].hold_reason == HoldReason.DETAILS_CHANGED


def test_the_operator_releases_a_held_item_to_the_new_destination(client, db, program, login_as):
    partner = _partner_paid_by_paypal("pat@example.org", CUTOFF - timedelta(hours=2))
    with at(CUTOFF + timedelta(hours=12)):
        batch, _ = settle(program, AS_OF)
    item = batch.items[0]
    manager = login_as(Role.MANAGER)
    page = client.get(f"/admin/payouts/{batch.id}").get_data(as_text=True)
    assert "payout details changed within 48 hours of this batch" in page
    assert f"/admin/payouts/{batch.id}/items/{item.id}/release" in page

    response = client.post(f"/admin/payouts/{batch.id}/items/{item.id}/release")
    assert response.status_code == 302
    db.session.refresh(item)
    assert (item.status, item.hold_reason, item.amount_minor) == (ItemStatus.PENDING, None, 6000)
    assert item.destination == {"paypal_email": "new-pat@example.org"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutLine)) == 1
    released = db.session.scalars(
        sa.select(AuditEvent).where(
            AuditEvent.action == "payout.item_released", AuditEvent.subject_id == item.id
        )
    ).one()
    assert released.actor_id == manager.id and released.data["reason"] == "details_changed"
    assert payouts.hold_of(partner) is None
    # Twice: nothing more.
    client.post(f"/admin/payouts/{batch.id}/items/{item.id}/release")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutLine)) == 1


def test_no_release_once_the_batch_is_approved(db, program):
    _partner_paid_by_paypal("pat@example.org", CUTOFF)
    # A second partner with nothing held: the batch has a payment to make, so approving it
    # leaves it approved (a batch whose every payment is held closes when approved).
    _partner_paid_by_paypal("kim@example.org", None)
    manager = UserFactory(role=Role.MANAGER)
    with at(CUTOFF + timedelta(hours=12)):
        batch, _ = settle(program, AS_OF)
    payouts.approve_batch(batch, manager)
    assert batch.status == BatchStatus.APPROVED
    (held,) = [item for item in batch.items if item.status == ItemStatus.HELD]
    with pytest.raises(DomainError):
        payouts.release_details_hold(held, manager, program)
    assert held.status == ItemStatus.HELD


def test_a_suspension_hold_is_not_released_here(db, program):
    partner = _partner_paid_by_paypal("pat@example.org", None)
    manager = UserFactory(role=Role.MANAGER)
    accounts.suspend_partner(partner, manager, "checking")
    with at(CUTOFF + timedelta(hours=12)):
        batch, _ = settle(program, AS_OF)
    with pytest.raises(DomainError):
        payouts.release_details_hold(batch.items[0], manager, program)
