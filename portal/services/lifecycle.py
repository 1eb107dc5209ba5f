"""Automatic messages at the moments that matter: a consumer of the outbox.

Each kind is an editable template with ``{{ variables }}`` that operators can
switch off. ``notify(kind, partner, key=..., **values)`` sends one: at most once
per (kind, partner, key), inside the current transaction (the message, its
e-mail in the e-mail outbox, its ``message.sent`` event and its live event all
stand or fall with that commit).

Nothing in the money path calls this module: services write domain events
(``portal.services.events``) and ``handle_event`` — run by the outbox dispatcher,
at least once per event — turns them into messages: ``partner.approved`` → welcome,
``conversion.created`` / ``conversion.approved`` → the first sale,
``conversion.rejected`` → why, ``partner.tier_changed`` (up) → tier upgrade,
``payout.paid`` → payout sent, ``payout.failed`` → payment failed with its reason,
``creative.published`` → new creatives in the partner's channels,
``campaign.started`` → campaign starting. The wake-up is time-driven
(``send_wake_ups``, from the job).

Why it is long: one section per message kind (its default wording, the event that
fires it and the values it fills in) beside the one sending path they share; split by
kind, each file would repeat the sending path's imports and rules for a few dozen lines.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale, format_date, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import orm

from portal import lookups, realtime
from portal.database import dialect_insert
from portal.errors import DomainError
from portal.extensions import db
from portal.formatting import channel_label, reason_label
from portal.formatting import money as format_money_for
from portal.i18n import speaking_to
from portal.models import (
    AutomaticKind,
    AutomaticMessageLog,
    Click,
    Conversion,
    ConversionStatus,
    Message,
    MessageTemplate,
    OutboxEvent,
    Partner,
    PartnerStatus,
    User,
)
from portal.models.types import utcnow
from portal.services import delivery, events, inbox
from portal.services.audit import record_event
from portal.urls import absolute_url

DEFAULT_QUIET_DAYS = 21

# A message needs the partner and their user (language, zone, name), not their tags: one
# query, where the plain load took three (the partner, its tags, then its user).
_PARTNER_AND_USER = (orm.joinedload(Partner.user), orm.lazyload(Partner.tags))

# --- variables ----------------------------------------------------------------------------

_COMMON = {
    "partner.name": _l("the partner's name"),
    "partner.code": _l("their partner code"),
    "program.name": _l("the program's name"),
    "portal_url": _l("link to their dashboard"),
    "links_url": _l("link to their links page"),
}
VARIABLES: dict[str, dict[str, object]] = {
    AutomaticKind.WELCOME: {},
    AutomaticKind.FIRST_CONVERSION: {
        "conversion.order": _l("the order number"),
        "conversion.amount": _l("the sale amount"),
        "commission.amount": _l("the commission earned"),
        "conversion_url": _l("link to the sale's details"),
    },
    AutomaticKind.WAKE_UP: {
        "quiet_days": _l("days without a click"),
        "last_click": _l("date of the last click (or “never”)"),
    },
    AutomaticKind.TIER_UPGRADE: {
        "tier.name": _l("the new tier"),
        "tier.previous": _l("the tier before"),
        "tier.rate": _l("the new commission, in words"),
    },
    AutomaticKind.PAYOUT_SENT: {
        "payout.amount": _l("the amount paid"),
        "payout.reference": _l("the payment reference"),
        "payout.date": _l("the payment date"),
        "earnings_url": _l("link to their earnings"),
    },
    AutomaticKind.NEW_CREATIVES: {
        "creatives.count": _l("how many new creatives"),
        "creatives.titles": _l("their titles"),
        "creatives.channels": _l("the channels they are for"),
        "creatives_url": _l("link to the creative library"),
    },
    AutomaticKind.CAMPAIGN_STARTING: {
        "campaign.name": _l("the campaign"),
        "campaign.starts": _l("start date"),
        "campaign.ends": _l("end date"),
        "campaign.details": _l("what it offers"),
        "campaign_url": _l("link to the campaign"),
    },
    AutomaticKind.CONVERSION_REJECTED: {
        "conversion.order": _l("the order number"),
        "conversion.amount": _l("the sale amount"),
        "reason": _l("the reason, in plain words"),
        "note": _l("the note from the team (may be empty)"),
        "conversion_url": _l("link to the sale's details"),
    },
    AutomaticKind.PAYOUT_FAILED: {
        "payout.amount": _l("the amount that could not be paid"),
        "payout.reason": _l("why the payment failed"),
        "payout_details_url": _l("link to their payout details"),
        "earnings_url": _l("link to their earnings"),
    },
}


def variables_for(kind: str) -> dict[str, object]:
    """Every variable a kind's template may use, with what it means."""
    return {**_COMMON, **VARIABLES[AutomaticKind(kind)]}


def kind_label(kind: str) -> str:
    return {
        AutomaticKind.WELCOME: _("Welcome, on approval"),
        AutomaticKind.FIRST_CONVERSION: _("Congratulations on the first sale"),
        AutomaticKind.WAKE_UP: _("Wake-up after a quiet spell"),
        AutomaticKind.TIER_UPGRADE: _("Tier upgrade"),
        AutomaticKind.PAYOUT_SENT: _("Payout sent"),
        AutomaticKind.NEW_CREATIVES: _("New creatives in the partner's channels"),
        AutomaticKind.CAMPAIGN_STARTING: _("Campaign starting"),
        AutomaticKind.CONVERSION_REJECTED: _("Sale rejected"),
        AutomaticKind.PAYOUT_FAILED: _("Payment failed"),
    }.get(kind, kind)


# The built-in wordings by language: the catalogues do not change while the process runs,
# and translating them all costs more than the rest of a message.
_DEFAULTS_BY_LOCALE: dict[str, dict[str, tuple[str, str]]] = {}


def _defaults() -> dict[str, tuple[str, str]]:
    """The built-in subject and body of every kind, in the current language."""
    locale = str(get_locale())
    defaults = _DEFAULTS_BY_LOCALE.get(locale)
    if defaults is None:
        defaults = _DEFAULTS_BY_LOCALE[locale] = _translated_defaults()
    return defaults


def _translated_defaults() -> dict[str, tuple[str, str]]:
    return {
        AutomaticKind.WELCOME: (
            _("Welcome to %(program)s, {{ partner.name }}", program="{{ program.name }}"),
            _(
                "Hi {{ partner.name }},\n\nyou are in: your application to {{ program.name }} is approved. "
                "Your partner code is `{{ partner.code }}`.\n\n"
                "Start with [your links]({{ links_url }}) — every click and sale they bring "
                "is credited to you. Questions? Just answer this message."
            ),
        ),
        AutomaticKind.FIRST_CONVERSION: (
            _("Your first sale, {{ partner.name }}!"),
            _(
                "Congratulations — order {{ conversion.order }} ({{ conversion.amount }}) is your first sale "
                "with {{ program.name }}, earning you **{{ commission.amount }}**.\n\n"
                "[See how it was counted]({{ conversion_url }})."
            ),
        ),
        AutomaticKind.WAKE_UP: (
            _("We miss your links, {{ partner.name }}"),
            _(
                "Hi {{ partner.name }},\n\nyour links have had no clicks for {{ quiet_days }} days "
                "(last click: {{ last_click }}). Fresh creatives and [your links]({{ links_url }}) "
                "are waiting. Need ideas? Answer this message and we will help."
            ),
        ),
        AutomaticKind.TIER_UPGRADE: (
            _("You moved up to {{ tier.name }}"),
            _(
                "Well done, {{ partner.name }}: you moved up from {{ tier.previous }} "
                "to **{{ tier.name }}**. From now on you earn {{ tier.rate }}."
            ),
        ),
        AutomaticKind.PAYOUT_SENT: (
            _("Payout sent: {{ payout.amount }}"),
            _(
                "Hi {{ partner.name }},\n\nwe sent you **{{ payout.amount }}** on {{ payout.date }} "
                "(reference {{ payout.reference }}). [See your earnings]({{ earnings_url }})."
            ),
        ),
        AutomaticKind.NEW_CREATIVES: (
            _("New creatives for {{ creatives.channels }}"),
            _(
                "Hi {{ partner.name }},\n\n{{ creatives.count }} new creatives for your channels: "
                "{{ creatives.titles }}.\n\n[Open the library]({{ creatives_url }})."
            ),
        ),
        AutomaticKind.CAMPAIGN_STARTING: (
            _("Starting {{ campaign.starts }}: {{ campaign.name }}"),
            _(
                "Hi {{ partner.name }},\n\n**{{ campaign.name }}** runs from {{ campaign.starts }} to "
                "{{ campaign.ends }}. {{ campaign.details }}\n\n[Get the campaign links]({{ campaign_url }})."
            ),
        ),
        AutomaticKind.CONVERSION_REJECTED: (
            _("Order {{ conversion.order }} was not counted"),
            _(
                "Hi {{ partner.name }},\n\norder {{ conversion.order }} ({{ conversion.amount }}) "
                "does not earn commission: {{ reason }}. {{ note }}\n\n"
                "[See the details]({{ conversion_url }}). If you think this is wrong, answer this message."
            ),
        ),
        AutomaticKind.PAYOUT_FAILED: (
            _("Your payout of {{ payout.amount }} could not be paid"),
            _(
                "Hi {{ partner.name }},\n\nwe could not pay you **{{ payout.amount }}**: "
                "{{ payout.reason }}.\n\n"
                "The amount is back in your balance and goes out with the next payout. "
                "Please [check your payout details]({{ payout_details_url }}); "
                "[see your earnings]({{ earnings_url }})."
            ),
        ),
    }


# --- templates: checked when saved, not when sent -----------------------------------------------


class Trusted(str):
    """A value the portal made (a link): put into the Markdown as it is."""

    __slots__ = ()


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~])")


def _escape_markdown(value) -> str:
    if isinstance(value, Trusted):
        return str(value)
    # What a partner or operator typed (a name, a note) stays text, never becomes a link or markup.
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))


_markdown_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=_escape_markdown)
_text_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=str)


def _dotted(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _dotted(node.node)
        return f"{base}.{node.attr}" if base else None
    return None


def check_template(kind: str, source: str, field: str) -> None:
    """Only ``{{ variable }}`` placeholders this kind knows; anything else is refused now."""
    try:
        tree = _markdown_env.parse(source)
    except TemplateSyntaxError as error:
        raise DomainError(
            _(
                "This template cannot be read (line %(line)d): %(error)s",
                line=error.lineno or 1,
                error=error.message,
            ),
            field,
        ) from None
    allowed = variables_for(kind)
    for output in tree.body:
        if not isinstance(output, nodes.Output):
            raise DomainError(_("Only {{ variable }} placeholders are allowed, no {% … %} blocks."), field)
        for child in output.nodes:
            if isinstance(child, nodes.TemplateData):
                continue
            name = _dotted(child)
            if name is None:
                raise DomainError(
                    _("Only plain {{ variable }} placeholders are allowed, without filters or expressions."),
                    field,
                )
            if name not in allowed:
                raise DomainError(
                    _(
                        "Unknown variable {{ %(name)s }}. Use one of: %(known)s.",
                        name=name,
                        known=", ".join(sorted(allowed)),
                    ),
                    field,
                )


def get_template(kind: str) -> MessageTemplate:
    """The template of ``kind``; the built-in wording on first use."""
    kind = AutomaticKind(kind).value
    template = db.session.get(MessageTemplate, kind)
    if template is None:
        subject, body = _defaults()[kind]
        template = MessageTemplate(
            kind=kind,
            enabled=True,
            subject=subject,
            body=body,
            quiet_days=DEFAULT_QUIET_DAYS if kind == AutomaticKind.WAKE_UP else None,
        )
        try:
            with db.session.begin_nested():
                db.session.add(template)
        except sa.exc.IntegrityError:
            # Another request used this kind for the first time a moment ago (two partners'
            # first tier upgrades at once, on PostgreSQL): its row is the one.
            template = db.session.scalars(
                sa.select(MessageTemplate).where(MessageTemplate.kind == kind)
            ).one()
    return template


def all_templates() -> list[MessageTemplate]:
    return [get_template(kind) for kind in AutomaticKind]


@dataclass
class TemplateChange:
    enabled: bool
    subject: str
    body: str
    quiet_days: int | None = None


def save_template(kind: str, actor: User, change: TemplateChange) -> MessageTemplate:
    """Change a template's wording or switch; unknown variables are refused here."""
    template = get_template(kind)
    subject = " ".join((change.subject or "").split())
    body = (change.body or "").strip()
    if not subject:
        raise DomainError(_("Write a subject."), "subject")
    if len(subject) > 200:
        raise DomainError(_("At most %(max)d characters.", max=200), "subject")
    if not body:
        raise DomainError(_("Write the message."), "body")
    if len(body) > 10_000:
        raise DomainError(_("At most %(max)d characters.", max=10_000), "body")
    check_template(kind, subject, "subject")
    check_template(kind, body, "body")
    quiet_days = template.quiet_days
    if kind == AutomaticKind.WAKE_UP:
        if change.quiet_days is None or not 1 <= change.quiet_days <= 365:
            raise DomainError(_("From %(min)d to %(max)d days.", min=1, max=365), "quiet_days")
        quiet_days = change.quiet_days
    if (template.enabled, template.subject, template.body, template.quiet_days) == (
        change.enabled,
        subject,
        body,
        quiet_days,
    ):
        return template  # an unchanged save is not an edit: nothing written, nothing audited
    template.quiet_days = quiet_days
    template.enabled = change.enabled
    template.subject = subject
    template.body = body
    template.updated_by_id = actor.id
    record_event(actor, "template.saved", "message_template", None, kind=kind, enabled=change.enabled)
    db.session.flush()
    return template


def _wording(kind: str, template: MessageTemplate) -> tuple[str, str]:
    """The template's subject and body; the built-in wording in the current language when the
    team has not changed it (in whichever language it was first stored)."""
    stored = (template.subject, template.body)
    for locale in current_app.config["SUPPORTED_LOCALES"]:
        with force_locale(locale):
            built_in = _defaults()[kind] == stored
        if built_in:
            return _defaults()[kind]
    return stored


def reset_template(kind: str, actor: User) -> MessageTemplate:
    template = get_template(kind)
    template.subject, template.body = _defaults()[kind]
    template.updated_by_id = actor.id
    record_event(actor, "template.reset", "message_template", None, kind=kind)
    db.session.flush()
    return template


def _nest(flat: dict[str, object]) -> dict[str, object]:
    """``{"partner.name": x}`` → ``{"partner": {"name": x}}`` for the template."""
    nested: dict[str, object] = {}
    for key, value in flat.items():
        parts = key.split(".")
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return nested


@lru_cache(maxsize=128)
def _compiled(source: str, markdown: bool):
    # Templates change rarely and compiling one costs more than sending the message.
    return (_markdown_env if markdown else _text_env).from_string(source)


def render(kind: str, source: str, values: dict[str, object], markdown: bool = True) -> str:
    try:
        return _compiled(source, markdown).render(_nest(values))
    except UndefinedError as error:  # a caller forgot a value: a bug, not the operator's
        raise ValueError(f"automatic message {kind}: {error}") from None


def preview_values(kind: str) -> dict[str, object]:
    """Sample values, to show an operator what a template will look like."""
    sample = {name: f"[{name}]" for name in variables_for(kind)}
    sample.update(
        {
            "partner.name": "Pat Partner",
            "partner.code": "demo",
            "program.name": _program_name(),
            "portal_url": Trusted(absolute_url("partner.dashboard")),
            "links_url": Trusted(absolute_url("partner.list_links")),
        }
    )
    for name in variables_for(kind):
        if name.endswith("_url"):
            sample[name] = Trusted(absolute_url("partner.dashboard"))
    return sample


# --- sending ---------------------------------------------------------------------------------


def _program_name() -> str:
    from portal.services.program import cached_program

    return cached_program().name


def _common_values(partner: Partner) -> dict[str, object]:
    return {
        "partner.name": partner.user.name,
        "partner.code": partner.ref_code,
        "program.name": _program_name(),
        "portal_url": Trusted(absolute_url("partner.dashboard")),
        "links_url": Trusted(absolute_url("partner.list_links")),
    }


def _money(minor: int, currency: str) -> str:
    return format_money_for(minor, currency, str(get_locale() or "en"))


_LOG = AutomaticMessageLog.__table__
# Built once (per dialect): a statement built per message costs more than running it.
_LOG_INSERTS: dict[str, sa.Insert] = {}
_LOG_MESSAGE = (
    sa.update(_LOG).where(_LOG.c.id == sa.bindparam("log_id")).values(message_id=sa.bindparam("sent_id"))
)


def _log_once(kind: str, partner_id: int, key: str) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: the new log row's id, or None when the
    message was sent (or is being sent) for this key already."""
    return _log_many([(kind, partner_id, key)])[0]


def _log_many(keys: list[tuple[str, int, str]]) -> list[int | None]:
    """``_log_once`` for each (kind, partner id, key), in one statement: the new log rows'
    ids in the order given, None for a key sent before (or earlier in the list)."""
    dialect = db.session.get_bind().dialect.name
    insert = _LOG_INSERTS.get(dialect)
    if insert is None:
        insert = _LOG_INSERTS[dialect] = (
            dialect_insert(dialect, _LOG)
            .on_conflict_do_nothing(index_elements=["kind", "partner_id", "dedupe_key"])
            .returning(_LOG.c.id, _LOG.c.kind, _LOG.c.partner_id, _LOG.c.dedupe_key)
        )
    now = utcnow()
    unique = list(dict.fromkeys(keys))
    rows = [{"kind": k, "partner_id": p, "dedupe_key": key, "created_at": now} for k, p, key in unique]
    new = db.session.execute(insert, rows[0] if len(rows) == 1 else rows).all()
    ids = {(kind, partner_id, key): log_id for log_id, kind, partner_id, key in new}
    return [ids.pop(key, None) for key in keys]  # popped: a key twice in the list is sent once


@dataclass
class _Draft:
    """A message ``notify`` will send: its kind, partner, key, template and values."""

    kind: str
    partner: Partner
    key: str
    template: MessageTemplate
    values: dict[str, object]


# The drafts of the innermost ``sending_together`` block, if any.
_TOGETHER: ContextVar[list[_Draft] | None] = ContextVar("portal_messages_together", default=None)


class Together:
    """What a ``sending_together`` block sent: ``sent``, once the block is over."""

    def __init__(self) -> None:
        self.drafts: list[_Draft] = []
        self.sent: list[Message] = []


@contextmanager
def sending_together():
    """Send every message ``notify`` is asked for inside the block together when it ends:
    a few statements for all of them (their log rows, threads, messages, the log's links,
    the events), where each alone costs those statements again. Inside the block ``notify``
    returns None; the block's ``sent`` lists the messages sent. Nothing is sent if the
    block raises. Nested blocks send their own at their own end."""
    together = Together()
    token = _TOGETHER.set(together.drafts)
    try:
        yield together
    finally:
        _TOGETHER.reset(token)
    together.sent = [message for message in _send(together.drafts) if message is not None]


def notify(kind: str, partner: Partner, *, key: str, **values: object) -> Message | None:
    """Send the automatic message ``kind`` to ``partner`` once for ``key``, if it is switched on.

    ``values`` are the kind's own variables by their dotted names with ``.``
    written as ``__`` (``conversion__amount="€4.99"``); URLs should be ``Trusted``.
    Returns the new message, or None when it is off, already sent for this key,
    or the partner cannot use the portal (or inside ``sending_together``, which sends it
    at its end).
    """
    kind = AutomaticKind(kind).value
    template = get_template(kind)
    if not template.enabled or not partner.can_use_portal:
        return None
    flat = {**_common_values(partner), **{name.replace("__", "."): value for name, value in values.items()}}
    unknown = set(flat) - set(variables_for(kind))
    if unknown:
        raise ValueError(f"automatic message {kind}: unknown values {sorted(unknown)}")
    draft = _Draft(kind, partner, key[:200], template, flat)
    together = _TOGETHER.get()
    if together is not None:
        together.append(draft)
        return None
    return _send([draft])[0]


def _send(drafts: list[_Draft]) -> list[Message | None]:
    """The drafts' messages, in the order given (None for one sent before for its key), with
    their e-mail copies, ``message.sent`` events and live events: five statements whatever
    their number (log rows, threads, messages, the log's links, events), besides the
    e-mails. Once per key: the log's rows first (a run that sent one before, or a concurrent
    one sending it now, holds its key: nothing more for it, not even the rendering)."""
    if not drafts:
        return []
    log_ids = _log_many([(draft.kind, draft.partner.id, draft.key) for draft in drafts])
    sending = [(draft, log_id) for draft, log_id in zip(drafts, log_ids, strict=True) if log_id is not None]
    if not sending:
        return [None] * len(drafts)
    items = []
    for draft, _log_id in sending:
        # In the partner's language and zone; the built-in wording in their language too.
        with speaking_to(draft.partner.user):
            subject_source, body_source = _wording(draft.kind, draft.template)
            subject = render(draft.kind, subject_source, draft.values, markdown=False)
            body = render(draft.kind, body_source, draft.values)
        items.append((draft.partner, draft.kind, subject, body))
    messages = inbox.post_system_messages(items)
    links = [
        {"log_id": log_id, "sent_id": m.id} for (_draft, log_id), m in zip(sending, messages, strict=True)
    ]
    db.session.execute(_LOG_MESSAGE, links)
    rows = []
    for (partner, kind, subject, body), message in zip(items, messages, strict=True):
        delivery.queue_email(partner, kind, subject, body, inbox.thread_link(message.thread))
        data = {
            "partner_id": partner.id,
            "kind": kind,
            "message_id": message.id,
            "thread_id": message.thread_id,
        }
        rows.append(("message.sent", data, partner.id))
    events.record_many(rows)
    db.session.flush()  # the e-mails: a failure here comes before anyone is told
    for (partner, kind, _subject, _body), message in zip(items, messages, strict=True):
        inbox.tell_posted(message)
        realtime.notify(partner.id, "notification", {"kind": kind, "thread": message.thread_id})
    sent = iter(messages)
    return [next(sent) if log_id is not None else None for log_id in log_ids]


# --- events that exist today ----------------------------------------------------------------


def partner_approved(partner: Partner) -> Message | None:
    return notify(AutomaticKind.WELCOME, partner, key="approved")


def _conversion_values(conversion: Conversion) -> dict[str, object]:
    return {
        "conversion__order": conversion.transaction_id,
        "conversion__amount": _money(conversion.amount_minor, conversion.currency),
        "conversion_url": Trusted(absolute_url("partner.show_conversion", conversion_id=conversion.id)),
    }


def conversion_recorded(conversion: Conversion) -> Message | None:
    """A conversion now counts for its partner: congratulate them if it is their first.

    Once a partner is seen to have another counted sale, this process remembers it
    (``portal.lookups``), so their later sales cost no query here at all.
    """
    if conversion.partner_id is None or conversion.status != ConversionStatus.PENDING:
        return None
    cache = lookups.lookups()
    if cache.get("has_counted_sale", conversion.partner_id) is True:
        return None
    earlier = db.session.scalar(
        sa.select(Conversion.id)
        .where(
            Conversion.partner_id == conversion.partner_id,
            Conversion.status == ConversionStatus.PENDING,
            # Earlier only: two sales committed before the dispatcher ran must not each find
            # the other (then neither would be congratulated).
            Conversion.id < conversion.id,
        )
        .limit(1)
    )
    if earlier is not None:
        # Not their first; the earlier one is committed (events are read after the commit).
        cache.put("has_counted_sale", conversion.partner_id, True, cache.version)
        return None
    return _first_conversion(conversion)


def _first_conversion(conversion: Conversion) -> Message | None:
    from portal.services.commissions import net_commission

    partner = db.session.get(Partner, conversion.partner_id, options=_PARTNER_AND_USER)
    with speaking_to(partner.user):
        return notify(
            AutomaticKind.FIRST_CONVERSION,
            partner,
            key="first",
            commission__amount=_money(net_commission(conversion), conversion.currency),
            **_conversion_values(conversion),
        )


def conversion_rejected(conversion: Conversion) -> Message | None:
    """A partner's conversion was rejected (by a rule, a refund or an operator): say why."""
    if conversion.partner_id is None or conversion.status != ConversionStatus.REJECTED:
        return None
    partner = db.session.get(Partner, conversion.partner_id, options=_PARTNER_AND_USER)
    with speaking_to(partner.user):
        return notify(
            AutomaticKind.CONVERSION_REJECTED,
            partner,
            key=f"conversion:{conversion.id}",
            reason=reason_label(conversion.rejection_reason),
            note=conversion.rejection_note or "",
            **_conversion_values(conversion),
        )


def send_wake_ups(now: datetime | None = None) -> int:
    """Nudge approved partners whose links have had no click for N days — once per quiet spell.

    A quiet spell is named by when it began (the last click, or the approval for
    a partner who never had one); the next wake-up needs a new click first.
    """
    now = now or utcnow()
    template = get_template(AutomaticKind.WAKE_UP)
    if not template.enabled:
        return 0
    days = template.quiet_days or DEFAULT_QUIET_DAYS
    cutoff = now - timedelta(days=days)
    last_click = (
        sa.select(Click.partner_id, sa.func.max(Click.created_at).label("last_click"))
        .group_by(Click.partner_id)
        .subquery()
    )
    rows = db.session.execute(
        sa.select(Partner, last_click.c.last_click)
        .outerjoin(last_click, last_click.c.partner_id == Partner.id)
        .where(Partner.status == PartnerStatus.APPROVED)
        .where(
            sa.func.coalesce(last_click.c.last_click, Partner.status_changed_at, Partner.applied_at) <= cutoff
        )
        .order_by(Partner.id)
    ).all()
    sent = 0
    for partner, last in rows:
        last = _aware(last)
        since = last or partner.status_changed_at or partner.applied_at
        with speaking_to(partner.user):
            message = notify(
                AutomaticKind.WAKE_UP,
                partner,
                key=f"quiet-since:{since.isoformat()}",
                quiet_days=(now - since).days,
                last_click=format_date(last, "long") if last else _("never"),
            )
        sent += message is not None
    return sent


def _aware(value):
    """A MAX() over a UTC column comes back naive from SQLite."""
    from datetime import UTC

    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- the other kinds ---------------------------------------------------------------


def tier_upgraded(
    partner: Partner, *, tier_name: str, previous_tier: str, rate: str, key: str
) -> Message | None:
    """``partner`` moved up a tier; ``key`` names the change (its id)."""
    return notify(
        AutomaticKind.TIER_UPGRADE,
        partner,
        key=key,
        tier__name=tier_name,
        tier__previous=previous_tier,
        tier__rate=rate,
    )


def payout_sent(
    partner: Partner, *, amount_minor: int, currency: str, reference: str, paid_at: datetime, key: str
) -> Message | None:
    """A payout item was marked paid; ``key`` is the payout item."""
    from portal.services.program import program_timezone

    # A payout date is the program's calendar day, whatever the partner's own zone.
    paid_on = paid_at
    if isinstance(paid_at, datetime):
        paid_on = paid_at.astimezone(ZoneInfo(program_timezone())).date()
    with speaking_to(partner.user):
        return notify(
            AutomaticKind.PAYOUT_SENT,
            partner,
            key=key,
            payout__amount=_money(amount_minor, currency),
            payout__reference=reference,
            payout__date=format_date(paid_on, "long"),
            earnings_url=Trusted(absolute_url("partner.list_conversions")),
        )


@dataclass
class NewCreative:
    title: str
    channel: str


def creatives_published(creatives: list[NewCreative], *, key: str, library_url: str | None = None) -> int:
    """Creatives went live; each approved partner working one of their channels hears
    about the ones for their channels, once per ``key`` (the creative). The messages are
    sent together (``sending_together``); returns how many were sent."""
    partners = db.session.scalars(
        sa.select(Partner).where(Partner.status == PartnerStatus.APPROVED).order_by(Partner.id)
    ).all()
    with sending_together() as together:
        for partner in partners:
            mine = [c for c in creatives if c.channel in (partner.channels or [])]
            if not mine:
                continue
            channels = list(dict.fromkeys(c.channel for c in mine))
            # A creative for two of their channels counts once.
            titles = list(dict.fromkeys(c.title for c in mine))
            with speaking_to(partner.user):
                notify(
                    AutomaticKind.NEW_CREATIVES,
                    partner,
                    key=key,
                    creatives__count=len(titles),
                    creatives__titles=", ".join(titles),
                    creatives__channels=", ".join(channel_label(c) for c in channels),
                    creatives_url=Trusted(library_url or absolute_url("partner.dashboard")),
                )
    return len(together.sent)


def campaign_starting(
    partners: list[Partner],
    *,
    name: str,
    starts_at: datetime,
    ends_at: datetime | None,
    details: str,
    key: str,
    campaign_url: str | None = None,
) -> int:
    """A campaign starts: tell the partners it is open to (their messages sent together,
    ``sending_together``); returns how many were sent."""
    with sending_together() as together:
        for partner in partners:
            with speaking_to(partner.user):
                notify(
                    AutomaticKind.CAMPAIGN_STARTING,
                    partner,
                    key=key,
                    campaign__name=name,
                    campaign__starts=format_date(starts_at, "long"),
                    campaign__ends=format_date(ends_at, "long") if ends_at else _("until further notice"),
                    campaign__details=details,
                    campaign_url=Trusted(campaign_url or absolute_url("partner.list_links")),
                )
    return len(together.sent)


def payout_failed(
    partner: Partner, *, amount_minor: int, currency: str, reason: str, key: str
) -> Message | None:
    """A payment bounced (``reason`` as the operator recorded it); the amount is back in the balance."""
    with speaking_to(partner.user):
        return notify(
            AutomaticKind.PAYOUT_FAILED,
            partner,
            key=key,
            payout__amount=_money(amount_minor, currency),
            payout__reason=reason,
            payout_details_url=Trusted(absolute_url("partner.payout_details")),
            earnings_url=Trusted(absolute_url("partner.list_conversions")),
        )


# --- the outbox consumer ------------------------------------------------------------------------


def _partner_id(event: OutboxEvent) -> int | None:
    return event.partner_id or event.data.get("partner_id")


def _partner(event: OutboxEvent) -> Partner | None:
    partner_id = _partner_id(event)
    if partner_id is None:
        return None
    return db.session.get(Partner, partner_id, options=_PARTNER_AND_USER)


def _conversion(event: OutboxEvent) -> Conversion | None:
    conversion_id = event.data.get("conversion_id")
    return db.session.get(Conversion, conversion_id) if conversion_id is not None else None


def _on_partner_approved(event: OutboxEvent) -> None:
    partner = _partner(event)
    if partner is not None:
        partner_approved(partner)


def _not_a_first_sale(event: OutboxEvent) -> bool:
    """Known without a query: no partner, or this process has seen the partner's earlier
    counted sale (conversion_recorded's own first check, without loading the row)."""
    partner_id = event.partner_id or event.data.get("partner_id")
    return partner_id is None or lookups.lookups().get("has_counted_sale", partner_id) is True


def _on_conversion_counts(event: OutboxEvent) -> None:
    if _not_a_first_sale(event):
        return
    conversion = _conversion(event)
    if conversion is not None:
        conversion_recorded(conversion)


def _on_conversion_rejected(event: OutboxEvent) -> None:
    conversion = _conversion(event)
    if conversion is not None:
        conversion_rejected(conversion)


def _on_tier_changed(event: OutboxEvent) -> None:
    from portal.models import Tier, TierChange
    from portal.services.program import cached_program
    from portal.services.rewards import describe_tier_change, tier_rate_words

    partner = _partner(event)
    if partner is None:
        return
    tier = db.session.get(Tier, event.data["to_tier_id"]) if event.data.get("to_tier_id") else None
    with speaking_to(partner.user):
        base_name = _("Base")
        if not event.data.get("upgrade"):
            # A move down: a plain note (no template), once per change.
            change = db.session.get(TierChange, event.data["change_id"])
            old = event.data.get("from_tier") or base_name
            new = event.data.get("to_tier") or base_name
            if _log_once("tier_change", partner.id, f"tier-change-{change.id}") is None:
                return
            inbox.post_system_message(
                partner,
                "tier_change",
                _("Your tier is now %(tier)s", tier=new),
                _(
                    "Your tier changed from %(old)s to %(new)s: %(why)s From now on you earn %(rate)s. "
                    "See your Rewards page for what it takes to move up again.",
                    old=old,
                    new=new,
                    why=describe_tier_change(change, cached_program()),
                    rate=tier_rate_words(tier, cached_program()),
                ),
            )
            return
        tier_upgraded(
            partner,
            tier_name=event.data.get("to_tier") or base_name,
            previous_tier=event.data.get("from_tier") or base_name,
            rate=tier_rate_words(tier, cached_program()),
            key=f"tier-change-{event.data['change_id']}",
        )


def _on_payout_paid(event: OutboxEvent) -> None:
    from datetime import date

    partner = _partner(event)
    if partner is None:
        return
    payout_sent(
        partner,
        amount_minor=event.data["amount_minor"],
        currency=event.data["currency"],
        reference=event.data.get("reference") or "",
        paid_at=date.fromisoformat(event.data["paid_on"]),
        key=f"payout-item-{event.data['item_id']}",
    )


def _on_payout_failed(event: OutboxEvent) -> None:
    partner = _partner(event)
    if partner is None:
        return
    payout_failed(
        partner,
        amount_minor=event.data["amount_minor"],
        currency=event.data["currency"],
        reason=event.data.get("reason") or "",
        key=f"payout-item-{event.data['item_id']}-failed",
    )


def _on_creative_published(event: OutboxEvent) -> None:
    creatives_published(
        [NewCreative(title=event.data["name"], channel=channel) for channel in event.data["channels"]],
        key=f"creative-{event.data['creative_id']}",
        library_url=absolute_url("partner.list_creatives"),
    )


def _on_campaign_started(event: OutboxEvent) -> None:
    from portal.models import Campaign
    from portal.services.program import get_program
    from portal.services.rewards import campaign_details, campaign_partner_ids

    campaign = db.session.get(Campaign, event.data["campaign_id"])
    if campaign is None:
        return
    program = get_program()
    partners = db.session.scalars(
        sa.select(Partner).where(Partner.id.in_(campaign_partner_ids(campaign))).order_by(Partner.id)
    ).all()
    campaign_starting(
        list(partners),
        name=campaign.name,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        details=campaign_details(campaign, program.currency),
        key=f"campaign-{campaign.id}",
    )


_HANDLERS = {
    "partner.approved": _on_partner_approved,
    "conversion.created": _on_conversion_counts,
    "conversion.approved": _on_conversion_counts,
    "conversion.rejected": _on_conversion_rejected,
    "partner.tier_changed": _on_tier_changed,
    "payout.paid": _on_payout_paid,
    "payout.failed": _on_payout_failed,
    "creative.published": _on_creative_published,
    "campaign.started": _on_campaign_started,
}


def handles(event_type: str) -> bool:
    """Whether an event of this type can call for an automatic message (the dispatcher skips
    the others for this consumer)."""
    return event_type in _HANDLERS


def passes_over(event: OutboxEvent) -> bool:
    """Whether ``handle_event`` would do nothing with this event, told without a query (most
    sales: not a partner's first). The dispatcher then spares it its savepoint."""
    return _HANDLERS.get(event.type) is _on_conversion_counts and _not_a_first_sale(event)


def _learn_earlier_sales(events: list[OutboxEvent]) -> None:
    """For the sales of partners this process does not know to have a counted sale yet,
    one query for the whole batch: each partner's earliest counted sale, and the latest of
    the batch's own sales that counts now. A partner with such a sale in the batch, whose
    earliest counted sale comes before all of their sales here, is remembered exactly as
    ``conversion_recorded`` would remember them on handling that sale, so their sales are
    passed over (no savepoint, no receipt, no query each). A partner's own first sale is
    still looked at, and congratulated; so is a sale that counts only later (held for
    review, then approved), when no sale of theirs in the batch counts now."""
    cache = lookups.lookups()
    earliest_here: dict[int, int] = {}
    conversion_ids: set[int] = set()
    for event in events:
        if _HANDLERS.get(event.type) is not _on_conversion_counts:
            continue
        partner_id, conversion_id = _partner_id(event), event.data.get("conversion_id")
        if partner_id is None or conversion_id is None or cache.get("has_counted_sale", partner_id) is True:
            continue
        earliest_here[partner_id] = min(conversion_id, earliest_here.get(partner_id, conversion_id))
        conversion_ids.add(conversion_id)
    if not earliest_here:
        return
    version = cache.version
    counting_here = sa.case((Conversion.id.in_(conversion_ids), Conversion.id))
    rows = db.session.execute(
        sa.select(Conversion.partner_id, sa.func.min(Conversion.id), sa.func.max(counting_here))
        .where(Conversion.partner_id.in_(earliest_here), Conversion.status == ConversionStatus.PENDING)
        .group_by(Conversion.partner_id)
    )
    for partner_id, first_id, counting in rows:
        if counting is not None and first_id < earliest_here[partner_id]:
            cache.put("has_counted_sale", partner_id, True, version)


def preload(events: list[OutboxEvent]) -> list:
    """What ``handle_event`` reads for ``events``, in a few queries for the whole batch: the
    partners with their users, the conversions with their lines, the tiers and the message
    templates (the outbox reads them before its write turn; the handlers then find them in
    the session). Events passed over load nothing. Returns the rows: the session holds them
    weakly, so the caller keeps them while it handles the batch."""
    from portal.models import Tier

    _learn_earlier_sales(events)
    acting = [event for event in events if event.type in _HANDLERS and not passes_over(event)]
    if not acting:
        return []
    partner_ids = {_partner_id(event) for event in acting} - {None}
    conversion_ids = {
        event.data["conversion_id"]
        for event in acting
        if _HANDLERS[event.type] in (_on_conversion_counts, _on_conversion_rejected)
        and event.data.get("conversion_id") is not None
    }
    tier_ids = {
        event.data["to_tier_id"]
        for event in acting
        if event.type == "partner.tier_changed" and event.data.get("to_tier_id")
    }
    loaded: list = list(db.session.scalars(sa.select(MessageTemplate)))  # one row per kind
    if partner_ids:
        query = sa.select(Partner).options(*_PARTNER_AND_USER).where(Partner.id.in_(partner_ids))
        loaded += db.session.scalars(query)
    if conversion_ids:
        query = (
            sa.select(Conversion)
            .options(orm.selectinload(Conversion.commissions))
            .where(Conversion.id.in_(conversion_ids))
        )
        loaded += db.session.scalars(query)
    if tier_ids:
        loaded += db.session.scalars(sa.select(Tier).where(Tier.id.in_(tier_ids)))
    return loaded


def handle_event(event: OutboxEvent) -> None:
    """The automatic-message consumer: the message an event calls for, once (the log's key)."""
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(event)


def handle_events(events: list[OutboxEvent]) -> None:
    """``handle_event`` for each of a batch, their messages sent together at the end (a few
    statements for all of them: ``sending_together``)."""
    with sending_together():
        for event in events:
            handle_event(event)
