"""Outgoing webhooks: signed events for the brand's servers (Standard Webhooks).

Every delivery is a POST of ``{"type", "timestamp", "data"}`` with the headers
``webhook-id`` (the same for every attempt of one event), ``webhook-timestamp`` (Unix
seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
keyed with the endpoint's secret (``whsec_`` + base64, shown once).

Delivery: 10 s timeout, no redirects followed (a 3xx is a failure), retries with
exponential back-off (``retry_delay``) for ``WEBHOOK_RETRY_HOURS`` (72) after the event;
an endpoint whose every attempt has failed for that long is switched off and the
operators are told (an audit entry, a ``webhook.endpoint_disabled`` event, a notice in
the console). One partner's events reach an endpoint in order: a delivery waits while
an earlier one of the same partner to the same endpoint is still pending.

Addresses are resolved before each request and refused when private, loopback or
link-local (unless ``WEBHOOK_ALLOW_NETWORKS`` allows that kind); the connection goes to
the address that was checked, so a DNS answer cannot change between check and connect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _

from portal import realtime
from portal.database import begin_write
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    DeliveryStatus,
    OutboxEvent,
    User,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from portal.models.types import utcnow
from portal.services import events
from portal.services.audit import record_event

log = logging.getLogger("portal.webhooks")

TIMEOUT_SECONDS = 10
CLAIM = timedelta(seconds=60)
# What a receiver answers is read up to this size and thrown away.
MAX_RESPONSE_BYTES = 64 * 1024
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix Standard Webhooks secrets carry, not a secret
NETWORK_KINDS = ("loopback", "private", "link_local")


# --- signing ----------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value for one request."""
    digest = hmac.new(_key(secret), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers_for(secret: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "partner-portal-webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def body_of(event_type: str, timestamp: datetime, data: dict) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": timestamp.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


# --- endpoints -------------------------------------------------------------------------------


def _clean_url(url: str) -> str:
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise DomainError(_("Enter an http:// or https:// address without a user name."), "url")
    if len(url) > 2000:
        raise DomainError(_("At most %(max)d characters.", max=2000), "url")
    return url


def _clean_types(event_types: list[str] | None) -> list[str]:
    chosen = sorted({t.strip() for t in event_types or [] if t.strip()})
    unknown = [t for t in chosen if t not in events.TYPES]
    if unknown:
        raise DomainError(_("Unknown event types: %(types)s.", types=", ".join(unknown)), "event_types")
    return chosen


def create_endpoint(
    url: str, event_types: list[str] | None, actor: User | None, description: str | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint and its secret (shown to the operator this once)."""
    secret = new_secret()
    endpoint = WebhookEndpoint(
        url=_clean_url(url),
        event_types=_clean_types(event_types),
        description=(description or "").strip()[:200] or None,
        enabled=True,
        secret=secret,
        created_by_id=actor.id if actor else None,
    )
    db.session.add(endpoint)
    db.session.flush()
    record_event(actor, "webhook.created", "webhook_endpoint", endpoint.id, url=endpoint.url)
    return endpoint, secret


def update_endpoint(
    endpoint: WebhookEndpoint,
    actor: User,
    *,
    url: str,
    event_types: list[str] | None,
    enabled: bool,
    description: str | None = None,
) -> WebhookEndpoint:
    """Save the endpoint's settings; an unchanged form changes and audits nothing."""
    url = _clean_url(url)
    event_types = _clean_types(event_types)
    description = (description or "").strip()[:200] or None
    current = (endpoint.url, list(endpoint.event_types or []), endpoint.description, endpoint.enabled)
    if current == (url, event_types, description, enabled):
        return endpoint
    endpoint.url = url
    endpoint.event_types = event_types
    endpoint.description = description
    if enabled and not endpoint.enabled:
        endpoint.failing_since = None
        endpoint.disabled_reason = None
    endpoint.enabled = enabled
    record_event(actor, "webhook.updated", "webhook_endpoint", endpoint.id, url=endpoint.url, enabled=enabled)
    db.session.flush()
    return endpoint


def rotate_secret(endpoint: WebhookEndpoint, actor: User) -> str:
    """A new secret at once (the old one stops working); returned to be shown once."""
    endpoint.secret = new_secret()
    record_event(actor, "webhook.secret_rotated", "webhook_endpoint", endpoint.id)
    db.session.flush()
    return endpoint.secret


def delete_endpoint(endpoint: WebhookEndpoint, actor: User) -> None:
    record_event(actor, "webhook.deleted", "webhook_endpoint", endpoint.id, url=endpoint.url)
    db.session.delete(endpoint)
    db.session.flush()


def endpoints() -> list[WebhookEndpoint]:
    return list(db.session.scalars(sa.select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def disabled_automatically() -> int:
    """How many endpoints were switched off for failing (the operators' notice)."""
    return (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.enabled.is_(False), WebhookEndpoint.disabled_reason.is_not(None))
        )
        or 0
    )


def deliveries_of(endpoint: WebhookEndpoint, limit: int = 100) -> list[WebhookDelivery]:
    return list(
        db.session.scalars(
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint.id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
    )


# --- the outbox consumer ------------------------------------------------------------------------


_ENDPOINTS_KEY = "portal_webhook_endpoints"


def _endpoints_of_this_transaction() -> list[WebhookEndpoint]:
    """The endpoints, read once per transaction (the dispatcher hands a batch of events in
    one): the session's info is cleared when the transaction ends."""
    info = db.session.info
    listed = info.get(_ENDPOINTS_KEY)
    if listed is None:
        listed = info[_ENDPOINTS_KEY] = endpoints()
        session = db.session()
        if not sa.event.contains(session, "after_transaction_end", _forget_endpoints):
            sa.event.listen(session, "after_transaction_end", _forget_endpoints)
    return listed


def _forget_endpoints(session, transaction) -> None:
    if transaction.parent is None:  # the whole transaction, not one event's savepoint
        session.info.pop(_ENDPOINTS_KEY, None)


def wanted(event_type: str) -> bool:
    """Whether an enabled endpoint wants events of this type (with no endpoint, the
    dispatcher's webhook consumer skips every event)."""
    return any(e.enabled and e.wants(event_type) for e in _endpoints_of_this_transaction())


def enqueue(event: OutboxEvent) -> int:
    """One delivery per enabled endpoint that wants ``event``'s type (the consumer's effect)."""
    wanted = [e for e in _endpoints_of_this_transaction() if e.enabled and e.wants(event.type)]
    if not wanted:
        return 0
    body = body_of(event.type, event.created_at, event.data)
    for endpoint in wanted:
        db.session.add(
            WebhookDelivery(
                endpoint_id=endpoint.id,
                event_id=event.id,
                message_id=f"msg_{event.id}",
                event_type=event.type,
                partner_id=event.partner_id,
                body=body,
                status=DeliveryStatus.PENDING,
                next_attempt_at=None,
                created_at=utcnow(),
            )
        )
    db.session.flush()
    return len(wanted)


def send_test(endpoint: WebhookEndpoint, actor: User) -> WebhookDelivery:
    """A ``webhook.test`` event for this endpoint alone, sent at once; returns its delivery."""
    now = utcnow()
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id=None,
        message_id=f"msg_test_{uuid.uuid4().hex}",
        event_type="webhook.test",
        partner_id=None,
        body=body_of(
            "webhook.test", now, {"endpoint_id": endpoint.id, "note": "Sent from the partner portal."}
        ),
        status=DeliveryStatus.PENDING,
        created_at=now,
    )
    db.session.add(delivery)
    record_event(actor, "webhook.test_sent", "webhook_endpoint", endpoint.id)
    db.session.commit()
    _attempt(delivery.id, force=True)
    return db.session.get(WebhookDelivery, delivery.id)


def resend(delivery: WebhookDelivery, actor: User) -> WebhookDelivery:
    """Send a delivery again now (same webhook-id), whatever it came to before."""
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = None
    delivery.claimed_until = None
    record_event(actor, "webhook.resent", "webhook_delivery", delivery.id)
    db.session.commit()
    _attempt(delivery.id, force=True)
    return db.session.get(WebhookDelivery, delivery.id)


# --- sending ----------------------------------------------------------------------------------


def retry_window() -> timedelta:
    return timedelta(hours=current_app.config["WEBHOOK_RETRY_HOURS"])


def retry_delay(attempts: int) -> timedelta:
    """After the ``attempts``-th failure: 30 s, doubling, at most 6 hours."""
    config = current_app.config
    first = timedelta(seconds=config["WEBHOOK_RETRY_FIRST_SECONDS"])
    doublings = min(max(attempts - 1, 0), 30)
    return min(first * 2**doublings, timedelta(seconds=config["WEBHOOK_RETRY_MAX_SECONDS"]))


class RefusedAddress(Exception):
    """The endpoint's address is one the portal does not send to."""


def _allowed_kinds() -> set[str]:
    return set(current_app.config["WEBHOOK_ALLOW_NETWORKS"])


def address_kind(ip: str) -> str | None:
    """``loopback``, ``link_local``, ``private`` or ``blocked`` for an address the portal does not
    send to by default; None for a public one."""
    address = ipaddress.ip_address(ip)
    # An IPv6 address that carries an IPv4 one reaches that one: judge what it carries
    # (::ffff:127.0.0.1 mapped; 2002:7f00:1:: a 6to4 address, global to Python 3.11).
    if isinstance(address, ipaddress.IPv6Address):
        address = address.ipv4_mapped or address.sixtofour or address
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "blocked"
    if address.is_private or not address.is_global:
        return "private"
    return None


def resolve_checked(host: str, port: int) -> str:
    """The first address of ``host`` the settings allow; RefusedAddress if none is."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise OSError(f"cannot resolve {host}: {error}") from error
    allowed = _allowed_kinds()
    refused = None
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = sockaddr[0]
        kind = address_kind(ip)
        if kind is None or kind in allowed:
            return ip
        refused = f"{host} resolves to a {kind.replace('_', '-')} address ({ip})"
    raise RefusedAddress(refused or f"{host} has no address")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, ip, timeout):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, ip, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self):
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Outcome:
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: str, headers: dict[str, str]) -> Outcome:
    """One POST to ``url``: checked address, 10 s timeout, redirects not followed."""
    started = time.monotonic()
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = None
    try:
        ip = resolve_checked(parts.hostname, port)
        connection_class = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
        connection = connection_class(parts.hostname, port, ip, TIMEOUT_SECONDS)
        connection.request("POST", path, body=body.encode(), headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        status, error = response.status, None
        if 300 <= status < 400:
            error = "redirect not followed"
    except RefusedAddress as refused:
        status, error = None, f"refused: {refused}"
    except (OSError, http.client.HTTPException) as failure:
        status, error = None, f"{type(failure).__name__}: {failure}"[:500]
    finally:
        if connection is not None:
            connection.close()
    return Outcome(status, int((time.monotonic() - started) * 1000), error)


def _due(now: datetime):
    earlier = sa.orm.aliased(WebhookDelivery)
    return sa.and_(
        WebhookDelivery.status == DeliveryStatus.PENDING,
        sa.or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
        sa.or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
        WebhookDelivery.endpoint_id.in_(sa.select(WebhookEndpoint.id).where(WebhookEndpoint.enabled)),
        # One partner's events in order: nothing while an earlier one to this endpoint waits.
        ~sa.exists().where(
            earlier.endpoint_id == WebhookDelivery.endpoint_id,
            earlier.partner_id == WebhookDelivery.partner_id,
            earlier.status == DeliveryStatus.PENDING,
            earlier.id < WebhookDelivery.id,
        ),
    )


def _due_ids(now: datetime, limit: int) -> list[int]:
    return list(
        db.session.scalars(
            sa.select(WebhookDelivery.id)
            .where(_due(now))
            .order_by(WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        )
    )


def _claim(limit: int) -> list[int]:
    """Take up to ``limit`` due deliveries for this sender (SKIP LOCKED on PostgreSQL, then a claim
    column both databases honour); committed before any request goes out. Nothing due (the
    common case: every dispatch looks): one read, and no turn at SQLite's write lock."""
    now = utcnow()
    ids = _due_ids(now, limit)
    if not ids:
        db.session.rollback()
        return []
    # SQLite: that look was outside the write lock, so another sender may have sent one of
    # them since (and set its next attempt): each claim below asks again whether it is due.
    begin_write(db.session())
    claimed = []
    for delivery_id in ids:
        taken = db.session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, _due(now))
            .values(claimed_until=now + CLAIM)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken:
            claimed.append(delivery_id)
    db.session.commit()
    return claimed


def _attempt(delivery_id: int, force: bool = False) -> bool:
    """Send one claimed delivery and record the attempt; True if the receiver took it."""
    delivery = db.session.get(WebhookDelivery, delivery_id)
    db.session.refresh(delivery)
    endpoint = delivery.endpoint
    if delivery.status != DeliveryStatus.PENDING or (not endpoint.enabled and not force):
        return False
    timestamp = int(utcnow().timestamp())
    url, body = endpoint.url, delivery.body
    headers = headers_for(endpoint.secret, delivery.message_id, timestamp, body)
    db.session.rollback()  # end the read: no transaction (nor SQLite's lock) while the request is out
    outcome = post(url, body, headers)
    begin_write(db.session())
    delivery = db.session.get(WebhookDelivery, delivery_id)
    endpoint = delivery.endpoint
    now = utcnow()
    delivery.attempts += 1
    delivery.claimed_until = None
    db.session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempt=delivery.attempts,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=(outcome.error or None) and outcome.error[:500],
            created_at=now,
        )
    )
    if outcome.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        endpoint.failing_since = None
    else:
        delivery.next_attempt_at = now + retry_delay(delivery.attempts)
        gave_up = now - delivery.created_at >= retry_window()
        if gave_up:
            delivery.status = DeliveryStatus.FAILED
        if endpoint.failing_since is None:
            endpoint.failing_since = now
        # Three days of failures: measured on the endpoint, or on this delivery when every one
        # of its attempts failed (its first attempt came moments after its creation, so the
        # endpoint's clock alone may fall short by those moments and nothing would be left to
        # retry — the endpoint would stay on without a notice).
        streak = now - endpoint.failing_since >= retry_window() or (
            gave_up and endpoint.failing_since <= _first_attempt(delivery.id)
        )
        if endpoint.enabled and streak:
            _disable(endpoint, now)
    db.session.commit()
    return outcome.ok


def _first_attempt(delivery_id: int) -> datetime:
    return db.session.scalar(
        sa.select(sa.func.min(WebhookAttempt.created_at)).where(WebhookAttempt.delivery_id == delivery_id)
    )


def _disable(endpoint: WebhookEndpoint, now: datetime) -> None:
    """Three days of failures: switch the endpoint off, give up its waiting deliveries, tell the team."""
    endpoint.enabled = False
    endpoint.disabled_reason = "failing"
    db.session.execute(
        sa.update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.FAILED, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    record_event(
        None,
        "webhook.disabled",
        "webhook_endpoint",
        endpoint.id,
        url=endpoint.url,
        failing_since=endpoint.failing_since.isoformat(),
    )
    events.record("webhook.endpoint_disabled", {"endpoint_id": endpoint.id, "url": endpoint.url})
    realtime.notify_operators("webhook", {"endpoint": endpoint.id, "enabled": False})
    log.warning(
        "webhook endpoint %s (%s) disabled after failing since %s",
        endpoint.id,
        endpoint.url,
        endpoint.failing_since,
    )


def send_due(limit: int = 500) -> int:
    """Send what is due, batch after batch (a partner's next event becomes due when the one
    before it is delivered); returns how many were delivered."""
    delivered = 0
    attempts = 0
    while attempts < limit:
        claimed = _claim(min(50, limit - attempts))
        if not claimed:
            break
        for delivery_id in claimed:
            attempts += 1
            try:
                delivered += _attempt(delivery_id)
            except Exception:
                db.session.rollback()
                log.exception("webhook delivery %s failed unexpectedly; it stays due", delivery_id)
    return delivered
