"""Accounts service: applications, reviews, sign-in, password reset, team access."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.errors import DuplicateEmail, InvalidToken, InvalidTransition, WeakPassword
from portal.models import AuditEvent, PartnerStatus, Role, User
from portal.models.types import utcnow
from portal.services import accounts
from tests.factories import PASSWORD, PartnerFactory, UserFactory


def application(**overrides) -> accounts.Application:
    data = {
        "name": "Rae Rivers",
        "email": "Rae@Example.org",
        "password": "mountain river sunrise",
        "country": "de",
        "channels": ["seo", "social", "seo"],
        "promotion_description": "I write about trail running in the Alps.",
        "website": " https://rae.example ",
    }
    data.update(overrides)
    return accounts.Application(**data)


def test_apply_creates_a_partner_waiting_for_review(db):
    partner = accounts.apply_as_partner(application())
    assert partner.status == PartnerStatus.APPLIED
    assert partner.user.email == "rae@example.org"
    assert partner.user.role == Role.PARTNER
    assert partner.user.check_password("mountain river sunrise")
    assert partner.user.password_hash != "mountain river sunrise"
    assert partner.channels == ["seo", "social"]
    assert partner.country == "DE"
    assert partner.website == "https://rae.example"
    assert len(partner.ref_code) == 8
    assert not partner.attributes
    actions = db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject_id == partner.id))
    assert "partner.applied" in list(actions)


def test_duplicate_email_is_refused_whatever_its_case(db):
    accounts.apply_as_partner(application())
    with pytest.raises(DuplicateEmail) as error:
        accounts.apply_as_partner(application(email="  RAE@example.ORG"))
    assert error.value.field == "email"


@pytest.mark.parametrize(
    "password",
    ["short", "password123", "aaaaaaaaaaaa", "abababababab", "xx-rae.rivers-xx", "my rae rivers pass"],
)
def test_weak_passwords_are_refused(db, password):
    with pytest.raises(WeakPassword) as error:
        accounts.check_password_strength(password, email="rae.rivers@example.org", name="Rae Rivers")
    assert error.value.field == "password"


def test_a_long_unrelated_password_is_accepted():
    accounts.check_password_strength("correct horse battery staple", email="rae@example.org", name="Rae")


@pytest.mark.parametrize(
    ("start", "verb", "end"),
    [
        (PartnerStatus.APPLIED, "approve", PartnerStatus.APPROVED),
        (PartnerStatus.REJECTED, "approve", PartnerStatus.APPROVED),
        (PartnerStatus.APPLIED, "reject", PartnerStatus.REJECTED),
        (PartnerStatus.APPROVED, "suspend", PartnerStatus.SUSPENDED),
        (PartnerStatus.SUSPENDED, "reinstate", PartnerStatus.APPROVED),
    ],
)
def test_allowed_review_transitions(db, start, verb, end):
    manager = UserFactory(role=Role.MANAGER)
    partner = PartnerFactory(status=start)
    action = getattr(accounts, f"{verb}_partner")
    args = (partner, manager, "Because of the tests") if verb in ("reject", "suspend") else (partner, manager)
    action(*args)
    assert partner.status == end
    assert partner.status_changed_by_id == manager.id
    assert partner.status_changed_at is not None
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == f"partner.{verb}")).one()
    assert event.actor_id == manager.id
    assert event.data["previous"] == start


@pytest.mark.parametrize(
    ("start", "verb"),
    [
        (PartnerStatus.APPROVED, "approve"),
        (PartnerStatus.APPROVED, "reject"),
        (PartnerStatus.SUSPENDED, "reject"),
        (PartnerStatus.APPLIED, "suspend"),
        (PartnerStatus.APPROVED, "reinstate"),
        (PartnerStatus.REJECTED, "suspend"),
    ],
)
def test_forbidden_review_transitions_change_nothing(db, start, verb):
    manager = UserFactory(role=Role.MANAGER)
    partner = PartnerFactory(status=start)
    action = getattr(accounts, f"{verb}_partner")
    args = (partner, manager, "reason") if verb in ("reject", "suspend") else (partner, manager)
    with pytest.raises(InvalidTransition):
        action(*args)
    assert partner.status == start


@pytest.mark.parametrize("verb", ["reject", "suspend"])
def test_rejecting_or_suspending_needs_a_reason(db, verb):
    manager = UserFactory(role=Role.MANAGER)
    partner = PartnerFactory(status=PartnerStatus.APPLIED if verb == "reject" else PartnerStatus.APPROVED)
    with pytest.raises(InvalidTransition) as error:
        getattr(accounts, f"{verb}_partner")(partner, manager, "   ")
    assert error.value.field == "reason"


def test_only_approved_partners_attribute(db):
    for status in PartnerStatus:
        partner = PartnerFactory(status=status)
        assert partner.attributes is (status == PartnerStatus.APPROVED)


def test_authenticate(db):
    user = UserFactory(email="ops@example.org")
    assert accounts.authenticate("OPS@example.org ", PASSWORD) is user
    assert user.last_login_at is not None
    assert accounts.authenticate("ops@example.org", "wrong password") is None
    assert accounts.authenticate("nobody@example.org", PASSWORD) is None
    user.active = False
    assert accounts.authenticate("ops@example.org", PASSWORD) is None


def test_reset_token_works_once(app, db):
    user = UserFactory()
    token = accounts.make_password_reset_token(user)
    assert accounts.user_for_reset_token(token) is user
    old_session_token = user.session_token
    accounts.reset_password(token, "a brand new passphrase")
    assert user.check_password("a brand new passphrase")
    assert user.session_token != old_session_token  # signed out everywhere
    with pytest.raises(InvalidToken, match="already been used"):
        accounts.user_for_reset_token(token)


def test_reset_token_expires(app, db):
    user = UserFactory()
    with time_machine.travel(utcnow() - timedelta(hours=2), tick=False):
        token = accounts.make_password_reset_token(user)
    with pytest.raises(InvalidToken, match="expired"):
        accounts.user_for_reset_token(token)


def test_invitation_links_last_days_not_an_hour(app, db):
    user = UserFactory()
    with time_machine.travel(utcnow() - timedelta(days=2), tick=False):
        invitation = accounts.make_password_reset_token(user, purpose="invite")
        reset = accounts.make_password_reset_token(user)
    assert accounts.user_for_reset_token(invitation) is user
    with pytest.raises(InvalidToken, match="reset link has expired"):
        accounts.user_for_reset_token(reset)
    with time_machine.travel(utcnow() - timedelta(days=8), tick=False):
        stale = accounts.make_password_reset_token(user, purpose="invite")
    with pytest.raises(InvalidToken, match="invitation has expired"):
        accounts.user_for_reset_token(stale)


def test_a_token_with_an_unknown_purpose_is_refused(app, db):
    user = UserFactory()
    forged = accounts._reset_serializer().dumps([user.id, accounts._password_fingerprint(user), "admin"])
    with pytest.raises(InvalidToken, match="not valid"):
        accounts.user_for_reset_token(forged)


@pytest.mark.parametrize("token", ["", "garbage", "eyJhIjoxfQ.abc.def"])
def test_tampered_reset_tokens_are_refused(app, db, token):
    with pytest.raises(InvalidToken):
        accounts.user_for_reset_token(token)


def test_reset_refuses_weak_password_and_keeps_the_old_one(app, db):
    user = UserFactory()
    token = accounts.make_password_reset_token(user)
    with pytest.raises(WeakPassword):
        accounts.reset_password(token, "short")
    assert user.check_password(PASSWORD)


def test_team_access_rules(db):
    admin = UserFactory(role=Role.ADMIN)
    manager = UserFactory(role=Role.MANAGER)
    with pytest.raises(InvalidTransition):
        accounts.set_user_active(admin, admin, False)
    with pytest.raises(InvalidTransition, match="one active admin"):
        accounts.set_user_active(manager, admin, False)
    old_token = manager.session_token
    accounts.set_user_active(admin, manager, False)
    assert not manager.active
    assert manager.session_token != old_token
    accounts.set_user_active(admin, manager, True)
    assert manager.active


def test_create_user_for_operators(db):
    user = accounts.create_user("Boss@Example.org", "Boss", "a sturdy pass phrase", Role.ADMIN)
    assert user.email == "boss@example.org"
    assert user.is_admin and user.is_operator
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1
