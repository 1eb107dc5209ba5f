"""The XSS payload list through every user-controlled text field the portal shows again (#13).

Each payload is stored through the services (as the forms would store it) in every text field a
partner or an operator can fill and that a page renders back; then every page that shows the field
is opened in Chromium as the viewer who would see it (the partner, the operator). A page fails if a
JavaScript dialog opens, if an element or attribute from a payload is in its DOM (an ``on*``
handler, an ``img[src=x]``, a ``javascript:`` link, a frame, an injected script, a template that
was evaluated), or, through the e2e conftest, if the Content-Security-Policy reported a violation.

Values a service refuses (e.g. ``{{7*7}}`` in a creative, which only knows ``{link}``) are not
stored and not counted; each field must store most of the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa

from portal.errors import DomainError
from portal.extensions import db
from portal.models import Partner, Role, User
from portal.models.tracking import RejectionReason
from portal.models.types import utcnow
from portal.services import accounts, announcements, campaign_requests, creatives, inbox, links, tracking
from portal.services.partners import set_partner_tags
from portal.services.payouts import PayoutDetails, save_payout_account
from portal.services.program import get_program
from tests.e2e.support import APPLICANT_PASSWORD, DEMO_EMAILS, SHOP, book_line, unique_email

pytestmark = pytest.mark.e2e

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "<svg onload=alert(1)>",
    "xss{{7*7}}",
    "</textarea><script>alert(1)</script>",
    "</title><script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "![x](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">t</a>',
    "[x](&#106;avascript:alert(1))",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "xss${7*7}",
    "${alert(1)}",
    '" onmouseover="alert(1)" x="',
    "' onfocus='alert(1)' autofocus x='",
    "` onerror=`alert(1)` x=`",
    "\\u003cimg src=x onerror=alert(1)\\u003e",
    "\u003csvg/onload=alert(1)\u003e",
    "＜script＞alert(1)＜/script＞",
    "<details open ontoggle=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    '<object data="javascript:alert(1)"></object>',
    "<input autofocus onfocus=alert(1)>",
    # Passes WTForms' URL() check (a scheme, "://", a host with a TLD): a website from /apply.
    "javascript://example.com/%0Aalert(1)",
]

# Fields whose service accepts only letters, digits and a few marks: every payload is refused
# there (so none can reach a page), which the matrix checks instead of rendering them.
ALLOW_LISTED = {"tag name", "link campaign / sub id"}
# The website is tried as the payload and, when refused, inside an https URL: both are counted.

# Everything a payload could leave in the DOM; the portal itself writes none of it (its CSP
# allows no inline handler, so any on* attribute was not written by the portal).
_FIND_INJECTED = """() => {
  const found = [];
  const describe = (el) => el.outerHTML.slice(0, 160);
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      if (attr.name.toLowerCase().startsWith("on")) found.push("handler: " + describe(el));
      if (["href", "src", "action", "formaction", "data", "xlink:href"].includes(attr.name.toLowerCase())
          && /^\\s*javascript:/i.test(attr.value.replace(/[\\u0000-\\u0020]/g, ""))) {
        found.push("javascript URL: " + describe(el));
      }
    }
    if (el.hasAttribute("srcdoc")) found.push("srcdoc: " + describe(el));
  }
  for (const a of document.querySelectorAll("a[href], area[href]")) {
    if (a.protocol === "javascript:") found.push("javascript link: " + describe(a));
  }
  const injected = ['img[src="x"]', "iframe", "object", "embed", "math", "svg[onload]", "input[autofocus]",
                    "base", "body meta[http-equiv]"];
  for (const sel of injected) {
    for (const el of document.querySelectorAll(sel)) found.push(sel + ": " + describe(el));
  }
  for (const s of document.querySelectorAll("script")) {
    if (!s.src && s.textContent.includes("alert(")) found.push("script: " + describe(s));
  }
  const text = document.body ? document.body.innerText : "";
  if (text.includes("xss49")) found.push("a template was evaluated (xss49)");
  if (window.__xss) found.push("window.__xss set");
  return found;
}"""


@dataclass
class Stored:
    """What the payloads were written to, and the pages that show them to each viewer."""

    partner_emails: list[str] = field(default_factory=list)
    # per partner e-mail: the pages that partner opens
    partner_pages: dict[str, list[str]] = field(default_factory=dict)
    operator_pages: list[str] = field(default_factory=list)
    # field name -> how many payloads it stored
    stored: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # the first refusal of each field
    creative_ids: list[int] = field(default_factory=list)  # archived when the module is done


def _try(stored: Stored, name: str, write: Callable[[], object]) -> object | None:
    """Write one payload through a service; a DomainError (a refused value) is counted, not stored."""
    try:
        with db.session.begin_nested():
            result = write()
    except DomainError as error:
        stored.refused[name] = stored.refused.get(name, 0) + 1
        stored.reasons.setdefault(name, str(error))
        return None
    stored.stored[name] = stored.stored.get(name, 0) + 1
    return result


@contextmanager
def _one_cheap_hash_per_password() -> Iterator[None]:
    """Hash each password once, cheaply, for the accounts the matrix makes.

    The matrix makes about 170 accounts and signs about 90 of them in. At werkzeug's default
    (scrypt, deliberately slow) hashing them was most of the fixture's minute and checking them
    a fifth of the partner pages' test. The accounts share one pbkdf2 hash per password, as the
    factories share one hash (tests/factories/accounts.py); sign-in still checks the password
    against it through the real form. What is shown on the pages is untouched."""
    import portal.models.accounts as account_models

    real = account_models.generate_password_hash
    hashes: dict[str, str] = {}

    def shared_hash(password: str, *args, **kwargs) -> str:
        if password not in hashes:
            hashes[password] = real(password, method="pbkdf2:sha256:1000")
        return hashes[password]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(account_models, "generate_password_hash", shared_hash)
        yield


@pytest.fixture(scope="module")
def xss_data(live_server) -> Iterator[Stored]:
    stored = Stored()
    with live_server.app.app_context(), live_server.emitting(), _one_cheap_hash_per_password():
        program = get_program()
        manager = db.session.scalars(sa.select(User).where(User.email == DEMO_EMAILS["manager"])).one()
        top_tag = program.top_partner_tag
        hub = None
        for number, payload in enumerate(PAYLOADS):
            partner = _store_one(stored, number, payload, program, manager, top_tag, hub)
            hub = hub or partner
        db.session.commit()
    stored.operator_pages[:0] = [
        "/admin/",
        "/admin/applications",
        "/admin/partners",
        "/admin/team",
        "/admin/inbox",
        "/admin/campaign-requests",
        "/admin/conversions",
        "/admin/announcements",
        "/admin/creatives",
        "/admin/api-keys",
        "/admin/rewards",
        "/admin/rewards/tiers",
        "/admin/rewards/campaigns",
        "/admin/rewards/deals",
        "/admin/payouts",
        "/admin/automatic-messages",
        "/admin/automatic-messages/welcome",
    ]
    # The lists of what the first partner holds for everyone (links, threads, conversions) and
    # of what all partners share (creatives, announcements).
    stored.partner_pages[stored.partner_emails[0]] += [
        "/partner/links",
        "/partner/inbox",
        "/partner/conversions",
        "/partner/creatives",
        "/partner/dashboard/news",
    ]
    yield stored
    # The demo is shared with the other browser tests: the welcome message as it was, no
    # payload tier above Gold on anyone's ladder, and the library's first page the demo's own
    # (29 payload creatives pushed its page previews to the second page of a later test's
    # library, tests/e2e/test_partner_first_screen.py).
    from portal.models import Creative, Tier
    from portal.services import lifecycle, reward_rules

    with live_server.app.app_context():
        manager = db.session.scalars(sa.select(User).where(User.email == DEMO_EMAILS["manager"])).one()
        lifecycle.reset_template("welcome", manager)
        for tier in db.session.scalars(sa.select(Tier).where(Tier.rank >= 100)).all():
            reward_rules.delete_tier(get_program(), manager, tier)
        for creative_id in stored.creative_ids:
            creatives.set_creative_status(db.session.get(Creative, creative_id), manager, "archive")
        db.session.commit()


def _store_one(
    stored: Stored,
    number: int,
    payload: str,
    program,
    manager: User,
    top_tag: str | None,
    hub: Partner | None,
) -> Partner:
    """Write one payload in every field and remember the pages that show it.

    Single-valued fields (the partner's name, payout details, a campaign request: at most five
    open per partner) get a partner per payload; links, threads and rejected conversions all go
    to the first partner (the hub), whose lists then show every payload on one page.
    """
    email = unique_email(f"xss{number}")
    # The partner's name and free text on /apply: fall back to a plain name when refused.
    application = accounts.Application(
        name=payload,
        email=email,
        password=APPLICANT_PASSWORD,
        country="NL",
        channels=["seo"],
        promotion_description=payload,
        website="https://paddle-notes.example",
        social_profiles=payload,
    )
    partner = _try(
        stored,
        "partner name / promotion / social profiles",
        lambda: accounts.apply_as_partner(application),
    )
    if partner is None:
        application.name = f"XSS partner {number}"
        partner = accounts.apply_as_partner(application)
    accounts.approve_partner(partner, manager)
    stored.partner_emails.append(email)
    pages = stored.partner_pages.setdefault(email, [])
    pages += ["/partner/", "/partner/payout-details", "/partner/rewards"]
    hub = hub or partner
    hub_pages = stored.partner_pages[hub.user.email]

    _try(
        stored,
        "tag name",
        lambda: set_partner_tags(partner, manager, [top_tag, payload] if top_tag else [payload]),
    )
    if top_tag and top_tag not in [t.name for t in partner.tags]:
        set_partner_tags(partner, manager, [top_tag])
    _try(
        stored,
        "link label",
        lambda: links.create_link(hub, program, label=payload, channel="social"),
    )
    _try(
        stored,
        "link campaign / sub id",
        lambda: links.create_link(
            partner, program, label="xss", channel="seo", campaign=payload, sub_id=payload
        ),
    )
    thread = _try(
        stored,
        "message subject / body (partner)",
        lambda: inbox.start_thread(hub, hub.user, payload, payload),
    )
    if thread is not None:
        _try(stored, "message body (operator reply)", lambda: inbox.reply(thread, manager, payload))
        hub_pages.append(f"/partner/inbox/{thread.id}")
        stored.operator_pages.append(f"/admin/inbox/{thread.id}")
    _try(
        stored,
        "payout details (holder, bank, instructions)",
        lambda: save_payout_account(
            partner,
            PayoutDetails(
                method="bank",
                account_holder=payload,
                iban="GB82 WEST 1234 5698 7654 32",
                bank_name=payload,
            ),
            partner.user,
        ),
    )
    request = _try(
        stored,
        "campaign request name / note",
        lambda: campaign_requests.submit_request(
            partner,
            program,
            campaign_requests.RequestInput(
                name=payload,
                landing_url=f"{SHOP}/tents",
                desired_percent_bp=1500,
                expected_monthly_conversions=10,
                note=payload,
            ),
        ),
    )
    if request is not None:
        pages.append(f"/partner/rewards/requests/{request.id}")
        stored.operator_pages.append(f"/admin/campaign-requests/{request.id}")
    transaction_id = book_line(hub, 1500, utcnow() + timedelta(days=20), confirmed=False, order="xss")
    conversion = tracking.find_conversion(transaction_id)
    if _try(
        stored,
        "conversion rejection note",
        lambda: tracking.reject_conversion(conversion, manager, RejectionReason.OTHER, payload),
    ):
        stored.operator_pages.append(f"/admin/conversions/{conversion.id}")
        hub_pages.append(f"/partner/conversions/{conversion.id}")
    announcement = _try(
        stored,
        "announcement title / body",
        lambda: announcements.save_announcement(
            manager,
            announcements.AnnouncementDraft(
                title=payload, body=payload, audience_kind="partners", audience_items=[hub.user.email]
            ),
        ),
    )
    if announcement is not None:
        hub_pages.append(f"/partner/announcements/{announcement.id}")
    creative = _try(
        stored,
        "creative name / description / text copy",
        lambda: creatives.set_creative_status(
            creatives.create_creative(
                "text",
                manager,
                program,
                creatives.CreativeInput(
                    name=payload,
                    channels=["other"],
                    description=payload,
                    headline=payload,
                    body=f"{payload} {{link}}",
                    call_to_action=payload,
                    note=payload,
                ),
            ),
            manager,
            "publish",
        ),
    )
    if creative is not None:
        stored.creative_ids.append(creative.id)
        hub_pages.append(f"/partner/creatives/{creative.id}")
        stored.operator_pages.append(f"/admin/creatives/{creative.id}")
    _try(
        stored,
        "team member name",
        lambda: accounts.create_user(
            unique_email(f"xss-team{number}"), payload, APPLICANT_PASSWORD, Role.MANAGER
        ),
    )
    _store_operator_notes(stored, number, payload, program, manager, partner, hub)
    stored.operator_pages.append(f"/admin/partners/{partner.id}")
    # The website on /apply: the payload itself, else inside an https URL; left waiting for review,
    # so the applications list shows it too.
    for website in (payload, f"https://paddle-notes.example/{payload}"):
        applicant = _try(
            stored,
            "website",
            lambda website=website: accounts.apply_as_partner(
                accounts.Application(
                    name=f"XSS website {number}",
                    email=unique_email(f"xss-site{number}"),
                    password=APPLICANT_PASSWORD,
                    country="NL",
                    channels=["seo"],
                    promotion_description="Trip reports.",
                    website=website,
                )
            ),
        )
        if applicant is not None:
            stored.operator_pages.append(f"/admin/partners/{applicant.id}")
            break
    return partner


def _store_operator_notes(
    stored: Stored, number: int, payload: str, program, manager: User, partner: Partner, hub: Partner
) -> None:
    """The rest of what an operator types (rewards rules, keys, templates, notes, reasons) and
    what a partner answers to an offer; each shown to whoever would read it.

    Rules that change money are private to the payload's own partner (a campaign and a deal
    for named partners only, a tier no one reaches), so the shared demo's other tests earn as
    before.
    """
    pages = stored.partner_pages[partner.user.email]
    hub_pages = stored.partner_pages[hub.user.email]
    from portal.services import lifecycle, payouts, reward_rules
    from portal.services.api_keys import create_api_key

    _try(stored, "API key name", lambda: create_api_key(payload, manager))
    tier = _try(
        stored,
        "tier name",
        lambda: reward_rules.save_tier(
            program,
            manager,
            reward_rules.TierInput(
                name=payload,
                rank=100 + number,
                rate=reward_rules.RateInput("percent", 1500),
                threshold_metric="conversions",
                threshold_value=1_000_000 + number,
                period="rolling_30",
            ),
        ),
    )
    if tier is not None:
        stored.operator_pages.append(f"/admin/rewards/tiers/{tier.id}")
        _try(
            stored,
            "partner tier note",
            lambda: reward_rules.set_partner_tier(program, manager, partner, tier, payload),
        )
    local_now = utcnow().astimezone(program_zone(program)).replace(tzinfo=None, microsecond=0)
    campaign = _try(
        stored,
        "campaign name / description",
        lambda: reward_rules.save_campaign(
            program,
            manager,
            reward_rules.CampaignInput(
                name=payload,
                starts_local=local_now - timedelta(hours=1),
                ends_local=local_now + timedelta(days=20),
                rate=reward_rules.RateInput("percent", 1600),
                audience="partners",
                partner_keys=[partner.ref_code],
                description=payload,
            ),
        ),
    )
    if campaign is not None:
        stored.operator_pages.append(f"/admin/rewards/campaigns/{campaign.id}")
    _try(
        stored,
        "product rate label",
        lambda: reward_rules.save_product_rate(
            manager,
            reward_rules.ProductRateInput(
                product_id=f"xss-product-{number}",
                rate=reward_rules.RateInput("percent", 1100),
                label=payload,
            ),
        ),
    )
    deal = _try(
        stored,
        "private deal note",
        lambda: reward_rules.save_deal(
            program,
            manager,
            reward_rules.DealInput(
                partner_key=partner.ref_code, rate=reward_rules.RateInput("percent", 1700), note=payload
            ),
        ),
    )
    if deal is not None:
        stored.operator_pages.append(f"/admin/rewards/deals/{deal.id}")
    # An automatic message written with the payload, sent to the hub (the template is reset at the end).
    message = _try(
        stored,
        "automatic message subject / body",
        lambda: (
            lifecycle.save_template(
                "welcome", manager, lifecycle.TemplateChange(enabled=True, subject=payload, body=payload)
            ),
            lifecycle.notify("welcome", hub, key=f"xss-{number}"),
        )[1],
    )
    if message is not None:
        hub_pages.append(f"/partner/inbox/{message.thread.id}")
    thread = _try(
        stored,
        "message subject / body (operator)",
        lambda: inbox.start_thread(hub, manager, payload, payload),
    )
    if thread is not None:
        hub_pages.append(f"/partner/inbox/{thread.id}")
        stored.operator_pages.append(f"/admin/inbox/{thread.id}")
    # Counter-offer and the partner's answer on this partner's request; the team declines a second.
    requests_of = campaign_requests.partner_requests(partner)
    if requests_of:
        request = requests_of[0]
        if _try(
            stored,
            "counter-offer note",
            lambda: campaign_requests.counter_offer(request, manager, program, 1200, payload),
        ):
            _try(
                stored,
                "partner's note declining an offer",
                lambda: campaign_requests.decline_offer(request, partner.user, program, payload),
            )
    second = campaign_requests.submit_request(
        partner,
        program,
        campaign_requests.RequestInput(
            name=f"Second request {number}",
            landing_url=f"{SHOP}/kayaks",
            desired_percent_bp=1500,
            expected_monthly_conversions=10,
        ),
    )
    declined = _try(
        stored,
        "team's reason declining a request",
        lambda: campaign_requests.decline_request(second, manager, payload),
    )
    if declined is not None:
        pages.append(f"/partner/rewards/requests/{second.id}")
        stored.operator_pages.append(f"/admin/campaign-requests/{second.id}")
    # Application rejected and partner suspended, each with the payload as the reason.
    rejected = accounts.apply_as_partner(
        accounts.Application(
            name=f"XSS rejected {number}",
            email=unique_email(f"xss-rejected{number}"),
            password=APPLICANT_PASSWORD,
            country="NL",
            channels=["seo"],
            promotion_description="Trip reports.",
            website="https://paddle-notes.example",
        )
    )
    if _try(stored, "rejection reason", lambda: accounts.reject_partner(rejected, manager, payload)):
        stored.operator_pages.append(f"/admin/partners/{rejected.id}")
    suspended = accounts.apply_as_partner(
        accounts.Application(
            name=f"XSS suspended {number}",
            email=unique_email(f"xss-suspended{number}"),
            password=APPLICANT_PASSWORD,
            country="NL",
            channels=["seo"],
            promotion_description="Trip reports.",
            website="https://paddle-notes.example",
        )
    )
    accounts.approve_partner(suspended, manager)
    if _try(stored, "suspension reason", lambda: accounts.suspend_partner(suspended, manager, payload)):
        stored.operator_pages.append(f"/admin/partners/{suspended.id}")
        stored.partner_emails.append(suspended.user.email)
        stored.partner_pages[suspended.user.email] = ["/partner/"]
    # Payout details by another method: free instructions and a tax id (a partner of their own,
    # since a partner has one payout account).
    payee = accounts.apply_as_partner(
        accounts.Application(
            name=f"XSS payee {number}",
            email=unique_email(f"xss-payee{number}"),
            password=APPLICANT_PASSWORD,
            country="NL",
            channels=["seo"],
            promotion_description="Trip reports.",
            website="https://paddle-notes.example",
        )
    )
    accounts.approve_partner(payee, manager)
    if _try(
        stored,
        "payout details (other instructions, tax id)",
        lambda: save_payout_account(
            payee,
            PayoutDetails(method="other", other_instructions=payload, tax_id=payload, tax_country="NL"),
            payee.user,
        ),
    ):
        stored.partner_emails.append(payee.user.email)
        stored.partner_pages[payee.user.email] = ["/partner/payout-details"]
        stored.operator_pages.append(f"/admin/partners/{payee.id}")
    # Two payouts to this partner: one recorded paid under the payload as its reference, one
    # failed with the payload as its reason.
    for kind in ("payment reference", "payout failure reason"):
        batch = _one_item_batch(partner, manager)
        item = batch.items[0]
        if kind == "payment reference":
            done = _try(
                stored,
                kind,
                lambda item=item: payouts.mark_item_paid(item, manager, payload, utcnow().date()),
            )
        else:
            done = _try(stored, kind, lambda item=item: payouts.mark_item_failed(item, manager, payload))
        if done is not None:
            stored.operator_pages.append(f"/admin/payouts/{batch.id}")
    if "/partner/earnings" not in pages:
        pages.append("/partner/earnings")


def program_zone(program):
    from zoneinfo import ZoneInfo

    return ZoneInfo(program.timezone)


def _one_item_batch(partner: Partner, manager: User):
    """An approved batch paying ``partner`` one confirmed line (as a withdrawal would build it)."""
    from portal.models import Commission, PayoutBatch, PayoutItem, PayoutLine
    from portal.services import payouts

    transaction_id = book_line(partner, 6000, utcnow() - timedelta(days=1), order="xss-payout")
    line = db.session.scalars(
        sa.select(Commission).where(Commission.conversion_id == tracking.find_conversion(transaction_id).id)
    ).one()
    # A withdrawal batch (scheduled ones are one per payout date, and the demo has its own),
    # dated years back so that the demo's own batches stay first in the operator's list.
    long_ago = utcnow() - timedelta(days=3650)
    batch = PayoutBatch(
        kind="withdrawal",
        currency=line.currency,
        period_end=long_ago.date(),
        cutoff_at=long_ago,
        created_at=long_ago,
        created_by_id=manager.id,
    )
    item = PayoutItem(
        batch=batch,
        partner_id=partner.id,
        amount_minor=line.amount_minor,
        currency=line.currency,
        method="bank",
    )
    db.session.add_all([batch, item])
    db.session.flush()
    db.session.add(PayoutLine(commission_id=line.id, payout_item_id=item.id))
    db.session.flush()
    payouts.approve_batch(batch, manager)
    return batch


_CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def _sign_in(context, email: str) -> None:
    """Sign in through the login form's own POST (CSRF token and all) without rendering it.

    The redirect is not followed: the pages to check are opened next, so rendering the landing
    page here as well would only be paid for twice."""
    login = context.request.get("/login")
    token = _CSRF_FIELD.search(login.text()).group(1)
    answer = context.request.post(
        "/login",
        form={"email": email, "password": APPLICANT_PASSWORD, "csrf_token": token},
        max_redirects=0,
    )
    landing = answer.headers.get("location", "")
    assert answer.status in (302, 303) and landing and "/login" not in landing, (
        f"{email} could not sign in ({answer.status} {landing or answer.url})"
    )


class _Viewer:
    """One browser page that opens page after page; every dialog, injected element or error page
    is a problem. A tab is opened once: a new one per page would cost more than the page."""

    def __init__(self, context) -> None:
        self.page = context.new_page()
        self.path = ""
        self.problems: list[str] = []
        self.opened = 0
        self.page.on("dialog", self._on_dialog)

    def _on_dialog(self, dialog) -> None:
        self.problems.append(f"{self.path}: a {dialog.type} dialog opened: {dialog.message!r}")
        dialog.dismiss()

    def check(self, paths: list[str]) -> None:
        for path in paths:
            self.path = path
            response = self.page.goto(path, wait_until="load")
            assert response is not None and response.status == 200, (
                f"{path} answered {response and response.status}"
            )
            # Not sent elsewhere (the sign-in page, say): the page itself was checked.
            assert self.page.url.endswith(path), self.page.url
            self.problems += [f"{path}: {found}" for found in self.page.evaluate(_FIND_INJECTED)]
            self.opened += 1


def _assert_most_stored(stored: Stored) -> None:
    for name, count in stored.stored.items():
        refused = stored.refused.get(name, 0)
        if name == "website":
            # Checked as an http(s) address by the service (portal.urlcheck): a payload is stored
            # inside an https URL when that is a clean address, refused with the field's own words
            # otherwise; enough reach the pages to render.
            assert count >= 5, f"website: only {count} stored ({stored.reasons.get(name)})"
            assert refused == 0 or "website" in stored.reasons[name], stored.reasons[name]
            continue
        assert count >= len(PAYLOADS) // 2, f"{name}: only {count} stored, {refused} refused"
    for name in stored.refused:
        if name not in stored.stored:
            assert name in ALLOW_LISTED, f"{name}: every payload was refused ({stored.reasons[name]})"


def test_no_payload_runs_in_the_partner_pages(xss_data: Stored, new_context, live_server):
    _assert_most_stored(xss_data)
    # One context and one tab for all the partners: signing out is forgetting the cookies.
    context = new_context()
    viewer = _Viewer(context)
    for email in xss_data.partner_emails:
        context.clear_cookies()
        _sign_in(context, email)
        viewer.check(xss_data.partner_pages[email])
    print(f"\npartner pages: {viewer.opened}; stored: {xss_data.stored}")
    print(f"refused: {xss_data.refused} {xss_data.reasons}")
    assert not viewer.problems, "\n".join(viewer.problems)


def test_no_payload_runs_in_the_operator_pages(xss_data: Stored, new_context):
    viewer = _Viewer(new_context(role="admin"))
    viewer.check(xss_data.operator_pages)
    print(f"\noperator pages: {viewer.opened}")
    assert not viewer.problems, "\n".join(viewer.problems)


def test_no_payload_runs_where_the_program_name_shows(live_server, new_context):
    """The program's name is one value shown on every page: each payload in turn, as partner
    and operator, then the name as it was."""
    from dataclasses import replace

    from portal.services.program import settings_of, update_program_settings

    partner, operator = _Viewer(new_context(role="partner")), _Viewer(new_context(role="admin"))
    stored = refused = 0
    with live_server.app.app_context():
        manager = db.session.scalars(sa.select(User).where(User.email == DEMO_EMAILS["admin"])).one()
        original = settings_of(get_program())
        try:
            for payload in PAYLOADS:
                try:
                    update_program_settings(get_program(), manager, replace(original, name=payload))
                    db.session.commit()
                except DomainError:
                    db.session.rollback()
                    refused += 1
                    continue
                stored += 1
                partner.check(["/partner/"])
                operator.check(["/admin/", "/admin/settings"])
        finally:
            update_program_settings(get_program(), manager, original)
            db.session.commit()
    assert stored >= len(PAYLOADS) // 2, f"program name: only {stored} stored, {refused} refused"
    problems = partner.problems + operator.problems
    assert not problems, "\n".join(problems)


# --- every text field of every form is in the matrix ---------------------------------------

# "<form class>.<field>" (the class that declares the field) -> the matrix group that stores
# payloads in the same column through the service the form's view calls.
FIELD_GROUPS = {
    "ApplyForm.name": "partner name / promotion / social profiles",
    "ApplyForm.social_profiles": "partner name / promotion / social profiles",
    "ApplyForm.promotion_description": "partner name / promotion / social profiles",
    "ApplyForm.website": "website",
    "RejectForm.reason": "rejection reason",
    "SuspendForm.reason": "suspension reason",
    "TeamMemberForm.name": "team member name",
    "ConversionRejectForm.note": "conversion rejection note",
    "ApiKeyForm.name": "API key name",
    "PaymentForm.reference": "payment reference",
    "FailureForm.reason": "payout failure reason",
    "ThreadReplyForm.body": "message body (operator reply)",
    "NewMessageForm.subject": "message subject / body (operator)",
    "NewMessageForm.body": "message subject / body (operator)",
    "TagsForm.tags": "tag name",
    "AnnouncementForm.title": "announcement title / body",
    "AnnouncementForm.body": "announcement title / body",
    "TemplateForm.subject": "automatic message subject / body",
    "TemplateForm.body": "automatic message subject / body",
    "CreativeForm.name": "creative name / description / text copy",
    "CreativeForm.description": "creative name / description / text copy",
    "CreativeForm.note": "creative name / description / text copy",
    # the version note: the same column as CreativeForm.note, written by replace_file
    "ReplaceFileForm.note": "creative name / description / text copy",
    "TextCopyForm.headline": "creative name / description / text copy",
    "TextCopyForm.body": "creative name / description / text copy",
    "TextCopyForm.call_to_action": "creative name / description / text copy",
    "CounterOfferForm.note": "counter-offer note",
    "DeclineRequestForm.reason": "team's reason declining a request",
    "ProductRateForm.label": "product rate label",
    "TierForm.name": "tier name",
    "CampaignForm.name": "campaign name / description",
    "CampaignForm.description": "campaign name / description",
    "DealForm.note": "private deal note",
    "PartnerTierForm.note": "partner tier note",
    "LinkForm.label": "link label",
    "LinkForm.campaign": "link campaign / sub id",
    "LinkForm.sub_id": "link campaign / sub id",
    "PayoutDetailsForm.account_holder": "payout details (holder, bank, instructions)",
    "PayoutDetailsForm.bank_name": "payout details (holder, bank, instructions)",
    "PayoutDetailsForm.other_instructions": "payout details (other instructions, tax id)",
    "PayoutDetailsForm.tax_id": "payout details (other instructions, tax id)",
    "ReplyForm.body": "message subject / body (partner)",
    "NewThreadForm.subject": "message subject / body (partner)",
    "CampaignRequestForm.name": "campaign request name / note",
    "CampaignRequestForm.note": "campaign request name / note",
    "DeclineOfferForm.note": "partner's note declining an offer",
    # one value for the whole program: test_no_payload_runs_where_the_program_name_shows
    "SettingsForm.name": "program name",
}
_URL = "an http(s) address: portal.urlcheck refuses anything else (tests/security/test_urls.py)"
_NUMBER = "parsed as a number or a rate; anything else is refused (tests/unit/test_rates.py)"
_CODE = "a one-time code: digits only, checked and never shown again"
_SELECTOR = "names existing partners, tags, tiers or products; anything else is refused"
_FORMAT = "checked against a strict format (letters, digits and a few marks) before it is stored"
FIELD_EXCEPTIONS = {
    "WebhookForm.url": _URL,
    "WebhookForm.description": (
        "added with the webhook console this session: admin-only, autoescaped on /admin/webhooks; "
        "a payload run of its own is still owed"
    ),
    "SettingsForm.allowed_domains": "each line normalised to a domain name (program.normalise_domain)",
    "SettingsForm.default_landing_url": _URL,
    "SettingsForm.minimum_payout": _NUMBER,
    "SettingsForm.commission_percent": _NUMBER,
    "SettingsForm.commission_flat": _NUMBER,
    "SettingsForm.max_sale": _NUMBER,
    "SettingsForm.ref_param": _FORMAT,
    "SettingsForm.click_id_param": _FORMAT,
    "SlugForm.slug": _FORMAT,
    "AnnouncementForm.tags": _SELECTOR,
    "AnnouncementForm.partners": _SELECTOR,
    "AnnouncementForm.tiers": _SELECTOR,
    "CreativeForm.campaign": "a campaign key: the same allow-listed format as a link's campaign",
    "BulkBannerForm.campaign": "a campaign key: the same allow-listed format as a link's campaign",
    "LandingPageForm.url": _URL,
    "VideoLinkForm.url": _URL,
    "EmailTemplateForm.subject": "the e-mail creative's copy: the same columns as TextCopyForm",
    "EmailTemplateForm.body": "the e-mail creative's copy: the same columns as TextCopyForm",
    "CounterOfferForm.rate": _NUMBER,
    "PlanForm.rate_percent": _NUMBER,
    "PlanForm.rate_flat": _NUMBER,
    "PlanForm.top_partner_tag": "a tag name: " + _FORMAT,
    "ProductRateForm.product_id": "the shop's product id, shown only as code in the operator's list",
    "ProductRateForm.rate_percent": _NUMBER,
    "ProductRateForm.rate_flat": _NUMBER,
    "TierForm.rate_percent": _NUMBER,
    "TierForm.rate_flat": _NUMBER,
    "TierForm.threshold": _NUMBER,
    "CampaignForm.products": _SELECTOR,
    "CampaignForm.rate_percent": _NUMBER,
    "CampaignForm.rate_flat": _NUMBER,
    "CampaignForm.bonus": _NUMBER,
    "CampaignForm.tag": _SELECTOR,
    "CampaignForm.partners": _SELECTOR,
    "CampaignForm.landing_url": _URL,
    "CampaignLinkForm.partner": _SELECTOR,
    "CampaignLinkForm.label": "a link label: the same column as LinkForm.label",
    "LadderStepForm.bonus": _NUMBER,
    "DealForm.partner": _SELECTOR,
    "DealForm.rate_percent": _NUMBER,
    "DealForm.rate_flat": _NUMBER,
    "DealForm.products": _SELECTOR,
    "SecondFactorForm.code": _CODE,
    "TwoFactorCodeForm.code": _CODE,
    "TwoFactorDisableForm.code": _CODE,
    "PayoutDetailsForm.code": _CODE,
    "LanguageForm.next": "a redirect target, never shown: portal.urlcheck (tests/security/test_urls.py)",
    "LinkForm.destination_url": _URL,
    "CampaignRequestForm.landing_url": _URL,
    "CampaignRequestForm.desired_rate": _NUMBER,
    "PayoutDetailsForm.paypal_email": "an e-mail address (email_validator refuses <, >, quotes, spaces)",
    "PayoutDetailsForm.iban": "an IBAN: checksum-verified (payouts.iban_is_valid)",
    "PayoutDetailsForm.bic": _FORMAT,
    "CouponForm.code": _FORMAT,
    "RateForm.base": _FORMAT + " (an ISO 4217 code)",
    "RateForm.quote": _FORMAT + " (an ISO 4217 code)",
    "RateForm.rate": _NUMBER,
    "CouponForm.partner": _SELECTOR,
    "CouponRequestForm.code": _FORMAT,
    "CouponRequestForm.note": (
        "added with coupon codes this session: shown autoescaped on /admin/coupons "
        "(tests/functional/test_coupons_pages.py posts a script); a browser payload run is still owed"
    ),
}


def _text_fields() -> set[str]:
    """Every text field (StringField and its kinds, passwords and e-mail fields left out: a
    password is never shown, an e-mail field is checked as an address) of every form under
    portal/blueprints, named by the class that declares it."""
    import importlib
    import inspect
    import pkgutil

    from flask_wtf import FlaskForm
    from wtforms import EmailField, PasswordField, StringField

    import portal.blueprints

    found: set[str] = set()
    for module_info in pkgutil.walk_packages(portal.blueprints.__path__, "portal.blueprints."):
        module = importlib.import_module(module_info.name)
        for cls in vars(module).values():
            if not (
                inspect.isclass(cls) and issubclass(cls, FlaskForm) and cls.__module__ == module.__name__
            ):
                continue
            for klass in cls.__mro__:
                for name, unbound in vars(klass).items():
                    field_class = getattr(unbound, "field_class", None)
                    if (
                        field_class is not None
                        and issubclass(field_class, StringField)
                        and not issubclass(field_class, (PasswordField, EmailField))
                    ):
                        found.add(f"{klass.__name__}.{name}")
    return found


def test_every_text_field_of_every_form_is_in_the_matrix_or_listed_with_a_reason(live_server):
    fields = _text_fields()
    assert len(fields) > 60
    missing = fields - FIELD_GROUPS.keys() - FIELD_EXCEPTIONS.keys()
    assert not missing, (
        f"add these form fields to the XSS matrix (FIELD_GROUPS) or say why not: {sorted(missing)}"
    )
    stale = (FIELD_GROUPS.keys() | FIELD_EXCEPTIONS.keys()) - fields
    assert not stale, f"no such form field any more: {sorted(stale)}"
    assert not FIELD_GROUPS.keys() & FIELD_EXCEPTIONS.keys()


def test_every_group_named_for_a_form_field_stored_payloads(xss_data: Stored):
    groups = set(FIELD_GROUPS.values()) - {"program name"}  # its own test above
    never = {g for g in groups if not xss_data.stored.get(g)} - ALLOW_LISTED
    assert not never, f"no payload reached these fields: {sorted(never)} ({xss_data.reasons})"
    unnamed = set(xss_data.stored) - set(FIELD_GROUPS.values())
    assert not unnamed, f"groups stored but tied to no form field: {sorted(unnamed)}"
