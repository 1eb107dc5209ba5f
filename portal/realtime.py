"""Live updates: Socket.IO connection auth, rooms, and ``notify`` — the one place that emits.

The database is the truth; an event only says "something changed". Emits wait
for the surrounding transaction to commit and are dropped if it rolls back, so
a browser never re-fetches data that does not exist.
"""

from __future__ import annotations

from typing import Any

from flask_login import current_user
from flask_socketio import SocketIO, emit, join_room
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal.extensions import db, socketio

OPERATORS_ROOM = "operators"
_PENDING_KEY = "portal_pending_emits"


def partner_room(partner_id: int) -> str:
    return f"partner:{partner_id}"


def room_for(user) -> str | None:
    """The room a signed-in user's browser joins, or None if it may not listen."""
    if user.is_operator:
        return OPERATORS_ROOM
    partner = user.partner
    if partner is not None and partner.can_use_portal:
        return partner_room(partner.id)
    return None


def register_handlers(sio: SocketIO) -> None:
    @sio.on("connect")
    def on_connect(auth: Any = None):
        if not current_user.is_authenticated:
            return False  # anonymous sockets are refused
        room = room_for(current_user)
        if room is None:
            return False
        join_room(room)
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


@event.listens_for(Session, "after_commit")
def _emit_after_commit(session: Session) -> None:
    for room, event_name, payload in session.info.pop(_PENDING_KEY, []):
        socketio.emit(event_name, payload, to=room)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction) -> None:
    # Only the whole transaction's rollback drops the events: a SAVEPOINT rolled
    # back inside it (a lost insert race, say) leaves the rest of the work standing.
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
