"""Live updates: Socket.IO connection auth, rooms, and ``notify`` — the one place that emits.

The database is the truth; an event only says "something changed". Emits wait
for the surrounding transaction to commit and are dropped if it rolls back, so
a browser never re-fetches data that does not exist.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import socketio as socketio_server
import sqlalchemy as sa
from flask_login import current_user
from flask_socketio import SocketIO, emit, join_room
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from portal.extensions import db, socketio

OPERATORS_ROOM = "operators"
_PENDING_KEY = "portal_pending_emits"
_PENDING_ONCE_KEY = "portal_pending_emits_once"
_PENDING_REVOKED_KEY = "portal_pending_revoked_sessions"
# Every socket also joins the room of the session token it was opened with; when the token
# changes (sign-out, sign out everywhere, a new password, access switched off) the sockets
# of that room are closed: a socket is authenticated once, when it opens.
SESSION_ROOM_PREFIX = "session:"
# Sent to this worker's own sockets when its Redis subscription comes back: the pages
# refetch their live parts (portal.js turns it into "portal:resync").
RESYNC_EVENT = "resync"

log = logging.getLogger("portal.realtime")


def quick_redis_client(url: str, **options):
    """A Redis client that fails fast (redis-py otherwise retries ten times with back-off)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No hidden retries with back-off inside redis-py: the callers below decide. No CLIENT
    # SETINFO on connecting either: against a frozen Redis it is one more socket timeout.
    return redis.Redis.from_url(
        url, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0), driver_info=None, **options
    )


class PortalRedisManager(socketio_server.RedisManager):
    """Socket.IO's Redis fan-out, made optional at run time.

    python-socketio delivers an emit to this worker's sockets first, then publishes it
    for the other workers. Here a failed publish is logged once per outage (not twice
    per event), never raises into the request that emitted, and pauses publishing for
    ``PUBLISH_PAUSE_SECONDS`` so that a frozen Redis costs one request at most a second
    or two, not every request. The subscriber retries every ``RECONNECT_MAX_SECONDS`` at
    most (the stock one backs off to 60 s) and, once back, tells this worker's sockets
    to resync, since events from other workers were missed meanwhile.
    """

    PUBLISH_PAUSE_SECONDS = 5.0
    RECONNECT_MAX_SECONDS = 2.0

    def __init__(self, url: str, channel: str, write_only: bool = False):
        super().__init__(url, channel=channel, write_only=write_only, logger=log)
        self._publisher = None
        self._paused_until = 0.0
        self._publish_down = False
        self._state_lock = threading.Lock()

    def _publish(self, data):
        if time.monotonic() < self._paused_until:
            return None  # this worker's sockets already have it; the others resync later
        payload = self.json.dumps(data)
        error: Exception | None = None
        from redis.exceptions import TimeoutError as RedisTimeoutError

        for _attempt in range(2):  # a connection left over from before a restart fails once
            try:
                if self._publisher is None:
                    self._publisher = quick_redis_client(self.redis_url, socket_timeout=1)
                result = self._publisher.publish(self.channel, payload)
            except Exception as exc:  # noqa: BLE001 - any Redis failure: keep the request going
                error = exc
                self._publisher = None
                if isinstance(exc, RedisTimeoutError):
                    break  # a frozen Redis: trying again would cost the request another second
                continue
            with self._state_lock:
                if self._publish_down:
                    self._publish_down = False
                    log.warning("Redis is reachable again: live events reach every worker")
            return result
        with self._state_lock:
            self._paused_until = time.monotonic() + self.PUBLISH_PAUSE_SECONDS
            first = not self._publish_down
            self._publish_down = True
        if first:
            log.warning(
                "Redis unreachable (%s): live events reach only this worker's sockets until it returns",
                error,
            )
        return None

    def _redis_listen_with_retries(self):
        delay = 0.25
        subscribed = False
        failed = False
        while True:
            try:
                if not subscribed:
                    client = quick_redis_client(self.redis_url, socket_keepalive=True)
                    self.pubsub = client.pubsub(ignore_subscribe_messages=True)
                    self.pubsub.subscribe(self.channel)
                    subscribed = True
                    delay = 0.25
                    if failed:
                        failed = False
                        self._paused_until = 0.0
                        log.warning("Redis subscription restored; asking open pages to resync")
                        self._resync_local_sockets()
                yield from self.pubsub.listen()
            except Exception as exc:  # noqa: BLE001 - retried below, whatever it was
                if not failed:
                    log.warning("Redis subscription lost (%s); retrying until it is back", exc)
                failed = True
                subscribed = False
                time.sleep(delay)
                delay = min(delay * 2, self.RECONNECT_MAX_SECONDS)

    def _handle_close_room(self, message):
        # ``close_room`` reaches every worker: each closes its own sockets of a revoked session.
        room = message.get("room")
        if isinstance(room, str) and room.startswith(SESSION_ROOM_PREFIX):
            _disconnect_local(self.server, room)
        return super()._handle_close_room(message)

    def _resync_local_sockets(self) -> None:
        try:
            self.server.emit(RESYNC_EVENT, {}, namespace="/", ignore_queue=True)
        except Exception:  # a resync is a courtesy; never kill the listener
            log.exception("asking open pages to resync failed")


def partner_room(partner_id: int) -> str:
    return f"partner:{partner_id}"


def session_room(session_token: str) -> str:
    """The room of the sockets opened with one session token (a digest: rooms travel over Redis)."""
    return SESSION_ROOM_PREFIX + hashlib.sha256(session_token.encode()).hexdigest()[:32]


def _must_enrol_two_factor(user) -> bool:
    """The console waits for an operator the program requires two-factor sign-in of; so do
    its live events (as ``two_factor.must_enrol``, read here without importing the services)."""
    if user.two_factor_enabled:
        return False
    from portal.models import Program

    required = db.session.scalars(sa.select(Program.require_team_2fa).order_by(Program.id).limit(1)).first()
    return bool(required)


def room_for(user) -> str | None:
    """The room a signed-in user's browser joins, or None if it may not listen."""
    if user.is_operator:
        return None if _must_enrol_two_factor(user) else OPERATORS_ROOM
    partner = user.partner
    if partner is not None and partner.can_use_portal:
        return partner_room(partner.id)
    return None


def register_handlers(sio: SocketIO) -> None:
    listen_for_session_changes()

    @sio.on("connect")
    def on_connect(auth: Any = None):
        if not current_user.is_authenticated:
            return False  # anonymous sockets are refused
        room = room_for(current_user)
        if room is None:
            return False
        join_room(room)
        join_room(session_room(current_user.session_token))
        emit("ready", {"room": room})
        return None


def _queue(room: str | list[str], event_name: str, payload: dict[str, Any]) -> None:
    session = db.session()
    if session.in_transaction():
        session.info.setdefault(_PENDING_KEY, []).append((room, event_name, payload))
    else:
        socketio.emit(event_name, payload, to=room)


def notify(partner_id: int, event_name: str, payload: dict[str, Any] | None = None) -> None:
    """Tell one partner's open pages that ``event_name`` happened (after commit)."""
    _queue(partner_room(partner_id), event_name, payload or {})


def _queue_once(room: str, event_name: str, payload: dict[str, Any]) -> None:
    session = db.session()
    if session.in_transaction():
        # A set beside the queue: a dispatcher's batch queues thousands of these.
        queued = session.info.setdefault(_PENDING_ONCE_KEY, set())
        if (room, event_name) in queued:
            return
        queued.add((room, event_name))
    _queue(room, event_name, payload)


def notify_once(partner_id: int, event_name: str, payload: dict[str, Any] | None = None) -> None:
    """As ``notify``, unless this transaction already queued ``event_name`` for that partner:
    a page hearing "look again" twice after one commit refetches the same thing twice."""
    _queue_once(partner_room(partner_id), event_name, payload or {})


def notify_operators_once(event_name: str, payload: dict[str, Any] | None = None) -> None:
    """As ``notify_operators``, once per transaction and event name."""
    _queue_once(OPERATORS_ROOM, event_name, payload or {})


def notify_partners(partner_ids, event_name: str, payload: dict[str, Any] | None = None) -> None:
    """Tell several partners at once: one emit to all their rooms (one publish over Redis)."""
    rooms = sorted({partner_room(pid) for pid in partner_ids})
    if rooms:
        _queue(rooms, event_name, payload or {})


def notify_partners_now(partner_ids, event_name: str, payload: dict[str, Any] | None = None) -> None:
    """Emit at once, for writers that commit outside the session (the click writer's batches)."""
    rooms = sorted({partner_room(pid) for pid in partner_ids})
    if rooms:
        socketio.emit(event_name, payload or {}, to=rooms)


def notify_operators_now(event_name: str, payload: dict[str, Any] | None = None) -> None:
    """Emit to the operators at once, for writers that commit outside the session."""
    socketio.emit(event_name, payload or {}, to=OPERATORS_ROOM)


def notify_operators(event_name: str, payload: dict[str, Any] | None = None) -> None:
    """Tell every operator's open pages that ``event_name`` happened (after commit)."""
    _queue(OPERATORS_ROOM, event_name, payload or {})


def _disconnect_local(server, room: str) -> None:
    for sid, _eio_sid in list(server.manager.get_participants("/", room)):
        server.disconnect(sid, namespace="/", ignore_queue=True)


def close_session_sockets(session_token: str) -> None:
    """Close every open socket (on every worker) that was opened with ``session_token``."""
    server = socketio.server
    if server is None:
        return
    room = session_room(session_token)
    if isinstance(server.manager, socketio_server.PubSubManager):
        server.manager.close_room(room, "/")  # PortalRedisManager closes them on each worker
    else:
        _disconnect_local(server, room)
        server.manager.close_room(room, "/")


def revoke_session_sockets(session_token: str, session: Session | None = None) -> None:
    """Close the sockets of ``session_token`` once the change that ended it commits."""
    session = session or db.session()
    if session.in_transaction():
        session.info.setdefault(_PENDING_REVOKED_KEY, []).append(session_token)
    else:
        close_session_sockets(session_token)


def _session_token_changed(target, value, oldvalue, initiator) -> None:
    if isinstance(oldvalue, str) and oldvalue and oldvalue != value:
        revoke_session_sockets(oldvalue, object_session(target))


def listen_for_session_changes() -> None:
    from portal.models import User

    if not event.contains(User.session_token, "set", _session_token_changed):
        event.listen(User.session_token, "set", _session_token_changed, active_history=True)


@event.listens_for(Session, "after_commit")
def _emit_after_commit(session: Session) -> None:
    session.info.pop(_PENDING_ONCE_KEY, None)
    for token in session.info.pop(_PENDING_REVOKED_KEY, []):
        try:
            close_session_sockets(token)
        except Exception:  # the commit stands; a socket left open is logged, not raised
            log.exception("closing the sockets of an ended session failed")
    for room, event_name, payload in session.info.pop(_PENDING_KEY, []):
        socketio.emit(event_name, payload, to=room)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction) -> None:
    # Only the whole transaction's rollback drops the events: a SAVEPOINT rolled
    # back inside it (a lost insert race, say) leaves the rest of the work standing.
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_PENDING_ONCE_KEY, None)
        session.info.pop(_PENDING_REVOKED_KEY, None)


RESTART_EVENT = "restart"


def close_sockets_for_restart(sio: SocketIO | None = None) -> int:
    """Close this worker's open sockets so a restart does not wait out the graceful timeout.

    Each socket is first told ``restart`` with the reason ``reconnect``, then closed at the
    Engine.IO level; browsers reconnect by themselves (to the next worker) and refetch
    their live parts. Returns how many sockets were closed.
    """
    server = (sio or socketio).server
    if server is None:
        return 0
    try:
        server.emit(RESTART_EVENT, {"reason": "reconnect"}, namespace="/", ignore_queue=True)
    except Exception:  # a courtesy message; closing is what matters
        log.debug("telling sockets about the restart failed", exc_info=True)
    sockets = list(server.eio.sockets.values())
    for sock in sockets:
        try:
            sock.close(wait=False, reason=server.eio.reason.SERVER_DISCONNECT)
        except Exception:  # one broken socket must not keep the others open
            log.debug("closing a socket for the restart failed", exc_info=True)
    server.eio.sockets.clear()
    return len(sockets)
