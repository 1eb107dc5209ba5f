"""The main navigation: one per role, each page's own entry marked as the current one.

Operators' entries follow the console's modules (``portal/blueprints/admin/<area>.py``), so a
new page of an area is marked under its area without being listed here; partners' follow the
endpoints of each section. Less-used operator pages sit in a "More" menu, the program's
settings (admins only) in a "Program" menu, so the bar stays one line at 1280 px.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app, request, url_for
from flask_babel import lazy_gettext as _l


@dataclass(frozen=True)
class Entry:
    key: str
    label: object  # a lazy string
    endpoint: str
    args: tuple[tuple[str, str], ...] = ()
    # The console modules (``admin.partners``) or endpoints whose pages belong to this entry.
    modules: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Link:
    key: str
    label: str
    url: str
    current: bool


@dataclass(frozen=True)
class Group:
    key: str
    label: str
    links: tuple[Link, ...] = field(default_factory=tuple)

    @property
    def current(self) -> bool:
        return any(link.current for link in self.links)


@dataclass(frozen=True)
class Navigation:
    links: tuple[Link, ...]
    groups: tuple[Group, ...]
    inbox_current: bool = False


_OPERATOR = (
    Entry("dashboard", _l("Dashboard"), "admin.dashboard", modules=("admin.dashboard",)),
    Entry("applications", _l("Applications"), "admin.applications", endpoints=("admin.applications",)),
    Entry("partners", _l("Partners"), "admin.list_partners", modules=("admin.partners",)),
    Entry("conversions", _l("Conversions"), "admin.list_conversions", modules=("admin.conversions",)),
    Entry("payouts", _l("Payouts"), "admin.list_batches", modules=("admin.payouts",)),
    Entry("creatives", _l("Creatives"), "admin.list_creatives", modules=("admin.creatives",)),
    Entry("rewards", _l("Rewards"), "admin.rewards_overview", modules=("admin.rewards",)),
)
_OPERATOR_MORE = (
    Entry("review", _l("Conversions to review"), "admin.list_conversions", (("status", "review"),)),
    Entry(
        "campaign_requests",
        _l("Campaign requests"),
        "admin.list_campaign_requests",
        modules=("admin.campaign_requests",),
    ),
    Entry("coupons", _l("Coupon codes"), "admin.list_coupons", modules=("admin.coupons",)),
    Entry("rates", _l("Exchange rates"), "admin.list_rates", modules=("admin.rates",)),
    Entry("announcements", _l("Announcements"), "admin.list_announcements", modules=("admin.announcements",)),
    Entry(
        "automatic_messages",
        _l("Automatic messages"),
        "admin.list_templates",
        modules=("admin.automatic_messages",),
    ),
    Entry("outbox", _l("E-mail outbox"), "admin.show_outbox", modules=("admin.outbox",)),
    Entry(
        "integration", _l("Integration"), "admin.integration_guide", endpoints=("admin.integration_guide",)
    ),
)
_ADMIN_MORE = (
    Entry("settings", _l("Settings"), "admin.settings", endpoints=("admin.settings",)),
    Entry("team", _l("Team"), "admin.team", endpoints=("admin.team", "admin.set_team_member_active")),
    Entry("api_keys", _l("API keys"), "admin.api_keys_page", endpoints=("admin.api_keys_page",)),
    Entry("webhooks", _l("Webhooks"), "admin.list_webhooks", modules=("admin.webhooks",)),
)
_PARTNER = (
    Entry("dashboard", _l("Dashboard"), "partner.dashboard", endpoints=("partner.dashboard",)),
    Entry("links", _l("Links"), "partner.list_links", endpoints=("partner.list_links",)),
    Entry(
        "creatives",
        _l("Creatives"),
        "partner.list_creatives",
        endpoints=("partner.list_creatives", "partner.show_creative", "partner.show_creative_stats"),
    ),
    Entry(
        "conversions",
        _l("Conversions"),
        "partner.list_conversions",
        endpoints=("partner.list_conversions", "partner.show_conversion"),
    ),
    Entry(
        "earnings",
        _l("Earnings"),
        "partner.earnings",
        endpoints=("partner.earnings", "partner.payout_details"),
    ),
    Entry(
        "rewards",
        _l("Rewards"),
        "partner.rewards",
        endpoints=("partner.rewards", "partner.show_campaign_request"),
    ),
    Entry("preferences", _l("E-mail settings"), "partner.preferences", endpoints=("partner.preferences",)),
)
_APPLICANT = (
    Entry(
        "application",
        _l("My application"),
        "auth.application_status",
        endpoints=("auth.application_status",),
    ),
)
_INBOX_ENDPOINTS = ("partner.list_threads", "partner.show_thread", "partner.show_announcement")


def _area() -> tuple[str | None, str | None]:
    """(endpoint, console module such as ``admin.partners``) of the page being shown."""
    endpoint = request.endpoint
    view = current_app.view_functions.get(endpoint) if endpoint else None
    module = getattr(view, "__module__", "") or ""
    if module.startswith("portal.blueprints."):
        module = module.removeprefix("portal.blueprints.")
    return endpoint, module


def _is_current(entry: Entry, endpoint: str | None, module: str | None) -> bool:
    if entry.key == "review":
        return endpoint == "admin.list_conversions" and request.args.get("status") == "review"
    if entry.key == "conversions" and request.args.get("status") == "review":
        return False
    if entry.key == "partners" and endpoint == "admin.applications":
        return False
    return endpoint in entry.endpoints or (module in entry.modules)


def _links(entries, endpoint, module) -> tuple[Link, ...]:
    return tuple(
        Link(
            entry.key,
            str(entry.label),
            url_for(entry.endpoint, **dict(entry.args)),
            _is_current(entry, endpoint, module),
        )
        for entry in entries
    )


def main_nav(user) -> Navigation | None:
    """The signed-in user's navigation (None for anonymous visitors)."""
    if not user.is_authenticated:
        return None
    endpoint, module = _area()
    if user.is_operator:
        groups = [Group("more", str(_l("More")), _links(_OPERATOR_MORE, endpoint, module))]
        if user.is_admin:
            groups.append(Group("program", str(_l("Program")), _links(_ADMIN_MORE, endpoint, module)))
        return Navigation(
            _links(_OPERATOR, endpoint, module), tuple(groups), inbox_current=module == "admin.inbox"
        )
    if user.partner is not None and user.partner.can_use_portal:
        return Navigation(_links(_PARTNER, endpoint, module), (), inbox_current=endpoint in _INBOX_ENDPOINTS)
    return Navigation(_links(_APPLICANT, endpoint, module), ())
