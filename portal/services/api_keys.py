"""API keys for the brand's servers: shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask_babel import gettext as _

from portal import lookups
from portal.database import begin_write
from portal.errors import DomainError
from portal.extensions import db
from portal.models import ApiKey, User
from portal.models.types import utcnow
from portal.services.audit import record_event

KEY_PREFIX = "ppk_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(name: str, actor: User | None) -> tuple[ApiKey, str]:
    """A new key; the plain key is returned once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise DomainError(_("Name the key (at most 120 characters), e.g. “shop backend”."), "name")
    prefix = secrets.token_hex(4)
    plain = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(name=name, prefix=prefix, key_hash=_hash(plain), created_by_id=actor.id if actor else None)
    db.session.add(key)
    db.session.flush()
    record_event(actor, "api_key.created", "api_key", key.id, name=name, prefix=prefix)
    return key, plain


def revoke_api_key(key: ApiKey, actor: User) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record_event(actor, "api_key.revoked", "api_key", key.id, name=key.name, prefix=key.prefix)
        db.session.flush()
    return key


@dataclass
class KeyInfo:
    """What a request needs of its API key; cached per process (``portal.lookups``)."""

    id: int
    name: str
    prefix: str
    key_hash: str
    active: bool
    last_used_at: datetime | None


def _load_key(prefix: str) -> KeyInfo | None:
    row = db.session.execute(
        sa.select(
            ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.key_hash, ApiKey.revoked_at, ApiKey.last_used_at
        ).where(ApiKey.prefix == prefix)
    ).first()
    if row is None:
        return None
    return KeyInfo(row.id, row.name, row.prefix, row.key_hash, row.revoked_at is None, row.last_used_at)


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization`` header's value ``Bearer <token>``; None for any other
    scheme (an empty token stays empty: it proves no key either)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def authenticate_api_key(plain: str | None) -> KeyInfo | None:
    """The active key matching ``plain``, or None.

    The key's row is cached in each process; a revocation reaches every worker within
    TRACKING_CACHE_CHECK_SECONDS (2 s by default), the revoking one at once.
    """
    if not plain or not plain.startswith(KEY_PREFIX):
        return None
    prefix = plain[len(KEY_PREFIX) :].split("_", 1)[0]
    if not prefix or len(prefix) > 16:
        return None
    key = lookups.lookups().load("api_key", prefix, lambda: _load_key(prefix))
    if key is None or not key.active or not hmac.compare_digest(key.key_hash, _hash(plain)):
        return None
    now = utcnow()
    # Note use at most once a minute, not on every request (a column nothing caches).
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        begin_write(db.session())  # a request that has only read so far (the conversion API)
        db.session.execute(sa.update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        db.session.info[USE_NOTED] = True
        key.last_used_at = now
    return key


# In ``session.info`` while the session's transaction holds a key's note of use (to commit).
USE_NOTED = "api_key_use_noted"


def use_noted(session) -> bool:
    """Whether ``session``'s transaction holds a key's once-a-minute note of use (asked once,
    by the caller that then ends the transaction)."""
    return bool(session.info.pop(USE_NOTED, False))


def list_api_keys() -> list[ApiKey]:
    return list(
        db.session.scalars(sa.select(ApiKey).order_by(ApiKey.revoked_at.is_not(None), ApiKey.id.desc()))
    )
