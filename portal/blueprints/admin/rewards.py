"""Operator console for the rewards rules: plan, product rates, tiers, campaigns, ladder, private deals.

Managers and admins. Each view parses its form, calls one rules service, commits once;
a refusal comes back on the form with nothing saved.
"""

from __future__ import annotations

from datetime import timedelta

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user

from portal.blueprints.admin import bp
from portal.blueprints.admin.rewards_forms import (
    CampaignForm,
    CampaignLinkForm,
    DealForm,
    LadderStepForm,
    PartnerTierForm,
    PlanForm,
    ProductRateForm,
    TierForm,
    split_items,
)
from portal.extensions import db
from portal.forms import ConfirmForm
from portal.models import (
    Campaign,
    LadderStep,
    Partner,
    PartnerTier,
    PrivateDeal,
    ProductRate,
    Tier,
)
from portal.models.types import utcnow
from portal.money import rate_text, to_decimal_string
from portal.security import operator_required
from portal.services import reward_rules, rewards
from portal.services.program import get_program
from portal.services.reward_rules import CampaignInput, DealInput, PlanInput, ProductRateInput, TierInput
from portal.views import committing


def _status(form) -> int:
    """A page answering a post is a refusal (a success redirects)."""
    return 422 if request.method == "POST" else 200


# --- overview: precedence, plan, product rates ----------------------------------------------------


def _plan_form(program) -> PlanForm:
    form = PlanForm(
        formdata=None,
        rate_type=program.commission_type,
        rate_percent=rate_text(program.commission_percent_bp),
        rate_flat=to_decimal_string(program.commission_flat_minor, program.currency),
        recurring_mode=program.recurring_mode,
        recurring_months=program.recurring_months,
        top_partner_tag=program.top_partner_tag,
    )
    form.currency = program.currency
    return form


def _unique_ids(form, prefix: str):
    """Give a form's fields ids of their own (``product-rate_percent``) where two forms with the
    same fields share a page, so each label focuses its own field; the names stay as they are."""
    for f in form:
        if f.type != "CSRFTokenField":
            f.id = f"{prefix}-{f.id}"
            f.label.field_id = f.id
    return form


def _rewards_page(program, plan_form=None, product_form=None, status: int = 200):
    product_form = _unique_ids(product_form or ProductRateForm(formdata=None), "product")
    product_form.currency = program.currency
    return (
        render_template(
            "admin/rewards/overview.html",
            program=program,
            precedence=[(kind, rewards.PRECEDENCE_LABELS[kind]) for kind in rewards.PRECEDENCE],
            plan_form=plan_form or _plan_form(program),
            product_form=product_form,
            product_rates=reward_rules.product_rates(),
            tiers=rewards.all_tiers(),
            steps=rewards.ladder_steps(),
            running=rewards.running_campaigns(utcnow()),
            last_close=next(iter(reward_rules.month_closes(limit=1)), None),
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.get("/rewards")
@operator_required
def rewards_overview():
    return _rewards_page(get_program())


@bp.post("/rewards/plan")
@operator_required
def save_plan():
    program = get_program()
    form = PlanForm()
    form.currency = program.currency
    if form.validate_on_submit():
        plan = PlanInput(
            rate=form.rate,
            recurring_mode=form.recurring_mode.data,
            recurring_months=form.recurring_months.data,
            top_partner_tag=form.top_partner_tag.data,
        )
        with committing(form) as done:
            reward_rules.save_plan(program, current_user, plan)
        if done:
            flash(_("Commission plan saved."), "success")
            return redirect(url_for("admin.rewards_overview"))
    return _rewards_page(program, plan_form=form, status=422)


@bp.post("/rewards/products")
@operator_required
def add_product_rate():
    program = get_program()
    form = ProductRateForm()
    form.currency = program.currency
    if form.validate_on_submit():
        data = ProductRateInput(form.product_id.data, form.rate, form.label.data)
        with committing(form) as done:
            reward_rules.save_product_rate(current_user, data)
        if done:
            flash(_("Product rate saved."), "success")
            return redirect(url_for("admin.rewards_overview") + "#products")
    return _rewards_page(program, product_form=form, status=422)


@bp.route("/rewards/products/<int:rate_id>", methods=["GET", "POST"])
@operator_required
def edit_product_rate(rate_id: int):
    program = get_program()
    product_rate = db.get_or_404(ProductRate, rate_id)
    form = ProductRateForm() if request.method == "POST" else ProductRateForm(formdata=None)
    form.currency = program.currency
    if request.method == "GET":
        form.product_id.data = product_rate.product_id
        form.label.data = product_rate.label
        form.fill_rate(product_rate)
    elif form.validate_on_submit():
        data = ProductRateInput(form.product_id.data, form.rate, form.label.data)
        with committing(form) as done:
            reward_rules.save_product_rate(current_user, data, product_rate)
        if done:
            flash(_("Product rate saved."), "success")
            return redirect(url_for("admin.rewards_overview") + "#products")
    return render_template("admin/rewards/product_rate.html", form=form, product_rate=product_rate), _status(
        form
    )


@bp.post("/rewards/products/<int:rate_id>/delete")
@operator_required
def delete_product_rate(rate_id: int):
    product_rate = db.get_or_404(ProductRate, rate_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        with committing() as done:
            reward_rules.delete_product_rate(current_user, product_rate)
        if done:
            flash(_("Product rate removed."), "success")
    return redirect(url_for("admin.rewards_overview") + "#products")


# --- tiers ----------------------------------------------------------------------------------------


@bp.get("/rewards/tiers")
@operator_required
def list_tiers():
    counts = reward_rules.partners_per_tier()
    return render_template(
        "admin/rewards/tiers.html",
        program=get_program(),
        tiers=rewards.all_tiers(),
        counts=counts,
        confirm_form=ConfirmForm(formdata=None),
    )


def _tier_input(form: TierForm) -> TierInput:
    return TierInput(
        name=form.name.data,
        rank=form.rank.data,
        rate=form.rate,
        threshold_metric=form.threshold_metric.data,
        threshold_value=form.threshold_value,
        period=form.period.data,
        can_request_campaigns=form.can_request_campaigns.data,
    )


@bp.route("/rewards/tiers/new", methods=["GET", "POST"])
@operator_required
def new_tier():
    program = get_program()
    form = TierForm() if request.method == "POST" else TierForm(formdata=None)
    form.currency = program.currency
    if request.method == "GET":
        tiers = rewards.all_tiers()
        form.rank.data = (tiers[-1].rank + 1) if tiers else 1
    elif form.validate_on_submit():
        data = _tier_input(form)
        with committing(form) as done:
            reward_rules.save_tier(program, current_user, data)
        if done:
            flash(_("Tier saved."), "success")
            return redirect(url_for("admin.list_tiers"))
    return render_template("admin/rewards/tier_form.html", form=form, tier=None), _status(form)


@bp.route("/rewards/tiers/<int:tier_id>", methods=["GET", "POST"])
@operator_required
def edit_tier(tier_id: int):
    program = get_program()
    tier = db.get_or_404(Tier, tier_id)
    form = TierForm() if request.method == "POST" else TierForm(formdata=None)
    form.currency = program.currency
    if request.method == "GET":
        form.fill(tier)
    elif form.validate_on_submit():
        data = _tier_input(form)
        with committing(form) as done:
            reward_rules.save_tier(program, current_user, data, tier)
        if done:
            flash(_("Tier saved."), "success")
            return redirect(url_for("admin.list_tiers"))
    return render_template("admin/rewards/tier_form.html", form=form, tier=tier), _status(form)


@bp.post("/rewards/tiers/<int:tier_id>/delete")
@operator_required
def delete_tier(tier_id: int):
    tier = db.get_or_404(Tier, tier_id)
    if ConfirmForm().validate_on_submit():
        orphaned = [campaign.name for campaign in reward_rules.campaigns_only_for(tier)]
        with committing() as done:
            moved = reward_rules.delete_tier(get_program(), current_user, tier)
        if done:
            flash(
                ngettext(
                    "Tier removed; %(num)s partner went back to the base rate.",
                    "Tier removed; %(num)s partners went back to the base rate.",
                    moved,
                ),
                "success",
            )
            if orphaned:
                flash(
                    ngettext(
                        "The campaign %(names)s was for this tier only: it is now open to nobody. "
                        "Edit it to choose who it is for.",
                        "The campaigns %(names)s were for this tier only: they are now open to nobody. "
                        "Edit them to choose who they are for.",
                        len(orphaned),
                        names=", ".join(f"“{name}”" for name in orphaned),
                    ),
                    "warning",
                )
    return redirect(url_for("admin.list_tiers"))


# --- campaigns ------------------------------------------------------------------------------------


def _campaign_state(campaign: Campaign, now) -> str:
    if campaign.ends_at <= now:
        return "ended"
    return "running" if campaign.starts_at <= now else "scheduled"


@bp.get("/rewards/campaigns")
@operator_required
def list_campaigns():
    program = get_program()
    now = utcnow()
    campaigns = reward_rules.campaigns_newest_first()
    return render_template(
        "admin/rewards/campaigns.html",
        program=program,
        campaigns=[(c, _campaign_state(c, now)) for c in campaigns],
        tz=rewards.zone(program),
        to_local=rewards.utc_to_local,
    )


def _tier_choices() -> list[tuple[int, str]]:
    return [(t.id, t.name) for t in rewards.all_tiers()]


def _campaign_form(program, campaign: Campaign | None = None) -> CampaignForm:
    if request.method == "GET" and campaign is not None:
        return _filled_campaign_form(program, campaign)
    if request.method == "POST":
        form = CampaignForm(tier_choices=_tier_choices())
    else:
        form = CampaignForm(formdata=None, tier_choices=_tier_choices())
    form.currency = program.currency
    return form


def _campaign_input(form: CampaignForm) -> CampaignInput:
    return CampaignInput(
        name=form.name.data,
        description=form.description.data,
        starts_local=form.starts_at.data,
        ends_local=form.ends_at.data,
        reward=form.reward.data,
        rate=form.rate,
        bonus_minor=form.bonus_minor,
        product_ids=split_items(form.products.data),
        audience=form.audience.data,
        tier_ids=form.tiers.data or [],
        tag=form.tag.data,
        partner_keys=split_items(form.partners.data),
        links_only=form.links_only.data,
        landing_url=form.landing_url.data,
    )


def _render_campaign(program, form, campaign: Campaign | None, link_form=None, status: int = 200):
    return (
        render_template(
            "admin/rewards/campaign_form.html",
            program=program,
            form=form,
            campaign=campaign,
            link_form=link_form or CampaignLinkForm(formdata=None),
            campaign_links=reward_rules.campaign_links(campaign) if campaign else [],
            state=_campaign_state(campaign, utcnow()) if campaign else None,
            confirm_form=ConfirmForm(formdata=None),
            zone_name=program.timezone,
        ),
        status,
    )


@bp.route("/rewards/campaigns/new", methods=["GET", "POST"])
@operator_required
def new_campaign():
    program = get_program()
    form = _campaign_form(program)
    if request.method == "POST" and form.validate_on_submit():
        data = _campaign_input(form)
        with committing(form) as done:
            saved = reward_rules.save_campaign(program, current_user, data)
        if done:
            flash(_("Campaign saved."), "success")
            return redirect(url_for("admin.edit_campaign", campaign_id=saved.id))
    return _render_campaign(program, form, None, status=_status(form))


@bp.route("/rewards/campaigns/<int:campaign_id>", methods=["GET", "POST"])
@operator_required
def edit_campaign(campaign_id: int):
    program = get_program()
    campaign = db.get_or_404(Campaign, campaign_id)
    form = _campaign_form(program, campaign)
    if request.method == "POST" and form.validate_on_submit():
        data = _campaign_input(form)
        with committing(form) as done:
            reward_rules.save_campaign(program, current_user, data, campaign)
        if done:
            flash(_("Campaign saved."), "success")
            return redirect(url_for("admin.edit_campaign", campaign_id=campaign.id))
    return _render_campaign(program, form, campaign, status=_status(form))


@bp.post("/rewards/campaigns/<int:campaign_id>/links")
@operator_required
def add_campaign_link(campaign_id: int):
    program = get_program()
    campaign = db.get_or_404(Campaign, campaign_id)
    link_form = CampaignLinkForm()
    if link_form.validate_on_submit():
        with committing(link_form) as done:
            reward_rules.create_campaign_link(
                program,
                current_user,
                campaign,
                link_form.partner.data,
                link_form.label.data,
                link_form.channel.data,
            )
        if done:
            flash(_("Campaign link created."), "success")
            return redirect(url_for("admin.edit_campaign", campaign_id=campaign.id) + "#links")
    return _render_campaign(
        program, _filled_campaign_form(program, campaign), campaign, link_form, status=422
    )


def _filled_campaign_form(program, campaign: Campaign) -> CampaignForm:
    """The campaign's own form, filled from the campaign (for a page answering another form's post)."""
    tz = rewards.zone(program)
    form = CampaignForm(formdata=None, tier_choices=_tier_choices())
    form.currency = program.currency
    form.name.data = campaign.name
    form.description.data = campaign.description
    form.starts_at.data = rewards.utc_to_local(campaign.starts_at, tz)
    form.ends_at.data = rewards.utc_to_local(campaign.ends_at, tz)
    form.products.data = ", ".join(campaign.product_ids or [])
    form.reward.data = campaign.reward
    form.fill_rate(campaign)
    form.bonus.data = to_decimal_string(campaign.bonus_minor or 0, program.currency)
    form.audience.data = campaign.audience
    form.tiers.data = [t.id for t in campaign.tiers]
    form.tag.data = campaign.tag.name if campaign.tag else ""
    form.partners.data = ", ".join(p.ref_code for p in campaign.partners)
    form.links_only.data = campaign.links_only
    form.landing_url.data = campaign.landing_url or ""
    return form


@bp.post("/rewards/campaigns/<int:campaign_id>/end")
@operator_required
def end_campaign(campaign_id: int):
    campaign = db.get_or_404(Campaign, campaign_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            reward_rules.end_campaign(current_user, campaign)
        if done:
            flash(_("The campaign has ended."), "success")
    return redirect(url_for("admin.edit_campaign", campaign_id=campaign.id))


@bp.post("/rewards/campaigns/<int:campaign_id>/delete")
@operator_required
def delete_campaign(campaign_id: int):
    campaign = db.get_or_404(Campaign, campaign_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            reward_rules.delete_campaign(current_user, campaign)
        if not done:
            return redirect(url_for("admin.edit_campaign", campaign_id=campaign.id))
        flash(_("Campaign deleted."), "success")
    return redirect(url_for("admin.list_campaigns"))


# --- the ladder -----------------------------------------------------------------------------------


@bp.route("/rewards/ladder", methods=["GET", "POST"])
@operator_required
def ladder():
    program = get_program()
    form = LadderStepForm() if request.method == "POST" else LadderStepForm(formdata=None)
    form.currency = program.currency
    if request.method == "POST" and form.validate_on_submit():
        threshold, bonus = form.threshold_conversions.data, form.bonus_minor
        with committing(form) as done:
            reward_rules.add_ladder_step(current_user, threshold, bonus)
        if done:
            flash(_("Ladder step added."), "success")
            return redirect(url_for("admin.ladder"))
    return (
        render_template(
            "admin/rewards/ladder.html",
            program=program,
            form=form,
            steps=rewards.ladder_steps(),
            closes=reward_rules.month_closes(limit=12),
            confirm_form=ConfirmForm(formdata=None),
        ),
        _status(form),
    )


@bp.post("/rewards/ladder/<int:step_id>/delete")
@operator_required
def delete_ladder_step(step_id: int):
    step = db.get_or_404(LadderStep, step_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            reward_rules.delete_ladder_step(current_user, step)
        if done:
            flash(_("Ladder step removed."), "success")
    return redirect(url_for("admin.ladder"))


# --- private deals --------------------------------------------------------------------------------


@bp.get("/rewards/deals")
@operator_required
def list_deals():
    program = get_program()
    deals = reward_rules.deals()
    return render_template(
        "admin/rewards/deals.html",
        program=program,
        deals=deals,
        tz=rewards.zone(program),
        to_local=rewards.utc_to_local,
        confirm_form=ConfirmForm(formdata=None),
    )


def _deal_input(form: DealForm) -> DealInput:
    return DealInput(
        partner_key=form.partner.data,
        rate=form.rate,
        product_ids=split_items(form.products.data),
        starts_on=form.starts_on.data,
        ends_on=form.ends_on.data,
        note=form.note.data,
    )


@bp.route("/rewards/deals/new", methods=["GET", "POST"])
@operator_required
def new_deal():
    program = get_program()
    form = (
        DealForm()
        if request.method == "POST"
        else DealForm(formdata=None, partner=request.args.get("partner", ""))
    )
    form.currency = program.currency
    if request.method == "POST" and form.validate_on_submit():
        data = _deal_input(form)
        with committing(form) as done:
            reward_rules.save_deal(program, current_user, data)
        if done:
            flash(_("Private deal saved."), "success")
            return redirect(url_for("admin.list_deals"))
    return render_template("admin/rewards/deal_form.html", form=form, deal=None), _status(form)


@bp.route("/rewards/deals/<int:deal_id>", methods=["GET", "POST"])
@operator_required
def edit_deal(deal_id: int):
    program = get_program()
    deal = db.get_or_404(PrivateDeal, deal_id)
    form = DealForm() if request.method == "POST" else DealForm(formdata=None)
    form.currency = program.currency
    if request.method == "GET":
        tz = rewards.zone(program)
        form.partner.data = deal.partner.ref_code
        form.fill_rate(deal)
        form.products.data = ", ".join(deal.product_ids or [])
        form.starts_on.data = rewards.utc_to_local(deal.starts_at, tz).date() if deal.starts_at else None
        ends = rewards.utc_to_local(deal.ends_at, tz)
        # Stored as the first instant after the last day; the form shows the last day.
        form.ends_on.data = (ends.date() - timedelta(days=1)) if ends else None
        form.note.data = deal.note
    elif form.validate_on_submit():
        data = _deal_input(form)
        with committing(form) as done:
            reward_rules.save_deal(program, current_user, data, deal)
        if done:
            flash(_("Private deal saved."), "success")
            return redirect(url_for("admin.list_deals"))
    return render_template("admin/rewards/deal_form.html", form=form, deal=deal), _status(form)


@bp.post("/rewards/deals/<int:deal_id>/delete")
@operator_required
def delete_deal(deal_id: int):
    deal = db.get_or_404(PrivateDeal, deal_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            reward_rules.delete_deal(current_user, deal)
        if done:
            flash(_("Private deal removed."), "success")
    return redirect(url_for("admin.list_deals"))


# --- a partner's tier (on the partner page) -----------------------------------------------------------


@bp.app_template_global("partner_rewards")
def partner_rewards(partner: Partner) -> dict:
    """What the partner page shows about a partner's rewards: tier, its timeline, private deals."""
    program = get_program()
    tiers = rewards.all_tiers()
    held = db.session.get(PartnerTier, partner.id)
    tier = held.tier if held else None
    return {
        "tier": tier,
        "held": held,
        "history": [(c, rewards.describe_tier_change(c, program)) for c in rewards.tier_history(partner.id)],
        "deals": reward_rules.deals(partner.id),
        "form": PartnerTierForm(formdata=None, tiers=tiers, tier=tier.id if tier else 0),
        "program": program,
    }


@bp.post("/partners/<int:partner_id>/tier")
@operator_required
def set_partner_tier(partner_id: int):
    partner = db.get_or_404(Partner, partner_id)
    form = PartnerTierForm(tiers=rewards.all_tiers())
    if form.validate_on_submit():
        tier = db.session.get(Tier, form.tier.data) if form.tier.data else None
        with committing() as done:
            reward_rules.set_partner_tier(get_program(), current_user, partner, tier, form.note.data or None)
        if done:
            flash(_("Tier saved."), "success")
    else:
        flash(_("Choose a tier from the list."), "error")
    return redirect(url_for("admin.show_partner", partner_id=partner.id) + "#partner-rewards")
