"""Partners' tracking links: creating, switching off, custom slugs."""

from __future__ import annotations

import re
import secrets

import sqlalchemy as sa
from flask_babel import gettext as _

from portal import urlcheck
from portal.errors import DomainError
from portal.extensions import db
from portal.models import CHANNELS, Link, Partner, PartnerStatus, Program, User
from portal.services.audit import record_event

_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,62}[a-z0-9])$")
_SHORT_TEXT = re.compile(r"^[\w .:/+-]*$")


def code_taken(code: str) -> bool:
    """Link codes and partners' ref codes share one namespace under /go/."""
    in_links = db.session.scalar(sa.select(sa.func.count()).where(Link.code == code))
    in_refs = db.session.scalar(sa.select(sa.func.count()).where(Partner.ref_code == code))
    return bool(in_links or in_refs)


def generate_link_code(length: int = 7) -> str:
    while True:
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(length))
        if not code_taken(code):
            return code


def _check_destination(url: str | None, program: Program) -> str | None:
    url = (url or "").strip() or None
    if url is None:
        return None
    try:
        return urlcheck.clean_destination(url, program.allowed_domains)
    except urlcheck.UnsafeUrl:
        raise DomainError(
            _(
                "Links may only point to the program's sites: %(domains)s.",
                domains=", ".join(program.allowed_domains) or "—",
            ),
            "destination_url",
        ) from None


def _clean_tag(value: str | None, field: str) -> str | None:
    value = (value or "").strip() or None
    if value is not None and not _SHORT_TEXT.match(value):
        raise DomainError(_("Use letters, digits, spaces and . : / + - only."), field)
    return value


def create_link(
    partner: Partner,
    program: Program,
    *,
    label: str,
    channel: str,
    destination_url: str | None = None,
    campaign: str | None = None,
    sub_id: str | None = None,
) -> Link:
    """A new tracking link for ``partner`` with a short random code (not while suspended)."""
    if partner.status == PartnerStatus.SUSPENDED:
        raise DomainError(_("Your account is suspended, so no new link can be made until it is reinstated."))
    if channel not in CHANNELS:
        raise DomainError(_("Choose a channel."), "channel")
    link = Link(
        partner_id=partner.id,
        code=generate_link_code(),
        destination_url=_check_destination(destination_url, program),
        label=label.strip(),
        channel=channel,
        campaign=_clean_tag(campaign, "campaign"),
        sub_id=_clean_tag(sub_id, "sub_id"),
    )
    db.session.add(link)
    db.session.flush()
    return link


def set_link_active(link: Link, active: bool) -> Link:
    link.active = active
    db.session.flush()
    return link


def grant_custom_slug(link: Link, actor: User, slug: str) -> Link:
    """Admins may give a link a readable code such as ``summer-sale``."""
    slug = slug.strip().lower()
    if not _SLUG.match(slug):
        raise DomainError(_("3 to 64 lower-case letters, digits and dashes; no dash at either end."), "slug")
    if slug != link.code and code_taken(slug):
        raise DomainError(_("That code is already in use."), "slug")
    old = link.code
    link.code = slug
    link.custom_slug = True
    db.session.flush()
    record_event(actor, "link.custom_slug", "partner", link.partner_id, link_id=link.id, old=old, new=slug)
    return link


def links_of(partner: Partner) -> list[Link]:
    return list(
        db.session.scalars(
            sa.select(Link).where(Link.partner_id == partner.id).order_by(Link.active.desc(), Link.id.desc())
        )
    )
