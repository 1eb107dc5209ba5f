"""Every route × every kind of user: who may do what.

Adding a route without adding it here fails ``test_every_route_is_in_the_matrix``. A route
that answers GET and POST is checked with both (``test_every_method_of_a_route_…``), and
every partner route that names an object has an own-partner and an other-partner column
(``test_a_partner_acts_on_their_own_objects_and_not_on_anothers``).
"""

from datetime import date

import pytest

from portal.models import PartnerStatus, Role
from portal.models.types import utcnow
from portal.services import campaign_requests, coupons, inbox
from portal.services.announcements import AnnouncementDraft, save_announcement
from portal.services.api_keys import create_api_key
from portal.services.links import create_link
from portal.services.partners import set_partner_tags
from tests.creative_support import make_banner
from tests.factories import ConversionFactory, PartnerFactory, PayoutItemFactory, UserFactory

ROLES = ["anonymous", "applicant", "partner", "manager", "admin"]
LOGIN = "login"  # redirect to the sign-in page
HOME = "home"  # redirect elsewhere (signed-in users away from public forms, or after an action)

PARTNER_ONLY = {"anonymous": LOGIN, "applicant": HOME, "partner": 200, "manager": 403, "admin": 403}
OPERATORS = {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 200, "admin": 200}
ADMIN_ONLY = {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 403, "admin": 200}
OPERATORS_REFUSED = {**OPERATORS, "manager": 422, "admin": 422}
OPERATORS_ACT = {**OPERATORS, "manager": HOME, "admin": HOME}

# endpoint: (method, url template, {role: expected})
MATRIX = {
    "auth.index": (
        "GET",
        "/",
        {"anonymous": 200, "applicant": HOME, "partner": HOME, "manager": HOME, "admin": HOME},
    ),
    "auth.login": (
        "GET",
        "/login",
        {"anonymous": 200, "applicant": HOME, "partner": HOME, "manager": HOME, "admin": HOME},
    ),
    "auth.logout": ("POST", "/logout", dict.fromkeys(ROLES, LOGIN)),
    "auth.apply": (
        "GET",
        "/apply",
        {"anonymous": 200, "applicant": HOME, "partner": HOME, "manager": HOME, "admin": HOME},
    ),
    "auth.application_status": (
        "GET",
        "/status",
        {"anonymous": LOGIN, "applicant": 200, "partner": HOME, "manager": HOME, "admin": HOME},
    ),
    "auth.forgot_password": ("GET", "/password/forgot", dict.fromkeys(ROLES, 200)),
    "auth.set_language": ("POST", "/language", dict.fromkeys(ROLES, HOME)),
    # Empty choices are valid (automatic language and zone): saved, back to the account page.
    "auth.save_reading_preferences": (
        "POST",
        "/account/reading",
        {**dict.fromkeys(ROLES, HOME), "anonymous": LOGIN},
    ),
    "auth.reset_password": ("GET", "/password/reset/not-a-token", dict.fromkeys(ROLES, 400)),
    "partner.dashboard": (
        "GET",
        "/partner/",
        {"anonymous": LOGIN, "applicant": HOME, "partner": 200, "manager": 403, "admin": 403},
    ),
    "admin.dashboard": (
        "GET",
        "/admin/",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 200, "admin": 200},
    ),
    "admin.applications": (
        "GET",
        "/admin/applications",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 200, "admin": 200},
    ),
    "admin.list_partners": (
        "GET",
        "/admin/partners",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 200, "admin": 200},
    ),
    "admin.show_partner": (
        "GET",
        "/admin/partners/{applied_id}",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 200, "admin": 200},
    ),
    "admin.approve_partner": (
        "POST",
        "/admin/partners/{applied_id}/approve",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": HOME, "admin": HOME},
    ),
    # Approving from the applications list: back to the list, like approving on the partner page.
    "admin.approve_application": (
        "POST",
        "/admin/applications/{applied_id}/approve",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": HOME, "admin": HOME},
    ),
    "admin.reject_partner": (
        "POST",
        "/admin/partners/{applied_id}/reject",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 422, "admin": 422},
    ),
    "admin.suspend_partner": (
        "POST",
        "/admin/partners/{approved_id}/suspend",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 422, "admin": 422},
    ),
    "admin.reinstate_partner": (
        "POST",
        "/admin/partners/{approved_id}/reinstate",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 422, "admin": 422},
    ),
    "admin.settings": (
        "GET",
        "/admin/settings",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 403, "admin": 200},
    ),
    "admin.team": (
        "GET",
        "/admin/team",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 403, "admin": 200},
    ),
    "admin.set_team_member_active": (
        "POST",
        "/admin/team/{other_manager_id}/deactivate",
        {"anonymous": LOGIN, "applicant": 403, "partner": 403, "manager": 403, "admin": HOME},
    ),
    "health.healthz": ("GET", "/healthz", dict.fromkeys(ROLES, 200)),
    "health.readyz": ("GET", "/readyz", dict.fromkeys(ROLES, 200)),
    "health.livez": ("GET", "/livez", dict.fromkeys(ROLES, 200)),
    # the click redirect and the API do not care who is signed in
    "track.follow_link": ("GET", "/go/{approved_ref}", dict.fromkeys(ROLES, HOME)),
    "api.create_signup": ("POST", "/api/v1/signups", dict.fromkeys(ROLES, 401)),
    "api.create_conversion": ("POST", "/api/v1/conversions", dict.fromkeys(ROLES, 401)),
    "api.show_conversion": ("GET", "/api/v1/conversions/{transaction_id}", dict.fromkeys(ROLES, 401)),
    "api.refund_conversion": (
        "POST",
        "/api/v1/conversions/{transaction_id}/refund",
        dict.fromkeys(ROLES, 401),
    ),
    "api.openapi": ("GET", "/api/v1/openapi.json", dict.fromkeys(ROLES, 200)),
    # partner pages: the signed-in partner is never the owner of the fixtures' link and conversion
    "partner.list_links": ("GET", "/partner/links", PARTNER_ONLY),
    "partner.create_link": ("POST", "/partner/links", {**PARTNER_ONLY, "partner": 422}),
    "partner.toggle_link": ("POST", "/partner/links/{link_id}/disable", {**PARTNER_ONLY, "partner": 404}),
    "partner.request_coupon": ("POST", "/partner/coupons", {**PARTNER_ONLY, "partner": 422}),
    "partner.download_main_link_qr": ("GET", "/partner/links/main/qr.svg", PARTNER_ONLY),
    "partner.download_link_qr": ("GET", "/partner/links/{link_id}/qr.png", {**PARTNER_ONLY, "partner": 404}),
    "partner.download_coupon_qr": (
        "GET",
        "/partner/coupons/{coupon_id}/qr.svg",
        {**PARTNER_ONLY, "partner": 404},
    ),
    "admin.list_coupons": ("GET", "/admin/coupons", OPERATORS),
    "admin.list_rates": ("GET", "/admin/rates", OPERATORS),
    "admin.add_rate": ("POST", "/admin/rates", {**OPERATORS, "manager": 422, "admin": 422}),
    "admin.import_rates": ("POST", "/admin/rates/import", {**OPERATORS, "manager": 422, "admin": 422}),
    "admin.add_coupon": ("POST", "/admin/coupons", {**OPERATORS, "manager": 422, "admin": 422}),
    "admin.decide_coupon": (
        "POST",
        "/admin/coupons/999999/approve",
        {**OPERATORS, "manager": 404, "admin": 404},
    ),
    "partner.list_conversions": ("GET", "/partner/conversions", PARTNER_ONLY),
    "partner.show_conversion": (
        "GET",
        "/partner/conversions/{conversion_id}",
        {**PARTNER_ONLY, "partner": 404},
    ),
    "admin.list_conversions": ("GET", "/admin/conversions", OPERATORS),
    "admin.show_conversion": ("GET", "/admin/conversions/{conversion_id}", OPERATORS),
    "admin.approve_conversion": (
        "POST",
        "/admin/conversions/{conversion_id}/approve",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.reject_conversion": (
        "POST",
        "/admin/conversions/{conversion_id}/reject",
        {**OPERATORS, "manager": 422, "admin": 422},
    ),
    "admin.grant_slug": ("POST", "/admin/links/{link_id}/slug", {**ADMIN_ONLY, "admin": HOME}),
    "admin.api_keys_page": ("GET", "/admin/api-keys", ADMIN_ONLY),
    "admin.revoke_api_key": ("POST", "/admin/api-keys/{api_key_id}/revoke", {**ADMIN_ONLY, "admin": HOME}),
    "admin.integration_guide": ("GET", "/admin/integration", OPERATORS),
    # webhooks: admins only; no endpoint or delivery 999999 exists, so an admin gets past the
    # role check to a 404 (the console's own tests use real ones)
    "admin.list_webhooks": ("GET", "/admin/webhooks", ADMIN_ONLY),
    "admin.show_webhook": ("GET", "/admin/webhooks/999999", {**ADMIN_ONLY, "admin": 404}),
    "admin.rotate_webhook_secret": ("POST", "/admin/webhooks/999999/rotate", {**ADMIN_ONLY, "admin": 404}),
    "admin.test_webhook": ("POST", "/admin/webhooks/999999/test", {**ADMIN_ONLY, "admin": 404}),
    "admin.delete_webhook": ("POST", "/admin/webhooks/999999/delete", {**ADMIN_ONLY, "admin": 404}),
    "admin.resend_webhook": (
        "POST",
        "/admin/webhooks/deliveries/999999/resend",
        {**ADMIN_ONLY, "admin": 404},
    ),
    # payouts
    "partner.earnings": ("GET", "/partner/earnings", PARTNER_ONLY),
    "partner.earnings_csv": ("GET", "/partner/earnings.csv", PARTNER_ONLY),
    "partner.request_withdrawal": ("POST", "/partner/earnings/withdraw", {**PARTNER_ONLY, "partner": HOME}),
    "partner.payout_details": ("GET", "/partner/payout-details", PARTNER_ONLY),
    "admin.list_batches": ("GET", "/admin/payouts", OPERATORS),
    "admin.run_settlement": ("POST", "/admin/payouts/settle", {**OPERATORS, "manager": HOME, "admin": HOME}),
    "admin.show_batch": ("GET", "/admin/payouts/{batch_id}", OPERATORS),
    "admin.approve_batch": (
        "POST",
        "/admin/payouts/{batch_id}/approve",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.export_batch": (
        "GET",
        "/admin/payouts/{batch_id}/export.csv",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.mark_batch_paid": (
        "POST",
        "/admin/payouts/{batch_id}/paid",
        {**OPERATORS, "manager": 422, "admin": 422},
    ),
    "admin.mark_item": (
        "POST",
        "/admin/payouts/{batch_id}/items/{item_id}/failed",
        {**OPERATORS, "manager": 422, "admin": 422},
    ),
    "admin.release_item": (
        "POST",
        "/admin/payouts/{batch_id}/items/{item_id}/release",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    # messaging: the fixtures' thread and announcement belong to another partner
    "partner.list_threads": ("GET", "/partner/inbox", PARTNER_ONLY),
    "partner.start_thread": ("POST", "/partner/inbox", {**PARTNER_ONLY, "partner": 422}),
    "partner.show_thread": ("GET", "/partner/inbox/{thread_id}", {**PARTNER_ONLY, "partner": 404}),
    "partner.reply_thread": ("POST", "/partner/inbox/{thread_id}", {**PARTNER_ONLY, "partner": 404}),
    "partner.unread_badge": ("GET", "/partner/inbox/unread", PARTNER_ONLY),
    "partner.show_announcement": (
        "GET",
        "/partner/announcements/{announcement_id}",
        {**PARTNER_ONLY, "partner": 404},
    ),
    "partner.preferences": ("GET", "/partner/preferences", PARTNER_ONLY),
    "auth.login_code": (  # the second step of signing in: nobody is half-way in here
        "GET",
        "/login/code",
        {"anonymous": LOGIN, "applicant": HOME, "partner": HOME, "manager": HOME, "admin": HOME},
    ),
    "auth.account": ("GET", "/account", {**dict.fromkeys(ROLES, 200), "anonymous": LOGIN}),
    "auth.change_password": ("POST", "/account/password", {**dict.fromkeys(ROLES, 422), "anonymous": LOGIN}),
    # Signs everyone out, this browser too: back to the sign-in page.
    "auth.sign_out_everywhere": ("POST", "/account/sign-out-everywhere", dict.fromkeys(ROLES, LOGIN)),
    "auth.start_two_factor": (
        "POST",
        "/account/two-factor/start",
        {**dict.fromkeys(ROLES, HOME), "anonymous": LOGIN},
    ),
    # Without a set-up started, back to the account page.
    "auth.setup_two_factor": (
        "GET",
        "/account/two-factor/setup",
        {**dict.fromkeys(ROLES, HOME), "anonymous": LOGIN},
    ),
    "auth.disable_two_factor": (
        "POST",
        "/account/two-factor/disable",
        {**dict.fromkeys(ROLES, 422), "anonymous": LOGIN},
    ),
    "auth.regenerate_recovery_codes": (
        "POST",
        "/account/two-factor/recovery-codes",
        {**dict.fromkeys(ROLES, 422), "anonymous": LOGIN},
    ),
    "auth.unsubscribe": ("GET", "/unsubscribe/not-a-token", dict.fromkeys(ROLES, 400)),
    "auth.resubscribe": ("POST", "/unsubscribe/not-a-token/undo", dict.fromkeys(ROLES, 400)),
    "admin.list_threads": ("GET", "/admin/inbox", OPERATORS),
    "admin.unread_badge": ("GET", "/admin/inbox/unread", OPERATORS),
    "admin.show_thread": ("GET", "/admin/inbox/{thread_id}", OPERATORS),
    "admin.reply_thread": ("POST", "/admin/inbox/{thread_id}", {**OPERATORS, "manager": 422, "admin": 422}),
    "admin.start_thread": (
        "POST",
        "/admin/partners/{approved_id}/messages",
        {**OPERATORS, "manager": 422, "admin": 422},
    ),
    "admin.set_partner_tags": (
        "POST",
        "/admin/partners/{approved_id}/tags",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.assign_manager": (
        "POST",
        "/admin/partners/{approved_id}/manager",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.list_announcements": ("GET", "/admin/announcements", OPERATORS),
    "admin.new_announcement": ("GET", "/admin/announcements/new", OPERATORS),
    "admin.edit_announcement": ("GET", "/admin/announcements/{announcement_id}", OPERATORS),
    "admin.pin_announcement": (
        "POST",
        "/admin/announcements/{announcement_id}/pin",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.list_templates": ("GET", "/admin/automatic-messages", OPERATORS),
    "admin.edit_template": ("GET", "/admin/automatic-messages/welcome", OPERATORS),
    "admin.reset_template": (
        "POST",
        "/admin/automatic-messages/welcome/reset",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    # creatives: the fixture's creative is a published banner
    "admin.list_creatives": ("GET", "/admin/creatives", OPERATORS),
    "admin.create_creative": ("GET", "/admin/creatives/new/banner", OPERATORS),
    "admin.edit_creative": ("GET", "/admin/creatives/{creative_id}", OPERATORS),
    "admin.replace_creative_file": (
        "POST",
        "/admin/creatives/{creative_id}/replace",
        {**OPERATORS, "manager": 422, "admin": 422},
    ),
    "admin.set_creative_status": (
        "POST",
        "/admin/creatives/{creative_id}/archive",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.bulk_upload_banners": ("GET", "/admin/creatives/bulk", OPERATORS),
    "admin.show_creative_stats": ("GET", "/admin/creatives/stats", OPERATORS),
    "partner.list_creatives": ("GET", "/partner/creatives", PARTNER_ONLY),
    "partner.show_creative": ("GET", "/partner/creatives/{creative_id}", PARTNER_ONLY),
    "partner.show_creative_stats": ("GET", "/partner/creatives/stats", PARTNER_ONLY),
    # custom campaign link requests (the request belongs to another partner)
    "partner.rewards": ("GET", "/partner/rewards", PARTNER_ONLY),
    "partner.request_campaign": ("POST", "/partner/rewards/requests", {**PARTNER_ONLY, "partner": 422}),
    "partner.show_campaign_request": (
        "GET",
        "/partner/rewards/requests/{request_id}",
        {**PARTNER_ONLY, "partner": 404},
    ),
    "partner.answer_campaign_request": (
        "POST",
        "/partner/rewards/requests/{request_id}/accept",
        {**PARTNER_ONLY, "partner": 404},
    ),
    "admin.list_campaign_requests": ("GET", "/admin/campaign-requests", OPERATORS),
    "admin.show_outbox": ("GET", "/admin/outbox", OPERATORS),
    "admin.show_campaign_request": ("GET", "/admin/campaign-requests/{request_id}", OPERATORS),
    "admin.approve_campaign_request": (
        "POST",
        "/admin/campaign-requests/{request_id}/approve",
        {**OPERATORS, "manager": HOME, "admin": HOME},
    ),
    "admin.counter_campaign_request": (
        "POST",
        "/admin/campaign-requests/{request_id}/counter",
        {**OPERATORS, "manager": 422, "admin": 422},
    ),
    "admin.decline_campaign_request": (
        "POST",
        "/admin/campaign-requests/{request_id}/decline",
        {**OPERATORS, "manager": 422, "admin": 422},
    ),
    # files: a signed URL is the permission, whoever holds it; the banner address is public
    "media.signed_file": ("GET", "/media/files/creatives/1/x.png", dict.fromkeys(ROLES, 403)),
    "media.banner_image": ("GET", "/media/banners/{creative_id}", dict.fromkeys(ROLES, HOME)),
    # dashboards: CSV of every table (a partner's are their own by construction)
    "partner.export_stats": ("GET", "/partner/stats/link.csv", PARTNER_ONLY),
    "partner.dashboard_news": ("GET", "/partner/dashboard/news", PARTNER_ONLY),
    "partner.dashboard_money": ("GET", "/partner/dashboard/money", PARTNER_ONLY),
    "partner.program_terms": ("GET", "/partner/terms", PARTNER_ONLY),
    "partner.record_onboarding_step": (
        "POST",
        "/partner/onboarding/copy_link",
        {**PARTNER_ONLY, "partner": 204},
    ),
    "admin.new_thread": ("GET", "/admin/inbox/new/{approved_id}", OPERATORS),
    "admin.export_stats": ("GET", "/admin/stats/at_risk.csv", OPERATORS),
    # rewards console: managers and admins; an empty post is refused, a confirmed action redirects
    "admin.rewards_overview": ("GET", "/admin/rewards", OPERATORS),
    "admin.save_plan": ("POST", "/admin/rewards/plan", OPERATORS_REFUSED),
    "admin.add_product_rate": ("POST", "/admin/rewards/products", OPERATORS_REFUSED),
    "admin.edit_product_rate": ("GET", "/admin/rewards/products/{product_rate_id}", OPERATORS),
    "admin.delete_product_rate": ("POST", "/admin/rewards/products/{product_rate_id}/delete", OPERATORS_ACT),
    "admin.list_tiers": ("GET", "/admin/rewards/tiers", OPERATORS),
    "admin.new_tier": ("GET", "/admin/rewards/tiers/new", OPERATORS),
    "admin.edit_tier": ("GET", "/admin/rewards/tiers/{tier_id}", OPERATORS),
    "admin.delete_tier": ("POST", "/admin/rewards/tiers/{tier_id}/delete", OPERATORS_ACT),
    "admin.list_campaigns": ("GET", "/admin/rewards/campaigns", OPERATORS),
    "admin.new_campaign": ("GET", "/admin/rewards/campaigns/new", OPERATORS),
    "admin.edit_campaign": ("GET", "/admin/rewards/campaigns/{campaign_id}", OPERATORS),
    "admin.add_campaign_link": ("POST", "/admin/rewards/campaigns/{campaign_id}/links", OPERATORS_REFUSED),
    "admin.end_campaign": ("POST", "/admin/rewards/campaigns/{campaign_id}/end", OPERATORS_ACT),
    "admin.delete_campaign": ("POST", "/admin/rewards/campaigns/{campaign_id}/delete", OPERATORS_ACT),
    "admin.ladder": ("GET", "/admin/rewards/ladder", OPERATORS),
    "admin.download_partner_qr": ("GET", "/admin/partners/{approved_id}/qr.svg", OPERATORS),
    "admin.download_link_qr": ("GET", "/admin/links/{link_id}/qr.png", OPERATORS),
    "admin.delete_ladder_step": ("POST", "/admin/rewards/ladder/{step_id}/delete", OPERATORS_ACT),
    "admin.list_deals": ("GET", "/admin/rewards/deals", OPERATORS),
    "admin.new_deal": ("GET", "/admin/rewards/deals/new", OPERATORS),
    "admin.edit_deal": ("GET", "/admin/rewards/deals/{deal_id}", OPERATORS),
    "admin.delete_deal": ("POST", "/admin/rewards/deals/{deal_id}/delete", OPERATORS_ACT),
    "admin.set_partner_tier": ("POST", "/admin/partners/{approved_id}/tier", OPERATORS_ACT),
    "admin.set_partner_access": (
        "POST",
        "/admin/partners/{approved_id}/access/deactivate",
        {**ADMIN_ONLY, "admin": HOME},
    ),
}


def _reward_rules(db, partner, template: str) -> dict[str, int | None]:
    """The rewards rule a console route needs (only that one, to keep the matrix quick)."""
    from datetime import timedelta

    from portal.models import Campaign, LadderStep, PrivateDeal, ProductRate, Tier

    made = {}
    if "{tier_id}" in template:
        made["tier_id"] = Tier(name="Gold", rank=1, threshold_metric="conversions", threshold_value=5)
    if "{campaign_id}" in template:
        made["campaign_id"] = Campaign(
            name="Later", starts_at=utcnow() + timedelta(days=3), ends_at=utcnow() + timedelta(days=9)
        )
    if "{product_rate_id}" in template:
        made["product_rate_id"] = ProductRate(product_id="pro", rate_type="percent", rate_percent_bp=2000)
    if "{step_id}" in template:
        made["step_id"] = LadderStep(threshold_conversions=10, bonus_minor=5000)
    if "{deal_id}" in template:
        made["deal_id"] = PrivateDeal(partner_id=partner.id, rate_type="percent", rate_percent_bp=2500)
    db.session.add_all(made.values())
    db.session.flush()
    ids = dict.fromkeys(["tier_id", "campaign_id", "product_rate_id", "step_id", "deal_id"])
    return ids | {name: row.id for name, row in made.items()}


def test_every_route_is_in_the_matrix(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert endpoints - MATRIX.keys() == set(), "add the new routes to MATRIX"
    assert MATRIX.keys() - endpoints == set(), "remove routes that no longer exist"


def test_every_admin_route_carries_a_role_check(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("admin."):
            view = app.view_functions[rule.endpoint]
            assert getattr(view, "required_roles", None), f"{rule.endpoint} has no role check"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", sorted(MATRIX))
def test_route_permissions(client, db, program, login_as, endpoint, role):
    method, _template, expected_by_role = MATRIX[endpoint]
    response = _open_as(client, db, program, login_as, endpoint, role, method)
    _assert_answer(response, expected_by_role[role])


def _assert_answer(response, expected) -> None:
    if expected == LOGIN:
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login")
    elif expected == HOME:
        assert response.status_code == 302
        assert not response.headers["Location"].startswith("/login")
    else:
        assert response.status_code == expected, response.get_data(as_text=True)[:500]


def _methods(app, endpoint: str) -> set[str]:
    return {m for rule in app.url_map.iter_rules(endpoint) for m in rule.methods} - {"HEAD", "OPTIONS"}


# The routes that answer GET and POST (checked against the URL map below).
MULTI_METHOD_ENDPOINTS = {
    "auth.login", "auth.login_code", "auth.apply", "auth.forgot_password", "auth.reset_password",
    "auth.unsubscribe", "auth.setup_two_factor", "partner.preferences", "partner.payout_details",
    "admin.edit_product_rate", "admin.new_tier", "admin.edit_tier", "admin.new_campaign",
    "admin.edit_campaign", "admin.ladder", "admin.new_deal", "admin.edit_deal", "admin.settings",
    "admin.team", "admin.api_keys_page", "admin.new_thread", "admin.new_announcement",
    "admin.edit_announcement", "admin.edit_template", "admin.create_creative", "admin.edit_creative",
    "admin.bulk_upload_banners", "admin.list_webhooks", "admin.show_webhook",
}  # fmt: skip
MULTI_METHOD = [(endpoint, role) for endpoint in sorted(MULTI_METHOD_ENDPOINTS) for role in ROLES]


def test_the_multi_method_list_is_the_url_maps(app):
    both = {endpoint for endpoint in MATRIX if len(_methods(app, endpoint)) > 1}
    assert both == MULTI_METHOD_ENDPOINTS
    assert all(MATRIX[endpoint][0] == "GET" for endpoint in both)  # the matrix row is the GET


@pytest.mark.parametrize(("endpoint", "role"), MULTI_METHOD)
def test_every_method_of_a_route_keeps_its_permission(app, client, db, program, login_as, endpoint, role):
    """The row's GET decision holds for POST too: who is refused on GET (sent to sign in,
    403, or away from a partner page) is refused the same way; who may see the page may post
    to it (its form answers: a redirect, 200 or 400/404/422 for an empty form, never 401/403)."""
    _method, _template, expected_by_role = MATRIX[endpoint]
    expected = expected_by_role[role]
    response = _open_as(client, db, program, login_as, endpoint, role, "POST")
    refused_away = expected == HOME and role == "applicant"
    if expected in (LOGIN, 401, 403) or refused_away:
        _assert_answer(response, expected)
    else:
        assert response.status_code < 500
        assert response.status_code not in (401, 403), response.status_code
        location = response.headers.get("Location", "")
        assert not location.startswith("/login") or endpoint.startswith("auth."), location


def _open_as(client, db, program, login_as, endpoint: str, role: str, method: str):
    applied = PartnerFactory(status=PartnerStatus.APPLIED)
    approved = PartnerFactory(status=PartnerStatus.APPROVED)
    other_manager = UserFactory(role=Role.MANAGER)
    UserFactory(role=Role.ADMIN)  # so an admin may switch off another operator
    link = create_link(approved, program, label="Owned by someone else", channel="seo")
    conversion = ConversionFactory(
        transaction_id="t-perm", amount_minor=1000, partner=approved, occurred_at=utcnow()
    )
    api_key, _plain = create_api_key("perm", None)
    item = PayoutItemFactory(batch__period_end=date(2026, 11, 15), partner=approved, amount_minor=5000)
    batch = item.batch
    _method, template, _expected = MATRIX[endpoint]
    thread = announcement = None
    if "{thread_id}" in template:  # only the routes that need them, to keep the matrix quick
        thread = inbox.start_thread(approved, other_manager, "For someone else", "Hello")
    if "{announcement_id}" in template:
        announcement = save_announcement(
            other_manager,
            AnnouncementDraft(
                "Only for them", "News", audience_kind="partners", audience_items=[approved.ref_code]
            ),
        )
    campaign_request = None
    if "{request_id}" in template:
        set_partner_tags(approved, other_manager, [program.top_partner_tag])
        campaign_request = campaign_requests.submit_request(
            approved,
            program,
            campaign_requests.RequestInput("Theirs", "https://shop.example/theirs", 1500, 10),
        )
    # Only the creative routes need one (and storing its file is not free).
    creative = make_banner(other_manager, program) if "{creative_id}" in template else None
    rules = _reward_rules(db, approved, template)
    coupon = coupons.add_coupon(approved, "PERM10", None) if "{coupon_id}" in template else None
    db.session.commit()
    if role == "applicant":
        login_as(Role.PARTNER, status=PartnerStatus.APPLIED)
    elif role != "anonymous":
        login_as(role)

    url = template.format(
        applied_id=applied.id,
        approved_id=approved.id,
        approved_ref=approved.ref_code,
        other_manager_id=other_manager.id,
        link_id=link.id,
        conversion_id=conversion.id,
        transaction_id=conversion.transaction_id,
        api_key_id=api_key.id,
        batch_id=batch.id,
        item_id=item.id,
        thread_id=thread.id if thread else None,
        announcement_id=announcement.id if announcement else None,
        creative_id=creative.id if creative else None,
        request_id=campaign_request.id if campaign_request else None,
        coupon_id=coupon.id if coupon else None,
        **rules,
    )
    return client.open(url, method=method)


# --- own partner / other partner ------------------------------------------------------------

# Partner routes that name an object: (method, url, form, what the owner gets). Anyone else's
# object answers 404 (403 would do too): a partner cannot even learn that it exists.
OWNED = {
    "partner.toggle_link": ("POST", "/partner/links/{link_id}/disable", {}, HOME),
    "partner.show_conversion": ("GET", "/partner/conversions/{conversion_id}", {}, 200),
    "partner.show_thread": ("GET", "/partner/inbox/{thread_id}", {}, 200),
    "partner.reply_thread": ("POST", "/partner/inbox/{thread_id}", {"body": "Thanks!"}, HOME),
    "partner.show_announcement": ("GET", "/partner/announcements/{announcement_id}", {}, 200),
    "partner.show_campaign_request": ("GET", "/partner/rewards/requests/{request_id}", {}, 200),
    "partner.answer_campaign_request": ("POST", "/partner/rewards/requests/{request_id}/withdraw", {}, HOME),
    "partner.download_link_qr": ("GET", "/partner/links/{link_id}/qr.svg", {}, 200),
    "partner.download_coupon_qr": ("GET", "/partner/coupons/{coupon_id}/qr.png", {}, 200),
}
# Partner routes with a placeholder that is not someone's object, and why.
NOT_OWNED = {
    "partner.show_creative": "the creative library is shared by every approved partner",
    "partner.export_stats": "the placeholder names a table; the rows are the signed-in partner's",
    "partner.record_onboarding_step": "the placeholder names a checklist step of the signed-in partner",
    "partner.download_main_link_qr": "the placeholder names a file format; the link is the partner's own",
}


def test_every_partner_route_naming_an_object_has_owner_columns(app):
    with_placeholder = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("partner.") and rule.arguments
    }
    assert with_placeholder == OWNED.keys() | NOT_OWNED.keys()


def _objects_of(partner, program, db, operator) -> dict[str, int]:
    """One of each object a partner owns: link, sale, thread, announcement, campaign request, coupon code."""
    link = create_link(partner, program, label=f"{partner.ref_code}'s link", channel="seo")
    conversion = ConversionFactory(
        transaction_id=f"t-own-{partner.id}", amount_minor=1000, partner=partner, occurred_at=utcnow()
    )
    thread = inbox.start_thread(partner, operator, "For this partner", "Hello")
    announcement = save_announcement(
        operator,
        AnnouncementDraft(
            "Only for one", "News", audience_kind="partners", audience_items=[partner.ref_code]
        ),
    )
    set_partner_tags(partner, operator, [program.top_partner_tag])
    request = campaign_requests.submit_request(
        partner,
        program,
        campaign_requests.RequestInput("Mine", "https://shop.example/mine", 1500, 10),
    )
    coupon = coupons.add_coupon(partner, f"OWN-{partner.id}", None)
    db.session.flush()
    return {
        "link_id": link.id,
        "coupon_id": coupon.id,
        "conversion_id": conversion.id,
        "thread_id": thread.id,
        "announcement_id": announcement.id,
        "request_id": request.id,
    }


@pytest.mark.parametrize("owner", ["own", "other"])
@pytest.mark.parametrize("endpoint", sorted(OWNED))
def test_a_partner_acts_on_their_own_objects_and_not_on_anothers(
    client, db, program, login_as, endpoint, owner
):
    operator = UserFactory(role=Role.MANAGER)
    me = login_as(Role.PARTNER).partner
    someone = PartnerFactory(status=PartnerStatus.APPROVED)
    objects = _objects_of(me if owner == "own" else someone, program, db, operator)
    db.session.commit()
    method, template, form, owner_gets = OWNED[endpoint]
    response = client.open(template.format(**objects), method=method, data=form)
    if owner == "own":
        _assert_answer(response, owner_gets)
    else:
        assert response.status_code in (403, 404), response.status_code
