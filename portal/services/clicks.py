"""The click redirect's rules: which link a code means, where it goes, what the click is.

This is the hot path. Look-ups are cached in the process for a few seconds; the
click row itself is written by ``portal.clickwriter`` in batches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from portal.extensions import db
from portal.models import (
    Click,
    Creative,
    CreativeKind,
    CreativeStatus,
    CreativeVersion,
    Link,
    Partner,
    PartnerStatus,
    Program,
)
from portal.services import rollups

CACHE_SECONDS = 30.0
_MAX_CACHED = 50_000
_BOTS = re.compile(
    r"bot|crawl|spider|slurp|mediapartners|facebookexternalhit|embedly|preview|monitor|"
    r"curl/|wget/|python-requests|python-urllib|httpclient|go-http-client|headlesschrome|phantomjs",
)
_SUB = re.compile(r"^[\w.:+-]{1,64}$")


@dataclass(frozen=True)
class Target:
    """What a code resolves to, as the redirect needs it."""

    code: str
    partner_id: int
    ref_code: str
    link_id: int | None
    destination_url: str | None
    channel: str
    campaign: str | None
    sub_id: str | None
    link_active: bool
    partner_attributes: bool


@dataclass(frozen=True)
class Routing:
    """The program settings the redirect needs."""

    default_landing_url: str
    allowed_domains: tuple[str, ...]
    ref_param: str
    click_id_param: str
    flood_rule: bool
    flood_per_minute: int


class _TTLCache:
    def __init__(self, seconds: float, size: int):
        self.seconds = seconds
        self.size = size
        self._data: dict = {}
        self._lock = threading.Lock()

    def get(self, key):
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return _MISS

    def put(self, key, value) -> None:
        with self._lock:
            if len(self._data) >= self.size:
                self._data.clear()
            self._data[key] = (time.monotonic() + self.seconds, value)

    def forget(self, key=None) -> None:
        with self._lock:
            if key is None:
                self._data.clear()
            else:
                self._data.pop(key, None)


_MISS = object()
_targets = _TTLCache(CACHE_SECONDS, _MAX_CACHED)
_routing = _TTLCache(CACHE_SECONDS, 4)
_creative_landings = _TTLCache(CACHE_SECONDS, 10_000)


def forget_target(code: str | None = None) -> None:
    """Drop cached look-ups in this process (other workers refresh within CACHE_SECONDS)."""
    _targets.forget(code)


def forget_routing() -> None:
    _routing.forget()


def forget_creative(creative_id: int | None = None) -> None:
    _creative_landings.forget(creative_id)


def creative_id_from(value: str | None) -> int | None:
    """The ``?creative=`` parameter as an id, or None when it is not one."""
    return int(value) if value and value.isdigit() and len(value) < 10 else None


def creative_landing(value: str | None) -> str | None:
    """Where a published landing-page creative sends its clicks, if ``value`` names one."""
    creative_id = creative_id_from(value)
    if creative_id is None:
        return None
    cached = _creative_landings.get(creative_id)
    if cached is _MISS:
        cached = db.session.scalar(
            sa.select(CreativeVersion.url)
            .join(
                Creative,
                sa.and_(
                    CreativeVersion.creative_id == Creative.id,
                    CreativeVersion.number == Creative.current_version,
                ),
            )
            .where(
                Creative.id == creative_id,
                Creative.kind == CreativeKind.LANDING,
                Creative.status == CreativeStatus.PUBLISHED,
            )
        )
        _creative_landings.put(creative_id, cached)
    return cached


def _load_target(code: str) -> Target | None:
    row = db.session.execute(
        sa.select(Link, Partner.ref_code, Partner.status)
        .join(Partner, Partner.id == Link.partner_id)
        .where(Link.code == code)
    ).first()
    if row is not None:
        link, ref_code, status = row
        return Target(
            code=code,
            partner_id=link.partner_id,
            ref_code=ref_code,
            link_id=link.id,
            destination_url=link.destination_url,
            channel=link.channel,
            campaign=link.campaign,
            sub_id=link.sub_id,
            link_active=link.active,
            partner_attributes=status == PartnerStatus.APPROVED,
        )
    # A partner's ref code is their default link to the default landing page.
    partner = db.session.execute(
        sa.select(Partner.id, Partner.status).where(Partner.ref_code == code)
    ).first()
    if partner is None:
        return None
    return Target(
        code=code,
        partner_id=partner.id,
        ref_code=code,
        link_id=None,
        destination_url=None,
        channel="other",
        campaign=None,
        sub_id=None,
        link_active=True,
        partner_attributes=partner.status == PartnerStatus.APPROVED,
    )


def resolve(code: str) -> Target | None:
    key = code.lower()
    cached = _targets.get(key)
    if cached is _MISS:
        cached = _load_target(key) if len(key) <= 64 else None
        _targets.put(key, cached)
    return cached


def routing() -> Routing | None:
    cached = _routing.get("program")
    if cached is _MISS:
        program = db.session.scalars(sa.select(Program).order_by(Program.id).limit(1)).first()
        cached = None
        if program is not None:
            cached = Routing(
                default_landing_url=program.default_landing_url,
                allowed_domains=tuple(program.allowed_domains),
                ref_param=program.ref_param,
                click_id_param=program.click_id_param,
                flood_rule=program.fraud_click_flood,
                flood_per_minute=program.click_flood_per_minute,
            )
        _routing.put("program", cached)
    return cached


def hash_ip(ip: str | None) -> str:
    """A keyed hash: the same address always gives the same value, which cannot be reversed."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, (ip or "").encode(), hashlib.sha256).hexdigest()[:32]


def is_bot(user_agent: str | None) -> bool:
    return not user_agent or bool(_BOTS.search(user_agent.lower()))


class _FloodCounter:
    """Clicks per (address, code) in the current minute, in this process."""

    def __init__(self):
        self._minute = 0
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def hit(self, ip_hash: str, code: str, now: float) -> int:
        minute = int(now // 60)
        with self._lock:
            if minute != self._minute:
                self._minute = minute
                self._counts = {}
            key = (ip_hash, code)
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]


flood_counter = _FloodCounter()


def with_params(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` set in its query string (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def destination_for(target: Target | None, route: Routing, creative_landing: str | None = None) -> str:
    """The link's own destination, else the landing-page creative's, each only while it is
    still on an allowed domain; else the default landing page."""
    from portal.services.program import is_allowed_destination

    for url in (target.destination_url if target is not None else None, creative_landing):
        if url and is_allowed_destination(url, list(route.allowed_domains)):
            return url
    return route.default_landing_url


def new_click_id() -> str:
    return secrets.token_hex(16)


def clean_sub(value: str | None) -> str | None:
    return value if value and _SUB.match(value) else None


def click_row(
    target: Target,
    route: Routing,
    *,
    destination: str,
    ip: str | None,
    user_agent: str | None,
    referrer: str | None,
    sub: str | None,
    creative: str | None,
    seen_before: bool,
    now: datetime,
) -> dict:
    """The click as a row for the clicks table."""
    ip_hash = hash_ip(ip)
    bot = is_bot(user_agent)
    flagged = None
    if route.flood_rule and flood_counter.hit(ip_hash, target.code, now.timestamp()) > route.flood_per_minute:
        flagged = "click_flood"
    return {
        "id": new_click_id(),
        "partner_id": target.partner_id,
        "link_id": target.link_id,
        "code": target.code,
        "channel": target.channel,
        "campaign": target.campaign,
        "sub_id": clean_sub(sub) or target.sub_id,
        "creative_id": creative_id_from(creative),
        "destination_url": destination[:2000],
        "ip_hash": ip_hash,
        "user_agent": (user_agent or "")[:512] or None,
        "referrer": (referrer or "")[:1000] or None,
        "is_bot": bot,
        "is_unique": not (bot or flagged or seen_before),
        "flagged": flagged,
        "created_at": now,
    }


def store_clicks(executor: sa.Connection | Session, rows: list[dict]) -> set[int]:
    """Insert click rows (one executemany) and count them in the rollups, in the caller's
    transaction; returns the partners the clicks belong to."""
    executor.execute(sa.insert(Click), rows)
    return rollups.count_clicks(executor, rows)
