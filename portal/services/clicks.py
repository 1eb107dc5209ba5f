"""The click redirect's rules: which link a code means, where it goes, what the click is.

This is the hot path. Look-ups are cached in each process by ``portal.lookups``
(which notices changes made by any worker); the click row itself is written by
``portal.clickwriter`` in batches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from portal import lookups, urlcheck
from portal.database import dialect_insert
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

_BOTS = re.compile(
    r"bot|crawl|spider|slurp|mediapartners|facebookexternalhit|embedly|preview|monitor|"
    r"curl/|wget/|python-requests|python-urllib|httpclient|go-http-client|headlesschrome|phantomjs",
)
_SUB = re.compile(r"^[\w.:+-]{1,64}$")


@dataclass(frozen=True)
class Routing:
    """The program settings the redirect needs."""

    default_landing_url: str
    allowed_domains: tuple[str, ...]
    ref_param: str
    click_id_param: str
    flood_rule: bool
    flood_per_minute: int


@dataclass(frozen=True)
class Target:
    """What a code resolves to, as the redirect needs it.

    ``destination`` is where the click goes without a landing-page creative, and
    ``location_head`` + click id + ``location_tail`` the redirect's ``Location`` then:
    worked out once per cached look-up, not on every click. ``own_destination`` is the
    link's own address as ``portal.urlcheck`` passed it (normalised) when the look-up was
    cached, or None when it has none or it no longer passes.
    """

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
    destination: str = ""
    location_head: str = ""
    location_tail: str = ""
    own_destination: str | None = None

    def location(self, click_id: str) -> str:
        return self.location_head + click_id + self.location_tail


def forget_target(code: str | None = None) -> None:
    """Drop cached look-ups in every app of this process (tests; real changes need not:
    ``portal.lookups`` notices them)."""
    lookups.forget_everywhere("target", code.lower() if code else None)
    lookups.forget_everywhere("targets")


def forget_routing() -> None:
    lookups.forget_everywhere("routing")
    lookups.forget_everywhere("target")
    lookups.forget_everywhere("targets")


def forget_creative(creative_id: int | None = None) -> None:
    lookups.forget_everywhere("creative_landing", creative_id)


def creative_id_from(value: str | None) -> int | None:
    """The ``?creative=`` parameter as an id, or None when it is not one."""
    return int(value) if value and value.isdigit() and len(value) < 10 else None


def _load_creative_landing(creative_id: int) -> str | None:
    """The creative's address, checked once here against the allowed domains (so not on
    every click): None when it does not pass."""
    route = routing()
    if route is None:
        return None
    url = db.session.scalar(
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
    return urlcheck.checked_destination(url, route.allowed_domains) if url else None


def creative_landing(value: str | None) -> str | None:
    """Where a published landing-page creative sends its clicks, if ``value`` names one
    and its address is on the allowed domains (checked when cached)."""
    creative_id = creative_id_from(value)
    if creative_id is None:
        return None
    cache = lookups.lookups()
    return cache.load("creative_landing", creative_id, lambda: _load_creative_landing(creative_id))


_TARGET_COLUMNS = (
    Link.id,
    Link.partner_id,
    Link.destination_url,
    Link.channel,
    Link.campaign,
    Link.sub_id,
    Link.active,
    Partner.ref_code,
    Partner.status,
)


def _load_target(code: str, route: Routing | None) -> Target | None:
    row = db.session.execute(
        sa.select(*_TARGET_COLUMNS).join(Partner, Partner.id == Link.partner_id).where(Link.code == code)
    ).first()
    if row is not None:
        return _link_target(code, row, route)
    # A partner's ref code is their default link to the default landing page.
    partner = db.session.execute(
        sa.select(Partner.id, Partner.status).where(Partner.ref_code == code)
    ).first()
    return None if partner is None else _partner_target(code, partner, route)


def _link_target(code: str, row, route: Routing | None) -> Target:
    return _routed(
        Target(
            code=code,
            partner_id=row.partner_id,
            ref_code=row.ref_code,
            link_id=row.id,
            destination_url=row.destination_url,
            channel=row.channel,
            campaign=row.campaign,
            sub_id=row.sub_id,
            link_active=row.active,
            partner_attributes=row.status == PartnerStatus.APPROVED,
        ),
        route,
    )


def _partner_target(code: str, partner, route: Routing | None) -> Target:
    return _routed(
        Target(
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
        ),
        route,
    )


def _routed(target: Target, route: Routing | None) -> Target:
    """``target`` with where its clicks go worked out (when the program has a landing page)."""
    if route is None or not route.default_landing_url:
        return target
    own = urlcheck.checked_destination(target.destination_url, route.allowed_domains)
    destination = own or route.default_landing_url
    head, tail = location_parts(destination, route.ref_param, target.ref_code, route.click_id_param)
    return replace(
        target, destination=destination, location_head=head, location_tail=tail, own_destination=own
    )


# Up to this many links and partner codes, a process loads the look-up rows of every code at
# once (on its first click, and again after any change ``portal.lookups`` tells it of)
# instead of one code at a time: a code's first click in each process otherwise costs two
# queries and about 1.4 ms of CPU, which after a restart or a change is most clicks for a
# while. Larger programs load code by code.
BULK_TARGETS = 20_000
_bulk_loading = threading.Lock()


class _Targets:
    """The look-up rows of every code, loaded at once; a code's Target is worked out at its
    first click."""

    def __init__(self, links: dict, partners: dict, route: Routing | None):
        self.links = links
        self.partners = partners
        self.route = route
        self.built: dict[str, Target] = {}

    def get(self, code: str) -> Target | None:
        target = self.built.get(code)
        if target is None:
            row = self.links.get(code)
            if row is not None:
                target = _link_target(code, row, self.route)
            else:
                partner = self.partners.get(code)
                if partner is None:
                    return None  # not kept: unknown codes must not fill the memory
                target = _partner_target(code, partner, self.route)
            self.built[code] = target
        return target


def _load_every_target() -> _Targets | None:
    """Every code's look-up row, or None when the program has more than BULK_TARGETS."""
    count = 0
    for column in (Link.id, Partner.id):
        count += db.session.scalar(
            sa.select(sa.func.count()).select_from(sa.select(column).limit(BULK_TARGETS + 1).subquery())
        )
    if count > BULK_TARGETS:
        return None
    route = routing()
    links = db.session.execute(
        sa.select(Link.code, *_TARGET_COLUMNS).join(Partner, Partner.id == Link.partner_id)
    ).all()
    partners = db.session.execute(sa.select(Partner.ref_code, Partner.id, Partner.status)).all()
    return _Targets(
        {row.code: row for row in links}, {row.ref_code: row for row in partners if row.ref_code}, route
    )


def every_target(cache: lookups.Lookups, *, wait: bool = True) -> _Targets | object | None:
    """The cached look-ups of every code, loading them if need be (by one thread at a time:
    ``wait=False`` returns ``MISS`` while another loads them); None when there are too many."""
    targets = cache.get("targets", None)
    if targets is lookups.MISS and _bulk_loading.acquire(blocking=wait):
        try:
            targets = cache.load("targets", None, _load_every_target)
        finally:
            _bulk_loading.release()
    return targets


def resolve(code: str) -> Target | None:
    key = code.lower()
    if len(key) > 64:
        return None
    cache = lookups.lookups()
    # Without waiting: while one thread loads every code (or the database hangs), the others
    # look their own code up as before.
    targets = every_target(cache, wait=False)
    if targets is not None and targets is not lookups.MISS:
        return targets.get(key)
    cached = cache.get("target", key)
    if cached is lookups.MISS:
        cached = cache.load("target", key, lambda: _load_target(key, routing()))
    return cached


def cached_target(code: str) -> Target | object | None:
    """What this process last knew of ``code``, however old, or ``MISS``: the redirect's
    answer while the database cannot be reached."""
    key = code.lower()
    cache = lookups.lookups()
    targets = cache.stale("targets", None)
    if targets is not lookups.MISS and targets is not None:
        found = targets.get(key)
        if found is not None:
            return found
    return cache.stale("target", key)


def _load_routing() -> Routing | None:
    program = db.session.scalars(sa.select(Program).order_by(Program.id).limit(1)).first()
    if program is None:
        return None
    domains = tuple(program.allowed_domains or ())
    return Routing(
        # Checked again here: an address that does not pass (set behind the settings page's
        # back) counts as no landing page, and the redirect answers "not ready" instead.
        default_landing_url=urlcheck.checked_destination(program.default_landing_url, domains) or "",
        allowed_domains=domains,
        ref_param=program.ref_param,
        click_id_param=program.click_id_param,
        flood_rule=program.fraud_click_flood,
        flood_per_minute=program.click_flood_per_minute,
    )


def routing() -> Routing | None:
    return lookups.lookups().load("routing", None, _load_routing)


class _Memo:
    """A bounded dict of computed values (cleared when full): the same few addresses and
    browsers come back again and again."""

    def __init__(self, size: int):
        self.size = size
        self.data: dict = {}

    def put(self, key, value):
        if len(self.data) >= self.size:
            self.data = {}
        self.data[key] = value
        return value


_ip_hashes = _Memo(10_000)
_bot_agents = _Memo(10_000)


def hash_ip(ip: str | None) -> str:
    """A keyed hash: the same address always gives the same value, which cannot be reversed."""
    secret = current_app.config["SECRET_KEY"]
    key = (secret, ip)
    hashed = _ip_hashes.data.get(key)
    if hashed is None:
        digest = hmac.new(secret.encode(), (ip or "").encode(), hashlib.sha256).hexdigest()[:32]
        hashed = _ip_hashes.put(key, digest)
    return hashed


def is_bot(user_agent: str | None) -> bool:
    if not user_agent:
        return True
    bot = _bot_agents.data.get(user_agent)
    if bot is None:
        bot = _bot_agents.put(user_agent, bool(_BOTS.search(user_agent.lower())))
    return bot


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


def location_parts(url: str, ref_param: str, ref: str, click_id_param: str) -> tuple[str, str]:
    """``with_params(url, {ref_param: ref, click_id_param: click_id})`` as the text before and
    after the click id, which is URL-safe base64 (or hex) and so needs no quoting."""
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in (ref_param, click_id_param)
    ]
    query += [(ref_param, ref), (click_id_param, "")]
    head = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return head, ("#" + parts.fragment if parts.fragment else "")


def destination_for(target: Target | None, route: Routing, creative_landing: str | None = None) -> str:
    """The link's own destination, else the landing-page creative's, each only while it
    passes ``portal.urlcheck`` (normalised as it passed); else the default landing page.

    Both were checked when they were cached (``_load_target``, ``creative_landing``), so a
    click costs no parsing here."""
    if target is not None and target.own_destination:
        return target.own_destination
    return creative_landing or route.default_landing_url


class _Nonces:
    """Random bytes from the operating system's CSPRNG, read 4 KiB at a time instead of one
    system call per click. A forked child starts with an empty buffer, so two workers never
    hand out the same bytes."""

    _CHUNK = 4096

    def __init__(self):
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._buffer = b""
        self._at = 0

    def take(self, size: int) -> bytes:
        with self._lock:
            at = self._at
            if at + size > len(self._buffer):
                self._buffer, at = os.urandom(self._CHUNK), 0
            self._at = at + size
            return self._buffer[at : at + size]


_nonces = _Nonces()

# A signed click id: "k" + 31 URL-safe base64 characters (32 in all: the clicks.id column)
# of 23 bytes: the time in milliseconds (6), the link id, or the partner id with the top bit
# set when the click used a partner's own code (4), a random nonce (5) and the first 8 bytes
# of an HMAC-SHA256 of those 15 under a key derived from SECRET_KEY. The API can thus tell a
# click the portal answered, whose row is not written yet, from an id it never issued.
# Ids issued before signing are 32 hex digits and never start with "k".
_SIGNED_PREFIX = "k"
_PARTNER_BIT = 0x8000_0000
_PAYLOAD = struct.Struct(">6sI5s")
_MAC_BYTES = 8
_click_keys: dict[str, bytes] = {}


def _click_key(secret: str) -> bytes:
    key = _click_keys.get(secret)
    if key is None:
        key = _click_keys[secret] = hmac.digest(secret.encode(), b"portal click id v1", "sha256")
    return key


def new_click_id(target: Target, now: datetime) -> str:
    """A fresh signed click id naming ``target``'s link (or partner) and ``now``."""
    subject = target.link_id if target.link_id is not None else target.partner_id | _PARTNER_BIT
    millis = int(now.timestamp() * 1000).to_bytes(6, "big")
    payload = _PAYLOAD.pack(millis, subject, _nonces.take(5))
    mac = hmac.digest(_click_key(current_app.config["SECRET_KEY"]), payload, "sha256")[:_MAC_BYTES]
    return _SIGNED_PREFIX + base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")


@dataclass(frozen=True)
class SignedClick:
    """What a signed click id says: when, and through which link or partner code."""

    click_id: str
    created_at: datetime
    link_id: int | None
    partner_id: int | None


def read_click_id(click_id: str, secret: str) -> SignedClick | None:
    """The signed click id's contents, or None when it is not one the portal issued with
    ``secret`` (an old-style hex id, a typo or a forgery)."""
    if len(click_id) != 32 or not click_id.startswith(_SIGNED_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(click_id[1:] + "=")
    except (ValueError, binascii.Error):
        return None
    if len(raw) != _PAYLOAD.size + _MAC_BYTES:
        return None
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != click_id[1:]:
        return None  # the same bytes spelt another way: only the one spelling is the click's id
    payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    if not hmac.compare_digest(mac, hmac.digest(_click_key(secret), payload, "sha256")[:_MAC_BYTES]):
        return None
    millis, subject, _nonce = _PAYLOAD.unpack(payload)
    created_at = datetime.fromtimestamp(int.from_bytes(millis, "big") / 1000, tz=UTC)
    if subject & _PARTNER_BIT:
        return SignedClick(click_id, created_at, link_id=None, partner_id=subject & ~_PARTNER_BIT)
    return SignedClick(click_id, created_at, link_id=subject, partner_id=None)


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
        "id": new_click_id(target, now),
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
    """Insert the click rows not stored yet (a click id already there, from a replayed spool
    or the API, is skipped) and count those in the rollups, in the caller's transaction;
    returns the partners the new clicks belong to.

    A batch (the click writer's) goes the fastest way each database takes it: PostgreSQL by
    ``COPY``, SQLite by the driver's ``executemany``; one row by an INSERT ... RETURNING."""
    if not rows:
        return set()
    connection = executor if isinstance(executor, sa.Connection) else executor.connection()
    dialect = connection.dialect
    if len(rows) > 1 and dialect.name == "sqlite":
        rows = _insert_new_clicks(connection, rows)
    elif len(rows) > 1 and dialect.driver == "psycopg" and _copy_clicks(connection, rows):
        pass  # every row was new
    else:
        rows = _insert_clicks(connection, rows)
    return rollups.count_clicks(executor, rows) if rows else set()


def _insert_clicks(connection: sa.Connection, rows: list[dict]) -> list[dict]:
    """Insert-or-ignore by click id; returns the rows inserted."""
    insert = dialect_insert(connection.dialect.name, Click.__table__)
    statement = insert.on_conflict_do_nothing(index_elements=["id"]).returning(Click.id)
    if len(rows) == 1:
        added = set(connection.execute(statement, rows[0]).scalars())
    else:
        added = set(connection.execute(statement, rows).scalars())
    return rows if len(added) == len(rows) else [row for row in rows if row["id"] in added]


# The columns of a click row, in the order the click writer's spool and COPY list them.
CLICK_COLUMNS = (
    "id",
    "partner_id",
    "link_id",
    "code",
    "channel",
    "campaign",
    "sub_id",
    "creative_id",
    "destination_url",
    "ip_hash",
    "user_agent",
    "referrer",
    "is_bot",
    "is_unique",
    "flagged",
    "created_at",
)
_COPY_CLICKS = f"COPY clicks ({', '.join(CLICK_COLUMNS)}) FROM STDIN"


# Our column names only; the values are bound parameters.
_INSERT_CLICKS = (
    f"INSERT INTO clicks ({', '.join(CLICK_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in CLICK_COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)
_IN_CHUNK = 5000  # ids per "IN (...)": far below SQLite's limit of bound parameters


def _sqlite_time(instant: datetime) -> str:
    """An aware datetime as SQLAlchemy stores a UTCDateTime in SQLite (UTC, microseconds)."""
    t = instant.astimezone(UTC)
    day = f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    return f"{day} {t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}"


def _insert_new_clicks(connection: sa.Connection, rows: list[dict]) -> list[dict]:
    """SQLite: insert the rows whose click id is not stored yet, through the driver's own
    ``executemany`` (SQLAlchemy's per-value conversions cost more than the insert); returns
    them. Exact under SQLite's single writer: the click writer holds the write lock already
    (``begin_writing``), and a click id stored between the look-up and the insert is still
    skipped by the insert itself."""
    ids = [row["id"] for row in rows]
    stored: set[str] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        stored.update(connection.scalars(sa.select(Click.id).where(Click.id.in_(chunk))))
    new = [row for row in rows if row["id"] not in stored] if stored else rows
    if new:
        connection.exec_driver_sql(
            _INSERT_CLICKS,
            [(*(row[name] for name in CLICK_COLUMNS[:-1]), _sqlite_time(row["created_at"])) for row in new],
        )
    return new


def _copy_clicks(connection: sa.Connection, rows: list[dict]) -> bool:
    """PostgreSQL (psycopg 3): the whole batch in one ``COPY``, in a savepoint; False (nothing written)
    when the database refuses any row of it: a click id stored already, a link deleted
    meanwhile. The caller then inserts row by row, skipping or refusing those.

    An ``INSERT`` of many rows costs psycopg more than the database: it rewrites every
    placeholder of the statement in Python (about 150 µs of the worker's CPU per click,
    five times what SQLite costs); ``COPY`` sends the rows as they are (about 5 µs). New
    clicks (signed random ids) are almost never stored already; a replayed spool may be.
    """
    import psycopg  # PostgreSQL's driver: only imported where PostgreSQL is used

    savepoint = connection.begin_nested()
    try:
        with connection.connection.driver_connection.cursor() as cursor, cursor.copy(_COPY_CLICKS) as copy:
            for row in rows:
                copy.write_row([row[name] for name in CLICK_COLUMNS])
    except (psycopg.IntegrityError, psycopg.DataError):
        savepoint.rollback()
        return False
    except psycopg.Error as error:  # the database is unreachable, or refuses the statement
        savepoint.rollback()
        raise sa.exc.DBAPIError.instance(_COPY_CLICKS, None, error, psycopg.Error) from error
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    return True


_LINK_COLUMNS = (Link.partner_id, Link.code, Link.channel, Link.campaign, Link.sub_id, Link.destination_url)


def click_from_id(click_id: str) -> Click | None:
    """The click a signed click id names, its row written now (insert-or-ignore) when the
    redirect's own write has not landed yet: from the id's link or partner and time, without
    the shopper's details (address, browser), which the late row then cannot add. None when
    the id is not one the portal issued, or its link or partner is gone."""
    signed = read_click_id(click_id, current_app.config["SECRET_KEY"])
    if signed is None:
        return None
    if signed.link_id is not None:
        found = db.session.execute(sa.select(*_LINK_COLUMNS).where(Link.id == signed.link_id)).first()
        if found is None:
            return None
        partner_id, code, channel, campaign, sub_id, destination = found
    else:
        code = db.session.scalar(sa.select(Partner.ref_code).where(Partner.id == signed.partner_id))
        if code is None:
            return None
        partner_id, channel, campaign, sub_id, destination = signed.partner_id, "other", None, None, None
    if not destination:
        route = routing()
        destination = route.default_landing_url if route is not None else ""
    row = {
        "id": click_id,
        "partner_id": partner_id,
        "link_id": signed.link_id,
        "code": code,
        "channel": channel,
        "campaign": campaign,
        "sub_id": sub_id,
        "creative_id": None,
        "destination_url": destination[:2000],
        "ip_hash": "",
        "user_agent": None,
        "referrer": None,
        "is_bot": False,
        "is_unique": True,
        "flagged": None,
        "created_at": signed.created_at,
    }
    store_clicks(db.session, [row])
    return db.session.get(Click, click_id)
