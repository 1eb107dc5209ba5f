"""The creative library: adding, editing, replacing, publishing and archiving creatives, and
the ready-to-paste code each partner gets.

Content is versioned: an edit of the content or a new file adds a version and
the old ones stay as history; partners always get the current version. Files
are written to the store last, after the rows are flushed (see ``portal.storage``).
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass, field, replace
from functools import cache
from urllib.parse import urlsplit

import sqlalchemy as sa
from babel import Locale
from flask import current_app
from flask_babel import gettext as _
from sqlalchemy.orm import aliased, selectinload

from portal import realtime, urlcheck
from portal.errors import DomainError, InvalidFile, InvalidTransition
from portal.extensions import db
from portal.models import (
    CHANNELS,
    Creative,
    CreativeKind,
    CreativeStatus,
    CreativeVersion,
    Partner,
    PartnerStatus,
    Program,
    User,
)
from portal.models.types import utcnow
from portal.services import events
from portal.services.audit import record_event
from portal.services.creative_files import ImageInfo, Upload, inspect_image
from portal.storage import Storage, current_storage, put_in_transaction

LINK_PLACEHOLDER = "{link}"
# The partner's coupon code (their first active one) in text copy and e-mails.
COUPON_PLACEHOLDER = "{coupon}"
PLACEHOLDERS = (LINK_PLACEHOLDER, COUPON_PLACEHOLDER)
_PLACEHOLDER = re.compile(r"\{[^{}\s]{1,40}\}")
_SHORT_TEXT = re.compile(r"^[\w .:/+-]*$")
# Kinds that carry a stored image: the banner itself, or a landing page's optional screenshot.
FILE_KINDS = frozenset({CreativeKind.BANNER, CreativeKind.LANDING})
_CONTENT_FIELDS = ("headline", "subject", "body", "call_to_action", "url")


@dataclass
class CreativeInput:
    """What an operator fills in; which content fields count depends on the kind."""

    name: str
    channels: list[str]
    language: str = "en"
    description: str | None = None
    campaign: str | None = None
    headline: str | None = None
    subject: str | None = None
    body: str | None = None
    call_to_action: str | None = None
    url: str | None = None
    note: str | None = None


@dataclass
class BulkResult:
    filename: str
    creative: Creative | None = None
    error: str | None = None


@dataclass
class CreativeCode:
    """What a partner copies: their own link inside, ready to paste."""

    link: str
    # The text asks for a {coupon} and the partner has no active code: it is shown as it is.
    needs_coupon: bool = False
    embed_html: str | None = None
    text: str | None = None
    subject: str | None = None
    video_url: str | None = None
    extras: dict[str, str] = field(default_factory=dict)


# --- labels and choices -----------------------------------------------------------------


def kind_label(kind: str) -> str:
    return {
        CreativeKind.BANNER: _("Banner"),
        CreativeKind.TEXT: _("Text copy"),
        CreativeKind.LANDING: _("Landing page"),
        CreativeKind.EMAIL: _("E-mail template"),
        CreativeKind.VIDEO: _("Video link"),
    }.get(kind, kind)


@cache
def language_names() -> dict[str, str]:
    """ISO 639-1 codes and their English names."""
    return {code: name for code, name in Locale("en").languages.items() if len(code) == 2 and code.isalpha()}


def language_label(code: str | None) -> str:
    return language_names().get(code or "", code or "—")


# --- checking input ---------------------------------------------------------------------


def _clean(value: str | None) -> str | None:
    return (value or "").strip() or None


def _check_placeholders(text: str, field_name: str) -> None:
    for found in _PLACEHOLDER.findall(text):
        if found not in PLACEHOLDERS:
            raise DomainError(
                _(
                    "Only {link} and {coupon} are filled in for partners; “%(found)s” would be shown "
                    "as it is.",
                    found=found,
                ),
                field_name,
            )


def _checked(kind: str, data: CreativeInput, program: Program) -> CreativeInput:
    """The input with whitespace trimmed, or a DomainError naming the field that is wrong."""
    name = _clean(data.name)
    if not name or len(name) > 120:
        raise DomainError(_("Name the creative (at most 120 characters)."), "name")
    channels = [c for c in dict.fromkeys(data.channels or []) if c]
    if not channels:
        raise DomainError(_("Choose at least one channel."), "channels")
    if any(c not in CHANNELS for c in channels):
        raise DomainError(_("Choose channels from the list."), "channels")
    campaign = _clean(data.campaign)
    if campaign and (len(campaign) > 64 or not _SHORT_TEXT.match(campaign)):
        raise DomainError(_("Use letters, digits, spaces and . : / + - only (at most 64)."), "campaign")
    language = (data.language or "").strip().lower()
    if language not in language_names():
        raise DomainError(_("Choose a language from the list."), "language")
    cleaned = CreativeInput(
        name=name,
        channels=[c for c in CHANNELS if c in channels],
        language=language,
        description=_clean(data.description),
        campaign=campaign,
        note=_clean(data.note),
    )

    if kind == CreativeKind.TEXT:
        cleaned.headline = _clean(data.headline)
        cleaned.body = _clean(data.body)
        cleaned.call_to_action = _clean(data.call_to_action)
        if not cleaned.body:
            raise DomainError(_("Write the text partners will post."), "body")
        for name_, value in (("headline", cleaned.headline), ("body", cleaned.body)):
            if value:
                _check_placeholders(value, name_)
        if cleaned.call_to_action:
            _check_placeholders(cleaned.call_to_action, "call_to_action")
        if LINK_PLACEHOLDER not in (cleaned.body or "") + (cleaned.call_to_action or ""):
            raise DomainError(
                _("Put {link} in the text or the call to action where the partner's link goes."), "body"
            )
    elif kind == CreativeKind.EMAIL:
        cleaned.subject = _clean(data.subject)
        cleaned.body = _clean(data.body)
        if not cleaned.subject:
            raise DomainError(_("Write the e-mail's subject line."), "subject")
        if not cleaned.body:
            raise DomainError(_("Write the e-mail's text."), "body")
        _check_placeholders(cleaned.subject, "subject")
        _check_placeholders(cleaned.body, "body")
        if LINK_PLACEHOLDER not in cleaned.body:
            raise DomainError(_("Put {link} in the e-mail where the partner's link goes."), "body")
    elif kind == CreativeKind.LANDING:
        cleaned.url = urlcheck.checked_destination(_clean(data.url), program.allowed_domains)
        if not cleaned.url:
            raise DomainError(
                _(
                    "Landing pages must be on the program's own sites: %(domains)s.",
                    domains=", ".join(program.allowed_domains) or "—",
                ),
                "url",
            )
    elif kind == CreativeKind.VIDEO:
        cleaned.url = _clean(data.url)
        parts = urlsplit(cleaned.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise DomainError(_("Enter the video's full address, starting with https://."), "url")
    if cleaned.url and len(cleaned.url) > 2000:
        raise DomainError(_("At most %(max)d characters.", max=2000), "url")
    for name_, limit in (("headline", 200), ("subject", 200), ("call_to_action", 200)):
        value = getattr(cleaned, name_)
        if value and len(value) > limit:
            raise DomainError(_("At most %(max)d characters.", max=limit), name_)
    return cleaned


def _max_bytes() -> int:
    return current_app.config["CREATIVE_MAX_BYTES"]


def _store_file(
    creative: Creative, version: CreativeVersion, upload: Upload, info: ImageInfo, storage
) -> None:
    """Write the image last: the rows are flushed, so only the commit is left to fail."""
    key = f"creatives/{creative.id}/v{version.number}-{secrets.token_hex(8)}.{info.extension}"
    version.file_key = key
    version.file_type = info.content_type
    version.file_size = info.size
    version.file_name = upload.display_name[:255]
    version.file_sha256 = info.sha256
    version.width = info.width
    version.height = info.height
    db.session.flush()
    put_in_transaction(db.session, storage, key, upload.data, info.content_type)


# --- writing ------------------------------------------------------------------------------


def create_creative(
    kind: str,
    actor: User,
    program: Program,
    data: CreativeInput,
    upload: Upload | None = None,
    *,
    storage: Storage | None = None,
) -> Creative:
    """A new draft creative with its first version (and its file, for a banner or screenshot)."""
    if kind not in set(CreativeKind):
        raise DomainError(_("Choose a kind of creative."))
    cleaned = _checked(kind, data, program)
    info = None
    if kind in FILE_KINDS and upload is not None and (upload.size or upload.filename):
        info = inspect_image(upload, _max_bytes())
    elif kind == CreativeKind.BANNER:
        raise InvalidFile(_("Choose the banner image to upload."), "file")
    creative = Creative(
        kind=kind,
        name=cleaned.name,
        description=cleaned.description,
        channels=cleaned.channels,
        campaign=cleaned.campaign,
        language=cleaned.language,
        status=CreativeStatus.DRAFT,
        current_version=1,
        created_by_id=actor.id,
    )
    db.session.add(creative)
    db.session.flush()
    version = CreativeVersion(
        creative_id=creative.id,
        number=1,
        created_by_id=actor.id,
        note=cleaned.note,
        **{name: getattr(cleaned, name) for name in _CONTENT_FIELDS},
    )
    db.session.add(version)
    db.session.flush()
    record_event(actor, "creative.created", "creative", creative.id, kind=kind, name=creative.name)
    if info is not None:
        _store_file(creative, version, upload, info, storage or current_storage())
    db.session.expire(creative, ["current"])
    return creative


def _new_version(creative: Creative, actor: User, note: str | None, **changes) -> CreativeVersion:
    current = creative.current
    number = creative.current_version + 1
    version = CreativeVersion(creative_id=creative.id, number=number, created_by_id=actor.id, note=note)
    for name in (*_CONTENT_FIELDS, "file_key", "file_type", "file_size", "file_name", "file_sha256"):
        setattr(version, name, getattr(current, name))
    version.width, version.height = current.width, current.height
    for name, value in changes.items():
        setattr(version, name, value)
    db.session.add(version)
    creative.current_version = number
    db.session.flush()
    return version


def update_creative(creative: Creative, actor: User, program: Program, data: CreativeInput) -> Creative:
    """Change the details in place; changed content becomes a new version."""
    cleaned = _checked(creative.kind, data, program)
    changed = {}
    for name in ("name", "description", "channels", "campaign", "language"):
        if getattr(creative, name) != getattr(cleaned, name):
            changed[name] = [getattr(creative, name), getattr(cleaned, name)]
            setattr(creative, name, getattr(cleaned, name))
    content = {
        name: getattr(cleaned, name)
        for name in _CONTENT_FIELDS
        if getattr(cleaned, name) != getattr(creative.current, name)
    }
    if content:
        version = _new_version(creative, actor, cleaned.note, **content)
        changed["version"] = version.number
    if not changed:
        return creative
    creative.updated_at = utcnow()
    record_event(actor, "creative.updated", "creative", creative.id, changes=changed)
    db.session.flush()
    db.session.expire(creative, ["current"])
    _announce(creative, "updated")
    return creative


def replace_file(
    creative: Creative,
    actor: User,
    upload: Upload,
    note: str | None = None,
    *,
    storage: Storage | None = None,
) -> Creative:
    """A new banner image (or landing-page screenshot) as a new version; the old one stays in history."""
    if creative.kind not in FILE_KINDS:
        raise DomainError(_("Only banners and landing pages have an image."))
    if not upload.size and not upload.filename:
        raise InvalidFile(_("Choose the new image to upload."), "file")
    info = inspect_image(upload, _max_bytes())
    version = _new_version(creative, actor, _clean(note))
    creative.updated_at = utcnow()
    _store_file(creative, version, upload, info, storage or current_storage())
    record_event(
        actor,
        "creative.file_replaced",
        "creative",
        creative.id,
        version=version.number,
        file=version.file_name,
        size=info.size,
    )
    db.session.expire(creative, ["current"])
    _announce(creative, "updated")
    return creative


_TRANSITIONS = {
    "publish": ({CreativeStatus.DRAFT, CreativeStatus.ARCHIVED}, CreativeStatus.PUBLISHED),
    "archive": ({CreativeStatus.DRAFT, CreativeStatus.PUBLISHED}, CreativeStatus.ARCHIVED),
}


def set_creative_status(creative: Creative, actor: User, verb: str) -> Creative:
    """Publish (partners see it) or archive (withdrawn from the library)."""
    sources, target = _TRANSITIONS[verb]
    if creative.status not in sources:
        raise InvalidTransition(
            _(
                "A creative that is %(status)s cannot be changed this way.",
                status=status_label(creative.status),
            )
        )
    previous = creative.status
    creative.status = target
    now = utcnow()
    creative.updated_at = now
    if target == CreativeStatus.PUBLISHED:
        creative.published_at = now
    record_event(actor, f"creative.{verb}", "creative", creative.id, previous=previous)
    db.session.flush()
    if target == CreativeStatus.PUBLISHED:
        events.record(
            "creative.published",
            {
                "creative_id": creative.id,
                "name": creative.name,
                "kind": creative.kind,
                "channels": list(creative.channels or []),
            },
        )
        _announce(creative, "published")
    return creative


def status_label(status: str) -> str:
    return {
        CreativeStatus.DRAFT: _("draft"),
        CreativeStatus.PUBLISHED: _("published"),
        CreativeStatus.ARCHIVED: _("archived"),
    }.get(status, status)


def bulk_upload_banners(
    actor: User,
    program: Program,
    uploads: list[Upload],
    common: CreativeInput,
    *,
    storage: Storage | None = None,
) -> list[BulkResult]:
    """One draft banner per acceptable file; refused files say why and the rest still go in.

    A store failure refuses the whole batch (the caller rolls back; the objects already
    written are deleted with it).
    """
    limit = current_app.config["CREATIVE_BULK_MAX_FILES"]
    uploads = [u for u in uploads if u.size or u.filename]
    if not uploads:
        raise InvalidFile(_("Choose one or more images to upload."), "files")
    if len(uploads) > limit:
        raise InvalidFile(_("At most %(n)d files at once.", n=limit), "files")
    # Shape first, so that a wrong channel is reported once and not per file.
    _checked(CreativeKind.BANNER, replace(common, name="x"), program)
    results = []
    for upload in uploads:
        data = replace(common, name=name_from_filename(upload.display_name))
        try:
            creative = create_creative(CreativeKind.BANNER, actor, program, data, upload, storage=storage)
        except InvalidFile as error:
            results.append(BulkResult(upload.display_name, error=error.message))
        else:
            results.append(BulkResult(upload.display_name, creative=creative))
    return results


def name_from_filename(filename: str) -> str:
    """``summer_sale-300x250.png`` → ``Summer sale 300x250``."""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    words = re.sub(r"[_\-.]+", " ", stem).strip()
    return (words[:1].upper() + words[1:])[:120] or _("Banner")


def _announce(creative: Creative, action: str) -> None:
    """Tell partners working in the creative's channels that something is new or changed."""
    if creative.status != CreativeStatus.PUBLISHED:
        return
    rows = db.session.execute(
        sa.select(Partner.id, Partner.channels).where(
            Partner.status.in_([PartnerStatus.APPROVED, PartnerStatus.SUSPENDED])
        )
    )
    wanted = set(creative.channels)
    payload = {"creative": creative.id, "action": action, "kind": creative.kind, "name": creative.name}
    for partner_id, channels in rows:
        if wanted.intersection(channels or []):
            realtime.notify(partner_id, "creative", payload)
    realtime.notify_operators("creative", payload)


# --- reading --------------------------------------------------------------------------------


def _channel_clause(channel: str):
    # Channels are a JSON list; its text form holds each code in quotes, on SQLite and PostgreSQL.
    return sa.cast(Creative.channels, sa.String).like(f'%"{channel}"%')


def creative_query(
    *,
    status: str | None = None,
    kind: str | None = None,
    channel: str | None = None,
    campaign: str | None = None,
    language: str | None = None,
    search: str | None = None,
) -> sa.Select:
    """Creatives, newest change first, filtered; every filter is optional."""
    query = sa.select(Creative)
    if status:
        query = query.where(Creative.status == status)
    if kind:
        query = query.where(Creative.kind == kind)
    if channel and channel in CHANNELS:
        query = query.where(_channel_clause(channel))
    if campaign:
        query = query.where(Creative.campaign == campaign)
    if language:
        query = query.where(Creative.language == language)
    if search:
        term = f"%{search.strip().lower()}%"
        current = aliased(CreativeVersion)
        query = query.join(
            current,
            sa.and_(current.creative_id == Creative.id, current.number == Creative.current_version),
        ).where(
            sa.or_(
                sa.func.lower(Creative.name).like(term),
                sa.func.lower(sa.func.coalesce(Creative.description, "")).like(term),
                sa.func.lower(sa.func.coalesce(Creative.campaign, "")).like(term),
                sa.func.lower(sa.func.coalesce(current.headline, "")).like(term),
                sa.func.lower(sa.func.coalesce(current.subject, "")).like(term),
                sa.func.lower(sa.func.coalesce(current.body, "")).like(term),
            )
        )
    return query.order_by(Creative.updated_at.desc(), Creative.id.desc())


def library_query(**filters) -> sa.Select:
    """What partners may see: published creatives only."""
    return creative_query(status=CreativeStatus.PUBLISHED, **filters)


def published_creative(creative_id: int) -> Creative | None:
    return db.session.scalars(
        sa.select(Creative).where(Creative.id == creative_id, Creative.status == CreativeStatus.PUBLISHED)
    ).first()


def creative_with_history(creative_id: int) -> Creative | None:
    return db.session.scalars(
        sa.select(Creative)
        .where(Creative.id == creative_id)
        .options(selectinload(Creative.versions).selectinload(CreativeVersion.created_by))
    ).first()


def campaigns_in_use(status: str | None = CreativeStatus.PUBLISHED) -> list[str]:
    query = sa.select(Creative.campaign).where(Creative.campaign.is_not(None)).distinct()
    if status:
        query = query.where(Creative.status == status)
    return sorted(db.session.scalars(query))


def languages_in_use(status: str | None = CreativeStatus.PUBLISHED) -> list[str]:
    query = sa.select(Creative.language).distinct()
    if status:
        query = query.where(Creative.status == status)
    return sorted(db.session.scalars(query))


# --- the partner's code ----------------------------------------------------------------------


def fill_link(text: str | None, link: str, coupon: str | None = None) -> str | None:
    if text is None:
        return None
    text = text.replace(LINK_PLACEHOLDER, link)
    return text.replace(COUPON_PLACEHOLDER, coupon) if coupon else text


def code_for(
    creative: Creative, *, link: str, image_url: str | None = None, coupon: str | None = None
) -> CreativeCode:
    """The partner's ready-to-paste code for the current version, with their ``link`` (and
    their ``coupon`` code, where the copy has ``{coupon}``) inside."""
    version = creative.current
    code = CreativeCode(link=link)
    if creative.kind in (CreativeKind.TEXT, CreativeKind.EMAIL) and not coupon:
        texts = (version.headline, version.body, version.call_to_action, version.subject)
        code.needs_coupon = any(COUPON_PLACEHOLDER in (t or "") for t in texts)
    if creative.kind == CreativeKind.BANNER:
        code.embed_html = (
            f'<a href="{html.escape(link)}" target="_blank" rel="sponsored noopener">'
            f'<img src="{html.escape(image_url or "")}" width="{version.width}" height="{version.height}"'
            f' alt="{html.escape(creative.name)}" style="border:0;max-width:100%;height:auto"></a>'
        )
    elif creative.kind == CreativeKind.TEXT:
        parts = [
            fill_link(version.headline, link, coupon),
            fill_link(version.body, link, coupon),
            fill_link(version.call_to_action, link, coupon),
        ]
        code.text = "\n\n".join(p for p in parts if p)
    elif creative.kind == CreativeKind.EMAIL:
        code.subject = fill_link(version.subject, link, coupon)
        code.text = fill_link(version.body, link, coupon)
    elif creative.kind == CreativeKind.VIDEO:
        code.video_url = version.url
        code.text = "\n".join(p for p in (creative.description, version.url, link) if p)
    return code


def main_code(code: CreativeCode) -> str:
    """The one piece a partner copies from the library grid: the HTML of a banner, the text of
    copy, an e-mail or a video, else (a landing page) the link itself."""
    if code.embed_html:
        return code.embed_html
    if code.text:
        return f"{code.subject}\n\n{code.text}" if code.subject else code.text
    return code.link


def download_name(creative: Creative, version: CreativeVersion | None = None) -> str:
    version = version or creative.current
    stem = re.sub(r"[^A-Za-z0-9]+", "-", creative.name).strip("-").lower()[:60] or "creative"
    extension = (version.file_key or "").rsplit(".", 1)[-1]
    size = f"-{version.width}x{version.height}" if version.width else ""
    return f"{stem}{size}.{extension}"
