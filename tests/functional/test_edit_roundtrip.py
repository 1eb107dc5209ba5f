"""Every operator edit form, submitted exactly as the page filled it, changes nothing and audits nothing.

The forms are listed once in ``EDIT_FORMS``; ``test_every_form_endpoint_is_listed`` fails when
an admin endpoint that takes a form is neither listed there nor in ``NOT_EDIT_FORMS`` with the
reason it has nothing to round-trip, so a new form cannot be forgotten.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pprint import pformat

import pytest
import sqlalchemy as sa
import time_machine

from portal.extensions import db as _db
from portal.models import AuditEvent, AutomaticKind, PartnerStatus, Role
from portal.services import announcements, creatives, lifecycle, partners, reward_rules, rewards, webhooks
from portal.services.reward_rules import (
    CampaignInput,
    DealInput,
    PlanInput,
    ProductRateInput,
    RateInput,
    TierInput,
)
from tests.creative_support import details, upload
from tests.factories import PartnerFactory, UserFactory

NOW = datetime(2030, 3, 14, 23, 30, tzinfo=UTC)  # late in the day: UTC and Berlin disagree on the date

# --- the browser's side: what a form submits --------------------------------------------------


@dataclass
class HtmlForm:
    action: str
    method: str
    enctype: str
    fields: list[tuple[str, str]]
    files: list[str]


class _FormParser(HTMLParser):
    """Collects each <form> and what a browser would send for it unchanged (the first submit button)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[HtmlForm] = []
        self._form: HtmlForm | None = None
        self._submitted = False
        self._select: tuple[str, bool] | None = None
        self._options: list[tuple[str, bool]] = []
        self._option_value: str | None = None
        self._option_text = ""
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = HtmlForm(
                a.get("action") or "",
                (a.get("method") or "get").upper(),
                a.get("enctype") or "",
                [],
                [],
            )
            self._submitted = False
            return
        if self._form is None or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind in ("checkbox", "radio"):
                if "checked" in a and name:
                    self._form.fields.append((name, a.get("value") or "on"))
            elif kind in ("submit", "image"):
                if not self._submitted:
                    self._submitted = True
                    if name:
                        self._form.fields.append((name, a.get("value") or ""))
            elif kind == "file":
                if name:
                    self._form.files.append(name)
            elif kind not in ("button", "reset") and name:
                self._form.fields.append((name, a.get("value") or ""))
        elif tag == "button":
            if (a.get("type") or "submit").lower() == "submit" and not self._submitted:
                self._submitted = True
                if name:
                    self._form.fields.append((name, a.get("value") or ""))
        elif tag == "select" and name:
            self._select = (name, "multiple" in a)
            self._options = []
        elif tag == "option" and self._select is not None:
            self._option_value = a.get("value")
            self._option_text = ""
            self._options.append(("", "selected" in a))
        elif tag == "textarea" and name:
            self._textarea = name
            self._text = ""

    def handle_data(self, data):
        if self._textarea is not None:
            self._text += data
        elif self._select is not None and self._options:
            self._option_text += data

    def handle_endtag(self, tag):
        if tag == "option" and self._select is not None and self._options:
            value = self._option_value if self._option_value is not None else self._option_text.strip()
            self._options[-1] = (value, self._options[-1][1])
        elif tag == "select" and self._select is not None and self._form is not None:
            name, multiple = self._select
            chosen = [value for value, selected in self._options if selected]
            if not chosen and not multiple and self._options:
                chosen = [self._options[0][0]]
            if not multiple:
                chosen = chosen[-1:]
            self._form.fields.extend((name, value) for value in chosen)
            self._select = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            # A browser drops one newline right after <textarea> and sends line breaks as CRLF.
            text = self._text[1:] if self._text.startswith("\n") else self._text
            self._form.fields.append((self._textarea, text.replace("\r\n", "\n").replace("\n", "\r\n")))
            self._textarea = None
        elif tag == "form" and self._form is not None:
            self.forms.append(self._form)
            self._form = None


def forms_in(html: str) -> list[HtmlForm]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def submit_unchanged(client, page_url: str, action: str):
    """Open ``page_url`` and post its form whose action is ``action`` as the browser would."""
    page = client.get(page_url)
    assert page.status_code == 200, page_url
    matching = [f for f in forms_in(page.get_data(as_text=True)) if (f.action or page_url) == action]
    assert len(matching) == 1, f"{page_url} has {len(matching)} forms posting to {action}"
    form = matching[0]
    assert form.method == "POST"
    data: dict[str, list] = {}
    for name, value in form.fields:
        data.setdefault(name, []).append(value)
    for name in form.files:  # an untouched file input sends an empty part
        data.setdefault(name, []).append((io.BytesIO(b""), ""))
    return client.post(action, data=data, content_type=form.enctype or None)


# --- the database's side: everything but the clocks of last change ----------------------------

IGNORED_COLUMNS = {"updated_at"}
# The outbox dispatcher's own bookkeeping: its position and receipts move whenever it runs
# after a commit (here: after the page view and the save, through events the set-up wrote).
# They record how far the dispatcher got, not anything the form saved; an event an
# unchanged save wrote would still show in outbox_events, which is compared.
IGNORED_TABLES = {"outbox_consumers", "outbox_receipts"}


def snapshot() -> dict[str, list[tuple]]:
    state = {}
    for table in _db.metadata.sorted_tables:
        if table.name in IGNORED_TABLES:
            continue
        columns = [c for c in table.columns if c.name not in IGNORED_COLUMNS]
        rows = _db.session.execute(sa.select(*columns).order_by(*table.primary_key.columns)).all()
        state[table.name] = [tuple(row) for row in rows]
    return state


def audit_count() -> int:
    return _db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))


def changes(before: dict, after: dict) -> dict:
    """Per changed table, the rows only before (``-``) and only after (``+``)."""
    return {
        name: {
            "-": [r for r in before[name] if r not in after[name]],
            "+": [r for r in after[name] if r not in before[name]],
        }
        for name in before
        if before[name] != after[name]
    }


# --- the forms ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditForm:
    name: str
    endpoint: str  # the endpoint the form posts to
    make: Callable  # (program, admin) -> (page url, action url); creates what the form edits
    expect: int = 302  # an untouched add-form (nothing to edit) is refused instead


def _rate(percent_bp: int) -> RateInput:
    return RateInput("percent", percent_bp, 0)


def _partner(**kwargs):
    return PartnerFactory(status=PartnerStatus.APPROVED, **kwargs)


def _tier(program, admin, name="Gold", rank=2, percent_bp=2000, metric="revenue", threshold=500_000):
    return reward_rules.save_tier(
        program,
        admin,
        TierInput(name, rank, _rate(percent_bp), metric, threshold, "previous_month", True),
    )


def make_settings(**values):
    def make(program, admin):
        for name, value in values.items():
            setattr(program, name, value)
        program.allowed_domains = ["shop.example", "blog.example"]
        return "/admin/settings", "/admin/settings"

    return make


def make_settings_with_team_2fa(program, admin):
    """The team must use two-factor sign-in: the admin has it on, or the console sends them to set it up."""
    import pyotp

    from portal.services import two_factor

    secret = two_factor.start_enrolment(admin)
    two_factor.confirm_enrolment(admin, pyotp.TOTP(secret).at(NOW), NOW)
    return make_settings(require_team_2fa=True)(program, admin)


def make_plan(percent_bp, recurring="forever", months=None, tag=None):
    def make(program, admin):
        reward_rules.save_plan(program, admin, PlanInput(_rate(percent_bp), recurring, months, tag))
        return "/admin/rewards", "/admin/rewards/plan"

    return make


def make_flat_plan(program, admin):
    reward_rules.save_plan(program, admin, PlanInput(RateInput("flat", 0, 500), "months", 12, "top partner"))
    return "/admin/rewards", "/admin/rewards/plan"


def make_product_rate(rate: RateInput, label):
    def make(program, admin):
        found = reward_rules.save_product_rate(admin, ProductRateInput("tent-2p", rate, label))
        url = f"/admin/rewards/products/{found.id}"
        return url, url

    return make


def make_tier(**kwargs):
    def make(program, admin):
        _tier(program, admin, name="Silver", rank=1, percent_bp=1250, threshold=100_000)
        url = f"/admin/rewards/tiers/{_tier(program, admin, **kwargs).id}"
        return url, url

    return make


def make_campaign(reward="rate", audience="everyone"):
    def make(program, admin):
        gold = _tier(program, admin)
        bronze = _tier(program, admin, name="Bronze", rank=1, percent_bp=500, threshold=100_000)
        first, second = _partner(ref_code="zed"), _partner(ref_code="amy")
        tagged = _partner()
        partners.set_partner_tags(tagged, admin, ["youtube"])
        data = CampaignInput(
            name="Summer sale",
            description="Tents\nand stoves",
            starts_local=datetime(2030, 6, 1, 9, 0),
            ends_local=datetime(2030, 6, 30, 23, 59),
            reward=reward,
            rate=_rate(3000),
            bonus_minor=2500 if reward == "bonus" else None,
            product_ids=["tent-2p", "stove"],
            audience=audience,
            tier_ids=[gold.id, bronze.id],
            tag="youtube",
            partner_keys=[first.ref_code, second.ref_code],
            links_only=audience == "partners",
            landing_url="https://shop.example/summer",
        )
        url = f"/admin/rewards/campaigns/{reward_rules.save_campaign(program, admin, data).id}"
        return url, url

    return make


def make_ladder(program, admin):
    reward_rules.add_ladder_step(admin, 10, 5000)
    return "/admin/rewards/ladder", "/admin/rewards/ladder"


def make_deal(starts_on, ends_on, products=()):
    def make(program, admin):
        data = DealInput(_partner().ref_code, _rate(5), list(products), starts_on, ends_on, "Launch deal")
        url = f"/admin/rewards/deals/{reward_rules.save_deal(program, admin, data).id}"
        return url, url

    return make


def make_template(kind):
    def make(program, admin):
        lifecycle.get_template(kind)
        url = f"/admin/automatic-messages/{kind}"
        return url, url

    return make


def make_announcement(when, audience_kind="all", publish_at=None):
    def make(program, admin):
        items = []
        if audience_kind == "tags":
            for index, name in enumerate(["zeta", "alpha", "mid"]):
                partners.set_partner_tags(_partner(ref_code=f"tag{index}"), admin, [name])
            items = ["zeta", "alpha", "mid"]
        elif audience_kind == "partners":
            items = [_partner(ref_code="zz").ref_code, _partner(ref_code="aa").ref_code]
        elif audience_kind == "tiers":
            items = ["Gold", "Bronze"]
            _tier(program, admin)
            _tier(program, admin, name="Bronze", rank=1, percent_bp=500, threshold=100_000)
        draft = announcements.AnnouncementDraft(
            title="New tents",
            body="They are here.\n\nLook at the *stoves* too.",
            audience_kind=audience_kind,
            audience_items=items,
            pinned=True,
            when=when,
            publish_at=publish_at,
        )
        url = f"/admin/announcements/{announcements.save_announcement(admin, draft, now=NOW).id}"
        return url, url

    return make


CREATIVE_CONTENT = {
    "banner": {},
    "text": {"headline": "Sleep well outside", "body": "Our favourite tent:\n{link}"},
    "landing": {"url": "https://shop.example/tents"},
    "email": {"subject": "Tents are in", "body": "Hello,\n\nnew tents: {link}", "call_to_action": "Look"},
    "video": {"url": "https://shop.example/video", "body": "Watch it", "headline": "Tent video"},
}


def make_creative(kind):
    def make(program, admin):
        data = details("Summer sale", ("social", "email"), description="For July", **CREATIVE_CONTENT[kind])
        data.campaign = "summer"
        found = creatives.create_creative(
            kind, admin, program, data, upload() if kind in creatives.FILE_KINDS else None
        )
        url = f"/admin/creatives/{found.id}"
        return url, url

    return make


def make_team(program, admin):
    UserFactory(role=Role.MANAGER)
    return "/admin/team", "/admin/team"


def make_webhook(event_types, enabled=True):
    def make(program, admin):
        endpoint, _secret = webhooks.create_endpoint(
            "https://hooks.shop.example/portal", event_types, admin, description="Shop's receiver"
        )
        endpoint.enabled = enabled
        url = f"/admin/webhooks/{endpoint.id}"
        return url, url

    return make


def make_partner_form(action, tags=(), manager=False, tier=False):
    def make(program, admin):
        partner = _partner()
        if tags:
            partners.set_partner_tags(partner, admin, list(tags))
        if manager:
            partners.assign_manager(partner, admin, UserFactory(role=Role.MANAGER))
        if tier:
            rewards.set_tier(program, partner, _tier(program, admin), reason="manual", since=NOW, actor=admin)
        url = f"/admin/partners/{partner.id}"
        return url, f"{url}/{action}"

    return make


EDIT_FORMS = [
    EditForm("settings at 10 %", "admin.settings", make_settings(commission_percent_bp=1000)),
    EditForm(
        "settings at 0.05 %, weekly",
        "admin.settings",
        make_settings(
            commission_percent_bp=5, payout_schedule="weekly", payout_day=4, minimum_payout_minor=5050
        ),
    ),
    EditForm(
        "settings with a fixed amount",
        "admin.settings",
        make_settings(commission_type="flat", commission_flat_minor=1234, commission_percent_bp=1250),
    ),
    EditForm("settings with two-factor sign-in for the team", "admin.settings", make_settings_with_team_2fa),
    EditForm("plan at 10 %", "admin.save_plan", make_plan(1000)),
    EditForm("plan at 12.5 %", "admin.save_plan", make_plan(1250, "months", 6, "top partner")),
    EditForm("plan at 0.05 %", "admin.save_plan", make_plan(5, "none")),
    EditForm("plan with a fixed amount", "admin.save_plan", make_flat_plan),
    EditForm("product rate 10 %", "admin.edit_product_rate", make_product_rate(_rate(1000), "Tent")),
    EditForm(
        "product rate 5.00", "admin.edit_product_rate", make_product_rate(RateInput("flat", 0, 500), None)
    ),
    EditForm("tier on revenue", "admin.edit_tier", make_tier()),
    EditForm(
        "tier on conversions",
        "admin.edit_tier",
        make_tier(metric="conversions", threshold=50, percent_bp=2050),
    ),
    EditForm("campaign for everyone", "admin.edit_campaign", make_campaign()),
    EditForm("campaign for tiers", "admin.edit_campaign", make_campaign(audience="tiers")),
    EditForm("campaign for a tag", "admin.edit_campaign", make_campaign("bonus", "tag")),
    EditForm("campaign for partners", "admin.edit_campaign", make_campaign(audience="partners")),
    EditForm("ladder (adds only)", "admin.ladder", make_ladder, expect=422),
    EditForm("deal for ever", "admin.edit_deal", make_deal(None, None)),
    EditForm(
        "deal with dates", "admin.edit_deal", make_deal(date(2030, 4, 1), date(2030, 4, 30), ["b", "a"])
    ),
    *(EditForm(f"template {kind}", "admin.edit_template", make_template(kind)) for kind in AutomaticKind),
    EditForm("announcement draft", "admin.edit_announcement", make_announcement("draft")),
    EditForm(
        "announcement scheduled for tags",
        "admin.edit_announcement",
        make_announcement("schedule", "tags", datetime(2030, 4, 1, 22, 30, tzinfo=UTC)),
    ),
    EditForm(
        "announcement draft for partners", "admin.edit_announcement", make_announcement("draft", "partners")
    ),
    EditForm("announcement draft for tiers", "admin.edit_announcement", make_announcement("draft", "tiers")),
    *(
        EditForm(f"creative {kind}", "admin.edit_creative", make_creative(kind))
        for kind in ("banner", "text", "landing", "email", "video")
    ),
    EditForm("team (invites only)", "admin.team", make_team, expect=422),
    EditForm("partner tags", "admin.set_partner_tags", make_partner_form("tags", tags=("b-list", "a-list"))),
    EditForm("partner without tags", "admin.set_partner_tags", make_partner_form("tags")),
    EditForm("partner manager", "admin.assign_manager", make_partner_form("manager", manager=True)),
    EditForm("partner without manager", "admin.assign_manager", make_partner_form("manager")),
    EditForm("partner tier", "admin.set_partner_tier", make_partner_form("tier", tier=True)),
    EditForm("partner without tier", "admin.set_partner_tier", make_partner_form("tier")),
    EditForm(
        "webhook endpoint, some types",
        "admin.show_webhook",
        make_webhook(["conversion.created", "payout.paid"]),
    ),
    EditForm(
        "webhook endpoint, every type, disabled", "admin.show_webhook", make_webhook(None, enabled=False)
    ),
]

# Admin endpoints that take a POST but have nothing to round-trip, and why.
NOT_EDIT_FORMS = {
    "admin.list_webhooks": "creates a webhook endpoint",
    "admin.rotate_webhook_secret": "an action (confirm button)",
    "admin.test_webhook": "an action (confirm button)",
    "admin.delete_webhook": "an action (confirm button)",
    "admin.resend_webhook": "an action (confirm button)",
    "admin.approve_partner": "an action (confirm button)",
    "admin.approve_application": "an action (confirm button)",
    "admin.reject_partner": "an action with a reason",
    "admin.suspend_partner": "an action with a reason",
    "admin.reinstate_partner": "an action (confirm button)",
    "admin.set_team_member_active": "an action (confirm button)",
    "admin.set_partner_access": "an action (confirm button)",
    "admin.approve_conversion": "an action (confirm button)",
    "admin.reject_conversion": "an action with a reason",
    "admin.grant_slug": "creates a link name",
    "admin.api_keys_page": "creates an API key",
    "admin.add_coupon": "creates a coupon code",
    "admin.add_rate": "adds (or replaces) one day's exchange rate; nothing is edited",
    "admin.import_rates": "a file upload",
    "admin.decide_coupon": "an action (confirm button)",
    "admin.revoke_api_key": "an action (confirm button)",
    "admin.reply_thread": "sends a message",
    "admin.start_thread": "sends a message",
    "admin.new_thread": "sends a message",
    "admin.new_announcement": "creates an announcement",
    "admin.pin_announcement": "an action (confirm button)",
    "admin.reset_template": "an action (confirm button)",
    "admin.run_settlement": "an action (confirm button)",
    "admin.approve_batch": "an action (confirm button)",
    "admin.release_item": "an action (confirm button)",
    "admin.mark_batch_paid": "an action with a payment reference",
    "admin.mark_item": "an action with a payment reference",
    "admin.create_creative": "creates a creative",
    "admin.replace_creative_file": "uploads a new file",
    "admin.set_creative_status": "an action (confirm button)",
    "admin.bulk_upload_banners": "creates creatives",
    "admin.add_product_rate": "creates a product rate",
    "admin.delete_product_rate": "an action (confirm button)",
    "admin.new_tier": "creates a tier",
    "admin.delete_tier": "an action (confirm button)",
    "admin.new_campaign": "creates a campaign",
    "admin.add_campaign_link": "creates a link",
    "admin.end_campaign": "an action (confirm button)",
    "admin.delete_campaign": "an action (confirm button)",
    "admin.delete_ladder_step": "an action (confirm button)",
    "admin.new_deal": "creates a deal",
    "admin.delete_deal": "an action (confirm button)",
    "admin.approve_campaign_request": "an action on a partner's request",
    "admin.counter_campaign_request": "an offer on a partner's request",
    "admin.decline_campaign_request": "an action on a partner's request",
}


def test_every_form_endpoint_is_listed(app):
    posting = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.") and "POST" in (rule.methods or ())
    }
    listed = {form.endpoint for form in EDIT_FORMS}
    assert posting - listed - NOT_EDIT_FORMS.keys() == set(), (
        "add the new form to EDIT_FORMS (or NOT_EDIT_FORMS)"
    )
    assert (listed | NOT_EDIT_FORMS.keys()) - posting == set(), "remove endpoints that no longer exist"
    assert listed & NOT_EDIT_FORMS.keys() == set()


def test_form_parser_sends_what_a_browser_sends():
    html = """
    <form method="post" action="/x" enctype="multipart/form-data">
      <input type="hidden" name="csrf_token" value="t">
      <input name="rate" value="10"><input name="off" value="no" disabled>
      <input type="checkbox" name="on" value="y" checked><input type="checkbox" name="unticked" value="y">
      <input type="radio" name="kind" value="a"><input type="radio" name="kind" value="b" checked>
      <select name="one"><option value="1">One</option><option value="2" selected>Two</option></select>
      <select name="first"><option>Alpha</option><option>Beta</option></select>
      <select name="many" multiple>
        <option value="1" selected>1</option><option value="2">2</option><option value="3" selected>3</option>
      </select>
      <textarea name="text">
line one
&lt;two&gt;</textarea>
      <input type="file" name="file">
      <button type="submit" name="go" value="save">Save</button><button name="other" value="x">No</button>
    </form>"""
    (form,) = forms_in(html)
    assert (form.action, form.method, form.enctype, form.files) == (
        "/x",
        "POST",
        "multipart/form-data",
        ["file"],
    )
    assert form.fields == [
        ("csrf_token", "t"),
        ("rate", "10"),
        ("on", "y"),
        ("kind", "b"),
        ("one", "2"),
        ("first", "Alpha"),
        ("many", "1"),
        ("many", "3"),
        ("text", "line one\r\n<two>"),
        ("go", "save"),
    ]


@pytest.mark.postgres  # JSON lists, time zones and text round-trip on both databases
@pytest.mark.parametrize("form", EDIT_FORMS, ids=lambda form: form.name)
def test_an_unchanged_form_changes_nothing(client, db, program, login_as, form):
    with time_machine.travel(NOW, tick=False):
        admin = login_as(Role.ADMIN)  # signed in at the pinned time, so the session is fresh
        page_url, action = form.make(program, admin)
        db.session.commit()
        client.get(page_url)  # a first view may save built-in wording; that is not the form's doing
        db.session.expire_all()
        before, audited = snapshot(), audit_count()

        response = submit_unchanged(client, page_url, action)

        assert response.status_code == form.expect, response.get_data(as_text=True)[:3000]
        db.session.expire_all()
        diff = changes(before, snapshot())
        assert not diff, pformat(diff, width=200)
        assert audit_count() == audited
        if form.expect == 302:
            # A second round trip from the page as it is now: still nothing.
            assert submit_unchanged(client, page_url, action).status_code == 302
            db.session.expire_all()
            diff = changes(before, snapshot())
            assert not diff, pformat(diff, width=200)
            assert audit_count() == audited


def test_the_round_trip_saves_a_change_when_there_is_one(client, db, program, login_as):
    """The same machinery does see a change: an edited field is saved and audited."""
    with time_machine.travel(NOW, tick=False):
        admin = login_as(Role.ADMIN)
        page_url, action = make_plan(1000)(program, admin)
        db.session.commit()
        audited = audit_count()
        page = client.get(page_url).get_data(as_text=True)
        (form,) = [f for f in forms_in(page) if f.action == action]
        data = dict(form.fields) | {"rate_percent": "20"}
        assert client.post(action, data=data).status_code == 302
        db.session.refresh(program)
        assert program.commission_percent_bp == 2000
        assert audit_count() == audited + 1
