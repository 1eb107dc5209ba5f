"""Custom campaign link requests: the top-partner flow, one inbox thread per request.

States (``RequestStatus``)::

    requested ──approve──► approved            (the private campaign and its link at the rate asked)
        │  └──decline──► declined (by the team, with a reason)
        └──counter──► countered ──accept──► approved   (at the offered rate)
                          │  └──decline──► declined (by the partner)
                          └──decline──► declined (the team withdraws its offer, with a reason)
    requested / countered ──withdraw──► withdrawn (by the partner)

Every step posts a message in the request's thread (the inbox tells the other
side live, and e-mails the partner a copy of the team's messages) and emits
``campaign_request`` to the partner and to the operators after commit. A step
from the wrong state is refused and changes nothing: the status moves with a
conditional UPDATE, so two operators approving at once cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.orm import joinedload, selectinload

from portal import realtime, urlcheck
from portal.errors import DomainError, InvalidTransition
from portal.extensions import db
from portal.models import (
    Campaign,
    CampaignAudience,
    CampaignRequest,
    CampaignReward,
    Click,
    Conversion,
    Link,
    Partner,
    Program,
    RateType,
    RequestStatus,
    User,
)
from portal.models.types import utcnow
from portal.services import events, inbox, reward_rules, rewards
from portal.services.audit import record_event

MAX_NAME = 120
MAX_TEXT = 2000
MAX_EXPECTED = 1_000_000
MAX_OPEN_PER_PARTNER = 5
FULL_RATE_BP = 10_000  # 100 %
# A private campaign from a request runs this many months; the console can change its dates later.
CAMPAIGN_MONTHS = 12

OPEN_STATUSES = frozenset({RequestStatus.REQUESTED, RequestStatus.COUNTERED})


@dataclass
class RequestInput:
    """What the partner asks for; the rate in hundredths of a percent (1250 = 12.5 %)."""

    name: str
    landing_url: str
    desired_percent_bp: int | None
    expected_monthly_conversions: int | None
    note: str | None = None


# --- words ----------------------------------------------------------------------------------


def status_label(request: CampaignRequest, team: bool = False) -> str:
    """The request's state in words, as the partner reads it (or, with ``team``, as the team does)."""
    status = request.status
    if status == RequestStatus.DECLINED and request.declined_by == "partner":
        words = (
            _("closed — you declined the counter-offer"),
            _("closed — the partner declined the counter-offer"),
        )
    else:
        words = {
            RequestStatus.REQUESTED: (_("waiting for the team"), _("new — waiting for the team")),
            RequestStatus.COUNTERED: (
                _("counter-offer — waiting for your answer"),
                _("counter-offer sent — waiting for the partner"),
            ),
            RequestStatus.ACCEPTED: (_("accepted"), _("accepted")),
            RequestStatus.APPROVED: (_("approved — your campaign link is ready"), _("approved")),
            RequestStatus.DECLINED: (_("declined by the team"), _("declined")),
            RequestStatus.WITHDRAWN: (_("withdrawn by you"), _("withdrawn by the partner")),
        }.get(status, (status, status))
    return words[1] if team else words[0]


# Icon and tone of each state; the words above always stand beside them.
STATUS_ICONS = {
    RequestStatus.REQUESTED: ("◷", "pending"),
    RequestStatus.COUNTERED: ("⇄", "warn"),
    RequestStatus.ACCEPTED: ("✔", "good"),
    RequestStatus.APPROVED: ("✔", "good"),
    RequestStatus.DECLINED: ("✖", "bad"),
    RequestStatus.WITHDRAWN: ("↩", "neutral"),
}


def badge_parts(request: CampaignRequest, team: bool = False) -> tuple[str, str, str]:
    """(icon, tone, words) of the request's state for a badge."""
    icon, tone = STATUS_ICONS.get(request.status, ("•", "neutral"))
    return icon, tone, status_label(request, team)


def format_rate(rate_type: str | None, percent_bp: int | None, flat_minor: int | None, currency: str) -> str:
    """A rate in words: "12.5% of each sale" or "$5.00 per sale"."""
    return rewards.Rate(rate_type or RateType.PERCENT, percent_bp or 0, flat_minor or 0).words(currency)


def desired_rate(request: CampaignRequest, currency: str) -> str:
    return format_rate(request.desired_type, request.desired_percent_bp, request.desired_flat_minor, currency)


def offered_rate(request: CampaignRequest, currency: str) -> str | None:
    if request.counter_type is None:
        return None
    return format_rate(request.counter_type, request.counter_percent_bp, request.counter_flat_minor, currency)


def agreed_rate(request: CampaignRequest, currency: str) -> str | None:
    """What the approved request's campaign pays (read from the campaign, which is the truth)."""
    campaign = request.campaign
    if campaign is None:
        return None
    return format_rate(campaign.rate_type, campaign.rate_percent_bp, campaign.rate_flat_minor, currency)


def campaign_end(request: CampaignRequest, program: Program) -> str | None:
    """The last moment of the request's campaign, in the program's time zone, in words."""
    if request.campaign is None:
        return None
    return _local_time(request.campaign.ends_at, program)


# --- checks ---------------------------------------------------------------------------------


def check_percent(rate_bp: int | None, field: str) -> int:
    if rate_bp is None:
        raise DomainError(_("Enter a rate in percent, e.g. 12.5."), field)
    if rate_bp > FULL_RATE_BP:
        raise DomainError(_("A rate cannot be over 100 %."), field)
    if rate_bp <= 0:
        raise DomainError(_("A rate must be more than 0 %."), field)
    return rate_bp


def _clean_text(text: str | None, field: str, empty_message: str | None = None) -> str | None:
    text = (text or "").strip() or None
    if text is None and empty_message:
        raise DomainError(empty_message, field)
    if text is not None and len(text) > MAX_TEXT:
        raise DomainError(_("At most %(max)d characters.", max=MAX_TEXT), field)
    return text


def _clean_input(data: RequestInput, program: Program) -> RequestInput:
    name = " ".join((data.name or "").split())
    if not name:
        raise DomainError(_("Name the campaign."), "name")
    if len(name) > MAX_NAME:
        raise DomainError(_("At most %(max)d characters.", max=MAX_NAME), "name")
    url = (data.landing_url or "").strip()
    if not url:
        raise DomainError(_("Give the page the campaign should open."), "landing_url")
    try:
        url = urlcheck.clean_destination(url, program.allowed_domains)
    except urlcheck.UnsafeUrl:
        raise DomainError(
            _(
                "The landing page must be on the program's sites: %(domains)s.",
                domains=", ".join(program.allowed_domains) or "—",
            ),
            "landing_url",
        ) from None
    rate = check_percent(data.desired_percent_bp, "desired_rate")
    expected = data.expected_monthly_conversions
    if expected is not None and not 0 <= expected <= MAX_EXPECTED:
        raise DomainError(
            _("Enter a number of sales from 0 to %(max)d.", max=MAX_EXPECTED), "expected_monthly_conversions"
        )
    note = _clean_text(data.note, "note")
    return RequestInput(name, url, rate, expected, note)


def _refuse(request: CampaignRequest) -> InvalidTransition:
    """Why a step cannot be taken from the request's current state, in words."""
    if request.status == RequestStatus.DECLINED and request.declined_by == "partner":
        return InvalidTransition(
            _("The counter-offer on this request was declined, so it is closed; nothing was changed.")
        )
    reason = {
        RequestStatus.APPROVED: _("This request is already approved; nothing was changed."),
        RequestStatus.ACCEPTED: _("This request is already accepted; nothing was changed."),
        RequestStatus.DECLINED: _("This request was declined; nothing was changed."),
        RequestStatus.WITHDRAWN: _("This request was withdrawn; nothing was changed."),
        RequestStatus.COUNTERED: _(
            "A counter-offer is waiting for the partner's answer; nothing was changed."
        ),
        RequestStatus.REQUESTED: _("This request is waiting for the team: there is no offer to answer yet."),
    }
    return InvalidTransition(reason.get(request.status, _("This request cannot change now.")))


def _move(request: CampaignRequest, allowed: set[str], now: datetime, **values: object) -> None:
    """Change the status only if it is still one of ``allowed`` (a compare-and-set)."""
    result = db.session.execute(
        sa.update(CampaignRequest)
        .where(CampaignRequest.id == request.id, CampaignRequest.status.in_(allowed))
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(request)
    if result.rowcount != 1:
        raise _refuse(request)


def _own(request: CampaignRequest, user: User) -> Partner:
    partner = user.partner
    if partner is None or partner.id != request.partner_id:
        # The views scope requests to their partner; this is the last line of defence.
        raise DomainError(_("This is not your request."))
    return partner


def _announce(request: CampaignRequest) -> None:
    events.record(
        "campaign_request.submitted"
        if request.status == RequestStatus.REQUESTED
        else "campaign_request.changed",
        {"request_id": request.id, "partner_id": request.partner_id, "status": request.status},
        partner_id=request.partner_id,
    )
    payload = {"request": request.id, "status": request.status, "thread": request.thread_id}
    realtime.notify(request.partner_id, "campaign_request", payload)
    realtime.notify_operators("campaign_request", payload)


# --- the steps ------------------------------------------------------------------------------


def submit_request(partner: Partner, program: Program, data: RequestInput) -> CampaignRequest:
    """An eligible partner asks for a custom campaign; opens the request's inbox thread."""
    if not partner.attributes:
        raise DomainError(_("Your account is suspended, so it cannot ask for a campaign now."))
    if not can_request(partner, program):
        raise DomainError(
            _("Custom campaigns are for top partners. Ask the team in your inbox how to become one.")
        )
    data = _clean_input(data, program)
    open_count = db.session.scalar(
        sa.select(sa.func.count()).where(
            CampaignRequest.partner_id == partner.id, CampaignRequest.status.in_(OPEN_STATUSES)
        )
    )
    if open_count >= MAX_OPEN_PER_PARTNER:
        raise DomainError(
            _(
                "You already have %(n)d open requests. Wait for the team's answers before asking again.",
                n=open_count,
            )
        )
    subject = _("Custom campaign request: %(name)s", name=data.name)[: inbox.MAX_SUBJECT]
    thread = inbox.start_thread(partner, partner.user, subject, _request_summary(data, program))
    now = utcnow()
    request = CampaignRequest(
        partner_id=partner.id,
        name=data.name,
        landing_url=data.landing_url,
        desired_type=RateType.PERCENT,
        desired_percent_bp=data.desired_percent_bp,
        expected_monthly_conversions=data.expected_monthly_conversions,
        note=data.note,
        status=RequestStatus.REQUESTED,
        thread_id=thread.id,
        created_at=now,
        updated_at=now,
    )
    db.session.add(request)
    db.session.flush()
    _announce(request)
    return request


def _request_summary(data: RequestInput, program: Program) -> str:
    lines = [
        _("I would like a custom campaign."),
        "",
        "- " + _("Campaign: %(name)s", name=data.name),
        "- " + _("Landing page: %(url)s", url=data.landing_url),
        "- "
        + _(
            "Rate I ask for: %(rate)s",
            rate=format_rate(RateType.PERCENT, data.desired_percent_bp, None, program.currency),
        ),
    ]
    if data.expected_monthly_conversions is not None:
        lines.append("- " + _("Sales I expect a month: %(n)d", n=data.expected_monthly_conversions))
    if data.note:
        lines += ["", data.note]
    return "\n".join(lines)


def approve_request(request: CampaignRequest, actor: User, program: Program) -> CampaignRequest:
    """The team says yes at the rate asked for: the private campaign and its link are made."""
    if not request.partner.attributes:
        raise DomainError(
            _("This partner is not approved at the moment (suspended?), so no campaign can be made.")
        )
    now = utcnow()
    _move(
        request,
        {RequestStatus.REQUESTED},
        now,
        status=RequestStatus.APPROVED,
        decided_by_id=actor.id,
        decided_at=now,
    )
    rate = (request.desired_type, request.desired_percent_bp, request.desired_flat_minor)
    campaign = _open_private_campaign(request, actor, actor, program, rate, now)
    inbox.reply(
        request.thread,
        actor,
        _(
            "Approved: “%(name)s” earns %(rate)s until %(end)s. Your link is on your Rewards page.",
            name=request.name,
            rate=format_rate(*rate, program.currency),
            end=_local_time(campaign.ends_at, program),
        ),
    )
    _announce(request)
    return request


def counter_offer(
    request: CampaignRequest, actor: User, program: Program, percent_bp: int | None, note: str | None
) -> CampaignRequest:
    """The team offers another rate; the partner accepts or declines it in the portal."""
    offered = check_percent(percent_bp, "rate")
    if request.desired_type == RateType.PERCENT and offered == request.desired_percent_bp:
        raise DomainError(_("That is the rate the partner asked for: approve the request instead."), "rate")
    note = _clean_text(note, "note")
    _move(
        request,
        {RequestStatus.REQUESTED},
        utcnow(),
        status=RequestStatus.COUNTERED,
        counter_type=RateType.PERCENT,
        counter_percent_bp=offered,
        counter_flat_minor=None,
        counter_note=note,
        decided_by_id=actor.id,
    )
    record_event(
        actor,
        "campaign_request.countered",
        "partner",
        request.partner_id,
        request_id=request.id,
        rate_percent_bp=offered,
    )
    body = _(
        "Counter-offer for “%(name)s”: %(rate)s (you asked for %(asked)s). "
        "Accept or decline it on your Rewards page.",
        name=request.name,
        rate=format_rate(RateType.PERCENT, offered, None, program.currency),
        asked=desired_rate(request, program.currency),
    )
    inbox.reply(request.thread, actor, body + (f"\n\n{note}" if note else ""))
    _announce(request)
    return request


def decline_request(request: CampaignRequest, actor: User, reason: str | None) -> CampaignRequest:
    """The team says no (or withdraws its counter-offer), with a reason the partner reads."""
    reason = _clean_text(reason, "reason", _("Say why, so the partner knows."))
    now = utcnow()
    _move(
        request,
        {RequestStatus.REQUESTED, RequestStatus.COUNTERED},
        now,
        status=RequestStatus.DECLINED,
        declined_by="team",
        decline_reason=reason,
        decided_by_id=actor.id,
        decided_at=now,
    )
    record_event(
        actor,
        "campaign_request.declined",
        "partner",
        request.partner_id,
        request_id=request.id,
        reason=reason,
    )
    inbox.reply(request.thread, actor, _("Declined: %(reason)s", reason=reason))
    _announce(request)
    return request


def accept_offer(request: CampaignRequest, user: User, program: Program) -> CampaignRequest:
    """The partner accepts the counter-offer: approved at the offered rate."""
    partner = _own(request, user)
    if not partner.attributes:
        raise DomainError(_("Your account is suspended, so it cannot take on a new campaign now."))
    now = utcnow()
    _move(request, {RequestStatus.COUNTERED}, now, status=RequestStatus.APPROVED, decided_at=now)
    rate = (request.counter_type, request.counter_percent_bp, request.counter_flat_minor)
    # The campaign is the team's offer: the operator who made it stands as its author.
    _open_private_campaign(
        request,
        request.decided_by or user,
        user,
        program,
        rate,
        now,
        accepted_counter_offer_of=request.decided_by_id,
    )
    inbox.reply(
        request.thread,
        user,
        _(
            "I accept the counter-offer of %(rate)s for “%(name)s”.",
            rate=format_rate(*rate, program.currency),
            name=request.name,
        ),
    )
    _announce(request)
    return request


def decline_offer(
    request: CampaignRequest, user: User, program: Program, note: str | None = None
) -> CampaignRequest:
    """The partner turns the counter-offer down; the request closes."""
    _own(request, user)
    note = _clean_text(note, "note")
    now = utcnow()
    _move(
        request,
        {RequestStatus.COUNTERED},
        now,
        status=RequestStatus.DECLINED,
        declined_by="partner",
        decided_at=now,
    )
    body = _(
        "I decline the counter-offer of %(rate)s for “%(name)s”.",
        rate=offered_rate(request, program.currency),
        name=request.name,
    )
    inbox.reply(request.thread, user, body + (f"\n\n{note}" if note else ""))
    _announce(request)
    return request


def withdraw_request(request: CampaignRequest, user: User) -> CampaignRequest:
    """The partner takes back a request that is still open."""
    _own(request, user)
    now = utcnow()
    _move(request, set(OPEN_STATUSES), now, status=RequestStatus.WITHDRAWN, decided_at=now)
    inbox.reply(request.thread, user, _("I withdraw this request."))
    _announce(request)
    return request


# --- reading ------------------------------------------------------------------------------------


def partner_requests(partner: Partner) -> list[CampaignRequest]:
    return list(
        db.session.scalars(
            sa.select(CampaignRequest)
            .where(CampaignRequest.partner_id == partner.id)
            .order_by(CampaignRequest.created_at.desc(), CampaignRequest.id.desc())
        )
    )


def partner_request(partner: Partner, request_id: int) -> CampaignRequest | None:
    """The partner's own request, or None (another partner's does not exist for them)."""
    return db.session.scalars(
        sa.select(CampaignRequest).where(
            CampaignRequest.id == request_id, CampaignRequest.partner_id == partner.id
        )
    ).first()


def get_request(request_id: int) -> CampaignRequest | None:
    return db.session.get(CampaignRequest, request_id)


def request_of_thread(thread_id: int) -> CampaignRequest | None:
    return db.session.scalars(
        sa.select(CampaignRequest).where(CampaignRequest.thread_id == thread_id)
    ).first()


def request_link(request: CampaignRequest) -> Link | None:
    """The approved request's campaign link."""
    if request.campaign_id is None:
        return None
    return db.session.scalars(
        sa.select(Link)
        .where(Link.campaign_id == request.campaign_id, Link.partner_id == request.partner_id)
        .order_by(Link.id)
    ).first()


@dataclass
class CampaignSale:
    """A sale through an approved request's link, what it earns now and why."""

    conversion: Conversion
    earned_minor: int
    why: list[str]


def campaign_sales(request: CampaignRequest, limit: int = 20) -> list[CampaignSale]:
    """The newest sales credited through the request's campaign link (the partner's own)."""
    link = request_link(request)
    if link is None:
        return []
    conversions = db.session.scalars(
        sa.select(Conversion)
        .join(Click, Click.id == Conversion.click_id)
        .where(Click.link_id == link.id, Conversion.partner_id == request.partner_id)
        .options(selectinload(Conversion.commissions))
        .order_by(Conversion.occurred_at.desc(), Conversion.id.desc())
        .limit(limit)
    )
    return [
        CampaignSale(
            conversion,
            sum(line.amount_minor for line in conversion.commissions),
            [rewards.explain(line) for line in conversion.commissions],
        )
        for conversion in conversions
    ]


QUEUE_FILTERS = ("open", "requested", "countered", "approved", "declined", "withdrawn", "all")


def request_queue(status: str = "open", limit: int = 200) -> list[CampaignRequest]:
    """The team's queue: waiting for the team first, then waiting for partners, oldest first."""
    query = sa.select(CampaignRequest).options(joinedload(CampaignRequest.partner).joinedload(Partner.user))
    if status == "open":
        query = query.where(CampaignRequest.status.in_(OPEN_STATUSES))
    elif status != "all":
        query = query.where(CampaignRequest.status == status)
    waiting_first = sa.case((CampaignRequest.status == RequestStatus.REQUESTED, 0), else_=1)
    return list(
        db.session.scalars(
            query.order_by(waiting_first, CampaignRequest.created_at, CampaignRequest.id).limit(limit)
        )
    )


def waiting_for_team() -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).where(CampaignRequest.status == RequestStatus.REQUESTED)
    )


# --- the engine's side -------------------------------------------------------------------------


def can_request(partner: Partner, program: Program) -> bool:
    """Top partners may ask: the program's top-partner tag, or a tier that allows it."""
    tag = (program.top_partner_tag or "").strip().lower()
    if tag and any(t.name == tag for t in partner.tags):
        return True
    tier = rewards.current_tier(partner.id)
    return bool(tier and tier.can_request_campaigns)


def _local_time(instant: datetime, program: Program) -> str:
    from portal.services.rewards_overview import program_time

    return program_time(instant, program)


def _open_private_campaign(
    request: CampaignRequest,
    actor: User,
    approved_by: User,
    program: Program,
    rate: tuple[str | None, int | None, int | None],
    now: datetime,
    **audit: object,
) -> Campaign:
    """The approved request's private campaign (this partner only, paying through its own link
    only) and that link, made by ``actor`` through the console's campaign services (checks and
    audit included); the approval is audited as ``approved_by``'s, with ``audit`` added."""
    rate_type, percent_bp, flat_minor = rate
    partner = request.partner
    tz = rewards.zone(program)
    campaign = reward_rules.save_campaign(
        program,
        actor,
        reward_rules.CampaignInput(
            name=request.name,
            starts_local=rewards.utc_to_local(now, tz),
            ends_local=rewards.utc_to_local(rewards.add_months(now, CAMPAIGN_MONTHS, tz), tz),
            reward=CampaignReward.RATE,
            rate=reward_rules.RateInput(rate_type or RateType.PERCENT, percent_bp, flat_minor),
            audience=CampaignAudience.PARTNERS,
            partner_keys=[partner.ref_code],
            links_only=True,
            # Checked again: the allowed domains may have changed since the request.
            landing_url=request.landing_url,
            description=_("Custom campaign requested by %(name)s.", name=partner.user.name),
        ),
    )
    link = reward_rules.create_campaign_link(
        program, actor, campaign, partner.ref_code, request.name, "other"
    )
    request.campaign_id = campaign.id
    db.session.flush()
    record_event(
        approved_by,
        "campaign_request.approved",
        "partner",
        request.partner_id,
        request_id=request.id,
        **audit,
        rate_type=rate_type,
        rate_percent_bp=percent_bp,
        rate_flat_minor=flat_minor,
        campaign_id=campaign.id,
        link_id=link.id,
    )
    return campaign
