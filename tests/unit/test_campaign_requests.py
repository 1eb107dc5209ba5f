"""The custom campaign request state machine: every step, every refusal, nothing half-saved."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from portal.errors import DomainError, InvalidTransition
from portal.extensions import socketio
from portal.models import (
    AuditEvent,
    Campaign,
    CampaignAudience,
    CampaignRequest,
    Link,
    Message,
    PartnerStatus,
    PartnerTier,
    RequestStatus,
    Role,
    Sender,
    Thread,
    Tier,
)
from portal.services import campaign_requests as requests
from portal.services.partners import set_partner_tags
from tests.factories import PartnerFactory, UserFactory

# The status moves by compare-and-set; it must behave the same on both databases.
pytestmark = pytest.mark.postgres


@pytest.fixture
def manager(db):
    return UserFactory(role=Role.MANAGER)


@pytest.fixture
def top_partner(db, program, manager):
    partner = PartnerFactory()
    set_partner_tags(partner, manager, [program.top_partner_tag])
    return partner


def ask(partner, program, **changes) -> CampaignRequest:
    data = {
        "name": "Autumn tents on Fell Notes",
        "landing_url": "https://shop.example/tents/autumn",
        "desired_percent_bp": 1500,
        "expected_monthly_conversions": 40,
        "note": "A long review plus a newsletter feature.",
    } | changes
    return requests.submit_request(partner, program, requests.RequestInput(**data))


def counts(db) -> tuple[int, int, int, int]:
    return tuple(
        db.session.scalar(sa.select(sa.func.count()).select_from(model))
        for model in (CampaignRequest, Thread, Campaign, Link)
    )


def thread_bodies(request: CampaignRequest) -> list[tuple[str, str]]:
    return [(m.sender, m.body) for m in request.thread.messages]


# --- who may ask, and what ---------------------------------------------------------------------


def test_a_top_partner_asks_and_the_request_opens_one_thread(db, program, top_partner):
    request = ask(top_partner, program)
    assert request.status == RequestStatus.REQUESTED
    assert (request.desired_type, request.desired_percent_bp, request.expected_monthly_conversions) == (
        "percent",
        1500,
        40,
    )
    thread = request.thread
    assert thread.partner_id == top_partner.id
    assert thread.subject == "Custom campaign request: Autumn tents on Fell Notes"
    [(sender, body)] = thread_bodies(request)
    assert sender == Sender.PARTNER
    assert "https://shop.example/tents/autumn" in body and "15% of each sale" in body and "40" in body


def test_a_tier_that_allows_it_makes_a_partner_eligible(db, program):
    partner = PartnerFactory()
    assert not requests.can_request(partner, program)
    gold = Tier(name="Gold", rank=3, rate_percent_bp=1500, can_request_campaigns=True)
    silver = Tier(name="Silver", rank=2, rate_percent_bp=1200, can_request_campaigns=False)
    db.session.add_all([gold, silver])
    db.session.flush()
    db.session.add(PartnerTier(partner_id=partner.id, tier_id=silver.id))
    db.session.flush()
    assert not requests.can_request(partner, program)
    db.session.execute(sa.update(PartnerTier).values(tier_id=gold.id))
    db.session.expire_all()
    assert requests.can_request(partner, program)
    assert ask(partner, program).status == RequestStatus.REQUESTED


@pytest.mark.parametrize(
    ("who", "changes", "field", "message"),
    [
        ("plain", {}, None, "top partners"),
        ("suspended", {}, None, "suspended"),
        (
            "top",
            {"landing_url": "https://evil.example/tents"},
            "landing_url",
            "program's sites: shop.example",
        ),
        ("top", {"landing_url": "javascript:alert(1)"}, "landing_url", "program's sites"),
        ("top", {"desired_percent_bp": 10001}, "desired_rate", "over 100 %"),
        ("top", {"desired_percent_bp": 0}, "desired_rate", "more than 0 %"),
        ("top", {"desired_percent_bp": None}, "desired_rate", "Enter a rate"),
        ("top", {"name": "   "}, "name", "Name the campaign"),
        ("top", {"expected_monthly_conversions": -1}, "expected_monthly_conversions", "from 0 to"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_saved(db, program, manager, who, changes, field, message):
    partner = PartnerFactory(status=PartnerStatus.SUSPENDED if who == "suspended" else PartnerStatus.APPROVED)
    if who != "plain":
        set_partner_tags(partner, manager, [program.top_partner_tag])
    before = counts(db)
    with pytest.raises(DomainError) as refused:
        ask(partner, program, **changes)
    assert refused.value.field == field
    assert message in refused.value.message
    assert counts(db) == before


def test_a_partner_can_keep_only_a_few_requests_open(db, program, top_partner):
    for n in range(requests.MAX_OPEN_PER_PARTNER):
        ask(top_partner, program, name=f"Campaign {n}")
    with pytest.raises(DomainError, match="open requests"):
        ask(top_partner, program, name="One too many")


# --- the team's answers ----------------------------------------------------------------------


def test_approving_makes_the_private_campaign_and_its_link_at_the_rate_asked(
    db, program, top_partner, manager
):
    request = ask(top_partner, program)
    requests.approve_request(request, manager, program)
    assert request.status == RequestStatus.APPROVED
    assert request.decided_by_id == manager.id and request.decided_at is not None
    campaign = request.campaign
    assert campaign.audience == CampaignAudience.PARTNERS
    assert [p.id for p in campaign.partners] == [top_partner.id]
    assert (campaign.rate_type, campaign.rate_percent_bp) == ("percent", 1500)
    assert campaign.links_only and campaign.landing_url == request.landing_url
    assert campaign.starts_at < campaign.ends_at
    link = requests.request_link(request)
    assert (link.partner_id, link.campaign_id, link.destination_url) == (
        top_partner.id,
        campaign.id,
        "https://shop.example/tents/autumn",
    )
    sender, body = thread_bodies(request)[-1]
    assert sender == Sender.TEAM and body.startswith("Approved:") and "15% of each sale" in body
    audit = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "campaign_request.approved")
    ).one()
    assert (audit.actor_id, audit.subject_id) == (manager.id, top_partner.id)
    assert audit.data["campaign_id"] == campaign.id and audit.data["rate_percent_bp"] == 1500


def test_approving_twice_is_refused_and_makes_nothing_more(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.approve_request(request, manager, program)
    before, messages = counts(db), len(request.thread.messages)
    with pytest.raises(InvalidTransition, match="already approved"):
        requests.approve_request(request, manager, program)
    assert counts(db) == before
    db.session.refresh(request.thread)
    assert len(request.thread.messages) == messages


def test_a_stale_copy_cannot_approve_what_another_operator_declined(db, program, top_partner, manager):
    request = ask(top_partner, program)
    db.session.execute(
        sa.update(CampaignRequest).values(
            status=RequestStatus.DECLINED, declined_by="team", decline_reason="No"
        )
    )
    # ``request`` in memory still says "requested": the conditional update is what decides.
    with pytest.raises(InvalidTransition, match="was declined"):
        requests.approve_request(request, manager, program)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


def test_counter_offer_then_the_partner_accepts_at_the_offered_rate(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.counter_offer(request, manager, program, 1200, "12% for the first year.")
    assert request.status == RequestStatus.COUNTERED
    assert (request.counter_type, request.counter_percent_bp, request.counter_note) == (
        "percent",
        1200,
        "12% for the first year.",
    )
    sender, body = thread_bodies(request)[-1]
    assert sender == Sender.TEAM and "12% of each sale" in body and "you asked for 15% of each sale" in body

    requests.accept_offer(request, top_partner.user, program)
    assert request.status == RequestStatus.APPROVED
    assert (request.campaign.rate_type, request.campaign.rate_percent_bp) == ("percent", 1200)
    assert requests.request_link(request).campaign_id == request.campaign_id
    assert request.campaign.created_by_id == manager.id
    sender, body = thread_bodies(request)[-1]
    assert sender == Sender.PARTNER and "accept" in body
    audit = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "campaign_request.approved")
    ).one()
    assert audit.actor_id == top_partner.user.id and audit.data["accepted_counter_offer_of"] == manager.id
    # the whole conversation is one thread
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 1


def test_the_partner_declines_the_counter_offer(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.counter_offer(request, manager, program, 1000, None)
    requests.decline_offer(request, top_partner.user, program, "Too low for the work.")
    assert (request.status, request.declined_by) == (RequestStatus.DECLINED, "partner")
    assert requests.status_label(request) == "closed — you declined the counter-offer"
    sender, body = thread_bodies(request)[-1]
    assert sender == Sender.PARTNER and "decline" in body and "Too low for the work." in body
    with pytest.raises(InvalidTransition, match="counter-offer on this request was declined"):
        requests.accept_offer(request, top_partner.user, program)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


def test_the_team_declines_with_a_reason(db, program, top_partner, manager):
    request = ask(top_partner, program)
    with pytest.raises(DomainError, match="Say why") as refused:
        requests.decline_request(request, manager, "  ")
    assert refused.value.field == "reason"
    assert request.status == RequestStatus.REQUESTED
    requests.decline_request(request, manager, "We run no tent campaigns this autumn.")
    assert (request.status, request.declined_by, request.decline_reason) == (
        RequestStatus.DECLINED,
        "team",
        "We run no tent campaigns this autumn.",
    )
    assert thread_bodies(request)[-1] == (Sender.TEAM, "Declined: We run no tent campaigns this autumn.")
    for step in (
        lambda: requests.approve_request(request, manager, program),
        lambda: requests.counter_offer(request, manager, program, 900, None),
        lambda: requests.accept_offer(request, top_partner.user, program),
        lambda: requests.decline_offer(request, top_partner.user, program),
        lambda: requests.withdraw_request(request, top_partner.user),
    ):
        with pytest.raises(InvalidTransition, match="was declined"):
            step()
    assert request.status == RequestStatus.DECLINED


def test_the_team_may_withdraw_its_counter_offer_by_declining(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.counter_offer(request, manager, program, 1000, None)
    requests.decline_request(request, manager, "Budget is gone, sorry.")
    assert (request.status, request.declined_by) == (RequestStatus.DECLINED, "team")


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        (10001, "over 100 %"),
        (0, "more than 0 %"),
        (None, "Enter a rate"),
        (1500, "approve the request instead"),
    ],
)
def test_bad_counter_offers_are_refused(db, program, top_partner, manager, rate, message):
    request = ask(top_partner, program)
    with pytest.raises(DomainError, match=message) as refused:
        requests.counter_offer(request, manager, program, rate, None)
    assert refused.value.field == "rate"
    assert request.status == RequestStatus.REQUESTED and request.counter_type is None


def test_only_one_counter_offer_and_no_answer_before_it(db, program, top_partner, manager):
    request = ask(top_partner, program)
    with pytest.raises(InvalidTransition, match="no offer to answer yet"):
        requests.accept_offer(request, top_partner.user, program)
    with pytest.raises(InvalidTransition, match="no offer to answer yet"):
        requests.decline_offer(request, top_partner.user, program)
    requests.counter_offer(request, manager, program, 1000, None)
    with pytest.raises(InvalidTransition, match="waiting for the partner's answer"):
        requests.counter_offer(request, manager, program, 1100, None)
    with pytest.raises(InvalidTransition, match="waiting for the partner's answer"):
        requests.approve_request(request, manager, program)


def test_another_partner_cannot_answer_the_offer(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.counter_offer(request, manager, program, 1000, None)
    stranger = PartnerFactory()
    with pytest.raises(DomainError, match="not your request"):
        requests.accept_offer(request, stranger.user, program)
    with pytest.raises(DomainError, match="not your request"):
        requests.decline_offer(request, stranger.user, program)
    assert request.status == RequestStatus.COUNTERED


def test_no_campaign_for_a_suspended_partner(db, program, top_partner, manager):
    request = ask(top_partner, program)
    top_partner.status = PartnerStatus.SUSPENDED
    with pytest.raises(DomainError, match="not approved at the moment"):
        requests.approve_request(request, manager, program)
    assert request.status == RequestStatus.REQUESTED
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


def test_a_suspended_partner_cannot_accept(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.counter_offer(request, manager, program, 1000, None)
    top_partner.status = PartnerStatus.SUSPENDED
    with pytest.raises(DomainError, match="suspended"):
        requests.accept_offer(request, top_partner.user, program)
    assert request.status == RequestStatus.COUNTERED


def test_the_partner_withdraws_an_open_request(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.withdraw_request(request, top_partner.user)
    assert request.status == RequestStatus.WITHDRAWN
    with pytest.raises(InvalidTransition, match="withdrawn"):
        requests.approve_request(request, manager, program)


# --- live: each step tells the other side, after commit ------------------------------------------


def test_each_step_reaches_the_partner_and_the_operators_after_commit(
    app, db, program, top_partner, manager, monkeypatch
):
    sent: list[tuple[str, object, dict]] = []
    monkeypatch.setattr(socketio, "emit", lambda name, payload, to=None: sent.append((name, to, payload)))
    request = ask(top_partner, program)
    assert sent == []  # nothing before the commit
    db.session.commit()
    room = f"partner:{top_partner.id}"
    assert (
        "campaign_request",
        room,
        {"request": request.id, "status": "requested", "thread": request.thread_id},
    ) in sent
    assert (
        "campaign_request",
        "operators",
        {"request": request.id, "status": "requested", "thread": request.thread_id},
    ) in sent
    assert any(name == "message" and to == "operators" for name, to, _ in sent)

    sent.clear()
    requests.counter_offer(request, manager, program, 1200, None)
    db.session.commit()
    assert (
        "campaign_request",
        room,
        {"request": request.id, "status": "countered", "thread": request.thread_id},
    ) in sent
    assert ("message", room, {"thread": request.thread_id, "message": request.thread.messages[-1].id}) in sent

    sent.clear()
    with pytest.raises(InvalidTransition):
        requests.approve_request(request, manager, program)
    db.session.rollback()
    assert sent == []


def test_team_messages_are_unread_for_the_partner(db, program, top_partner, manager):
    request = ask(top_partner, program)
    requests.counter_offer(request, manager, program, 1200, None)
    unread = db.session.scalars(
        sa.select(Message).where(Message.thread_id == request.thread_id, Message.sender == Sender.TEAM)
    ).all()
    assert len(unread) == 1 and unread[0].read_at is None


def test_a_top_partner_may_hold_several_custom_campaigns_at_once(db, program, top_partner, manager):
    first = ask(top_partner, program, name="Tents")
    second = ask(top_partner, program, name="Boots", landing_url="https://shop.example/boots")
    requests.approve_request(first, manager, program)
    requests.approve_request(second, manager, program)
    assert {first.campaign.rate_percent_bp, second.campaign.rate_percent_bp} == {1500}
    assert requests.request_link(first).id != requests.request_link(second).id


def test_approval_rechecks_the_landing_page_against_todays_domains(db, program, top_partner, manager):
    request = ask(top_partner, program)
    db.session.commit()
    program.allowed_domains = ["other-shop.example"]
    db.session.flush()
    with pytest.raises(DomainError, match=r"allowed domains: other-shop\.example"):
        requests.approve_request(request, manager, program)
    db.session.rollback()
    assert db.session.get(CampaignRequest, request.id).status == RequestStatus.REQUESTED
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0
