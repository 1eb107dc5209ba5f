"""Announcements: written once by a manager, sent to an audience, now or at a set time.

The audience is fixed when an announcement goes out (one recipient row per
partner), which is what the read count is counted against. Audiences are
pluggable: ``register_audience`` adds a kind — the rewards module adds
``tiers`` this way — without a schema change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from portal import realtime
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    Announcement,
    AnnouncementRecipient,
    Partner,
    PartnerStatus,
    Tag,
    User,
    partner_tags,
)
from portal.models.types import utcnow
from portal.services import delivery
from portal.services.audit import record_event
from portal.urls import absolute_url

MAX_TITLE = 200
MAX_BODY = 20_000


@dataclass(frozen=True)
class Audience:
    """One way of choosing recipients.

    ``parse`` turns what the manager typed into stored keys (raising DomainError on
    the ``field`` it names); ``partner_ids`` turns stored keys into a query of
    approved partners' ids; ``describe`` says who it is in words.
    """

    kind: str
    label: object
    parse: Callable[[list[str]], list]
    partner_ids: Callable[[list], sa.Select]
    describe: Callable[[list], str]


AUDIENCES: dict[str, Audience] = {}


def register_audience(audience: Audience) -> None:
    AUDIENCES[audience.kind] = audience


def _approved_ids() -> sa.Select:
    return sa.select(Partner.id).where(Partner.status == PartnerStatus.APPROVED)


# --- tags ------------------------------------------------------------------------------

_TAG = re.compile(r"^[a-z0-9][a-z0-9 _-]{0,39}$")


def normalise_tag(raw: str) -> str:
    name = " ".join(raw.strip().lower().split())
    if not _TAG.match(name):
        raise DomainError(
            _("“%(tag)s” is not a tag: up to 40 letters, digits, spaces, - and _.", tag=raw.strip()[:50]),
            "tags",
        )
    return name


def split_list(text: str | None) -> list[str]:
    """Comma- or line-separated input as a list without blanks or repeats."""
    items = [item.strip() for item in re.split(r"[,\n]", text or "")]
    return list(dict.fromkeys(item for item in items if item))


def _parse_tags(items: list[str]) -> list[int]:
    names = [normalise_tag(item) for item in items]
    if not names:
        raise DomainError(_("Name at least one tag."), "tags")
    found = dict(db.session.execute(sa.select(Tag.name, Tag.id).where(Tag.name.in_(names))).all())
    unknown = [name for name in names if name not in found]
    if unknown:
        raise DomainError(_("No partner has the tag: %(tags)s.", tags=", ".join(unknown)), "tags")
    return [found[name] for name in names]


def _tag_ids(keys: list) -> sa.Select:
    tagged = sa.select(partner_tags.c.partner_id).where(partner_tags.c.tag_id.in_(keys))
    return _approved_ids().where(Partner.id.in_(tagged))


def _describe_tags(keys: list) -> str:
    names = db.session.scalars(sa.select(Tag.name).where(Tag.id.in_(keys)).order_by(Tag.name)).all()
    return _("partners tagged %(tags)s", tags=", ".join(names) or "—")


def _parse_partners(items: list[str]) -> list[int]:
    if not items:
        raise DomainError(_("Name at least one partner (partner code or e-mail)."), "partners")
    ids, unknown = [], []
    for item in items:
        key = item.strip().lower()
        partner = db.session.scalars(
            sa.select(Partner)
            .join(Partner.user)
            .where(
                sa.or_(Partner.ref_code == key, User.email == key), Partner.status == PartnerStatus.APPROVED
            )
        ).first()
        if partner is None:
            unknown.append(item)
        elif partner.id not in ids:
            ids.append(partner.id)
    if unknown:
        raise DomainError(
            _("No approved partner has the code or e-mail: %(items)s.", items=", ".join(unknown)), "partners"
        )
    return ids


def _describe_partners(keys: list) -> str:
    names = db.session.scalars(
        sa.select(User.name)
        .join(Partner, Partner.user_id == User.id)
        .where(Partner.id.in_(keys))
        .order_by(User.name)
    ).all()
    return _("named partners: %(names)s", names=", ".join(names) or "—")


register_audience(
    Audience(
        "all",
        _l("All approved partners"),
        parse=lambda items: [],
        partner_ids=lambda keys: _approved_ids(),
        describe=lambda keys: _("all approved partners"),
    )
)
register_audience(Audience("tags", _l("Partners with a tag"), _parse_tags, _tag_ids, _describe_tags))
register_audience(
    Audience(
        "partners",
        _l("Named partners"),
        _parse_partners,
        lambda keys: _approved_ids().where(Partner.id.in_(keys)),
        _describe_partners,
    )
)


def describe_audience(announcement: Announcement) -> str:
    audience = AUDIENCES.get(announcement.audience_kind)
    return audience.describe(announcement.audience_keys) if audience else announcement.audience_kind


# --- writing and publishing ------------------------------------------------------------------


@dataclass
class AnnouncementDraft:
    title: str
    body: str
    audience_kind: str = "all"
    # What the manager typed for the audience: tag names, partner codes / e-mails, tier names.
    audience_items: list[str] = field(default_factory=list)
    pinned: bool = False
    # "now", "schedule" (at publish_at) or "draft"
    when: str = "now"
    publish_at: datetime | None = None


def save_announcement(
    actor: User,
    draft: AnnouncementDraft,
    announcement: Announcement | None = None,
    now: datetime | None = None,
) -> Announcement:
    """Create or change an announcement that has not gone out; publish it now or schedule it."""
    now = now or utcnow()
    if announcement is not None and announcement.published_at is not None:
        raise DomainError(_("This announcement has gone out; it can only be pinned or unpinned."))
    title = " ".join((draft.title or "").split())
    body = (draft.body or "").strip()
    if not title:
        raise DomainError(_("Give the announcement a title."), "title")
    if len(title) > MAX_TITLE:
        raise DomainError(_("At most %(max)d characters.", max=MAX_TITLE), "title")
    if not body:
        raise DomainError(_("Write the announcement."), "body")
    if len(body) > MAX_BODY:
        raise DomainError(_("At most %(max)d characters.", max=MAX_BODY), "body")
    audience = AUDIENCES.get(draft.audience_kind)
    if audience is None:
        raise DomainError(_("Choose who gets it."), "audience_kind")
    keys = audience.parse(draft.audience_items)
    publish_at = None
    if draft.when == "schedule":
        if draft.publish_at is None:
            raise DomainError(_("Choose when it goes out."), "publish_at")
        if draft.publish_at.tzinfo is None:
            raise ValueError("publish_at must be timezone-aware")
        if draft.publish_at <= now:
            raise DomainError(_("Choose a time in the future, or publish it now."), "publish_at")
        publish_at = draft.publish_at
    elif draft.when not in ("now", "draft"):
        raise DomainError(_("Choose when it goes out."), "when")

    if (
        announcement is not None
        and draft.when != "now"
        and (
            announcement.title,
            announcement.body,
            announcement.audience_kind,
            announcement.audience_keys,
            announcement.pinned,
            announcement.publish_at,
        )
        == (title, body, audience.kind, keys, bool(draft.pinned), publish_at)
    ):
        return announcement  # an unchanged save is not an edit: nothing written, nothing audited
    if announcement is None:
        announcement = Announcement(created_by_id=actor.id)
        db.session.add(announcement)
    announcement.title = title
    announcement.body = body
    announcement.audience_kind = audience.kind
    announcement.audience_keys = keys
    announcement.pinned = bool(draft.pinned)
    announcement.publish_at = publish_at
    db.session.flush()
    record_event(actor, "announcement.saved", "announcement", announcement.id, when=draft.when)
    if draft.when == "now":
        publish(announcement, now)
    return announcement


def publish(announcement: Announcement, now: datetime | None = None) -> int | None:
    """Send the announcement to its audience once; the number of recipients, or None if it was already out."""
    now = now or utcnow()
    claimed = db.session.execute(
        sa.update(Announcement)
        .where(Announcement.id == announcement.id, Announcement.published_at.is_(None))
        .values(published_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        return None  # another publisher (a second job run, a double click) got there first
    announcement.published_at = now
    audience = AUDIENCES.get(announcement.audience_kind)
    if audience is None:
        raise DomainError(_("Unknown audience “%(kind)s”.", kind=announcement.audience_kind))
    # One statement whatever the audience's size: the database copies the audience's ids into
    # the recipient rows and hands them back for the live event (no row built in Python).
    audience_ids = audience.partner_ids(announcement.audience_keys).subquery()
    partner_ids = sorted(
        db.session.scalars(
            sa.insert(AnnouncementRecipient)
            .from_select(
                ["announcement_id", "partner_id"],
                sa.select(sa.literal(announcement.id, sa.Integer), *audience_ids.c),
            )
            .returning(AnnouncementRecipient.partner_id)
        )
    )
    db.session.flush()
    _email_recipients(announcement, partner_ids)
    realtime.notify_partners(partner_ids, "announcement", {"announcement": announcement.id})
    realtime.notify_operators("announcement", {"announcement": announcement.id})
    return len(partner_ids)


def _email_recipients(announcement: Announcement, partner_ids: list[int]) -> None:
    if not partner_ids or not delivery.mail_configured():
        return
    link = absolute_url("partner.show_announcement", announcement_id=announcement.id)
    for chunk in range(0, len(partner_ids), 500):
        partners = db.session.scalars(
            sa.select(Partner).where(Partner.id.in_(partner_ids[chunk : chunk + 500]))
        ).all()
        for partner in partners:
            delivery.queue_email(partner, "announcement", announcement.title, announcement.body, link)


def publish_due(now: datetime | None = None) -> int:
    """Publish every scheduled announcement whose time has come (the job calls this)."""
    now = now or utcnow()
    due = db.session.scalars(
        sa.select(Announcement)
        .where(
            Announcement.published_at.is_(None),
            Announcement.publish_at.is_not(None),
            Announcement.publish_at <= now,
        )
        .order_by(Announcement.publish_at, Announcement.id)
    ).all()
    return sum(1 for announcement in due if publish(announcement, now) is not None)


def set_pinned(announcement: Announcement, actor: User, pinned: bool) -> Announcement:
    announcement.pinned = pinned
    record_event(
        actor, "announcement.pinned" if pinned else "announcement.unpinned", "announcement", announcement.id
    )
    db.session.flush()
    if announcement.published_at is not None:
        ids = db.session.scalars(
            sa.select(AnnouncementRecipient.partner_id).where(
                AnnouncementRecipient.announcement_id == announcement.id
            )
        ).all()
        realtime.notify_partners(ids, "announcement", {"announcement": announcement.id})
    return announcement


# --- reading ------------------------------------------------------------------------------


@dataclass
class PartnerAnnouncement:
    announcement: Announcement
    read_at: datetime | None


def partner_announcements(
    partner: Partner, limit: int | None = None, pinned_or_unread: bool = False
) -> list[PartnerAnnouncement]:
    """The announcements that went to this partner: pinned first, then newest."""
    query = (
        sa.select(Announcement, AnnouncementRecipient.read_at)
        .join(AnnouncementRecipient, AnnouncementRecipient.announcement_id == Announcement.id)
        .where(AnnouncementRecipient.partner_id == partner.id, Announcement.published_at.is_not(None))
        .order_by(Announcement.pinned.desc(), Announcement.published_at.desc(), Announcement.id.desc())
    )
    if pinned_or_unread:
        query = query.where(sa.or_(Announcement.pinned.is_(True), AnnouncementRecipient.read_at.is_(None)))
    if limit:
        query = query.limit(limit)
    return [PartnerAnnouncement(a, read_at) for a, read_at in db.session.execute(query)]


def partner_announcement(partner: Partner, announcement_id: int) -> PartnerAnnouncement | None:
    row = db.session.execute(
        sa.select(Announcement, AnnouncementRecipient.read_at)
        .join(AnnouncementRecipient, AnnouncementRecipient.announcement_id == Announcement.id)
        .where(
            Announcement.id == announcement_id,
            AnnouncementRecipient.partner_id == partner.id,
            Announcement.published_at.is_not(None),
        )
    ).first()
    return PartnerAnnouncement(*row) if row else None


def mark_read(partner: Partner, announcement: Announcement) -> bool:
    result = db.session.execute(
        sa.update(AnnouncementRecipient)
        .where(
            AnnouncementRecipient.announcement_id == announcement.id,
            AnnouncementRecipient.partner_id == partner.id,
            AnnouncementRecipient.read_at.is_(None),
        )
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        realtime.notify(partner.id, "read", {"announcement": announcement.id})
        realtime.notify_operators("announcement_read", {"announcement": announcement.id})
    return bool(result.rowcount)


@dataclass
class ReadStats:
    audience: int
    read: int


def read_stats(announcement_ids: list[int]) -> dict[int, ReadStats]:
    rows = db.session.execute(
        sa.select(
            AnnouncementRecipient.announcement_id,
            sa.func.count(),
            sa.func.count(AnnouncementRecipient.read_at),
        )
        .where(AnnouncementRecipient.announcement_id.in_(announcement_ids))
        .group_by(AnnouncementRecipient.announcement_id)
    )
    stats = {aid: ReadStats(0, 0) for aid in announcement_ids}
    stats.update({aid: ReadStats(total, read) for aid, total, read in rows})
    return stats


def announcement_query() -> sa.Select:
    """For operators: drafts and scheduled first, then the newest published."""
    return sa.select(Announcement).order_by(
        Announcement.published_at.is_(None).desc(),
        Announcement.published_at.desc(),
        Announcement.id.desc(),
    )
