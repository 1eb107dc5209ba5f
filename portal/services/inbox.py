"""The inbox: threads between one partner and the program team, read state and unread counts.

A partner's messages are read by "the team": any operator opening the thread
marks them read. The partner's assigned manager sees that partner's threads
first; any manager may answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from portal import realtime
from portal.database import OrderedInsert, stored_as_loaded
from portal.errors import DomainError
from portal.extensions import db
from portal.models import Announcement, AnnouncementRecipient, Message, Partner, Sender, Thread, User
from portal.models.types import utcnow
from portal.services import delivery
from portal.urls import absolute_url

MAX_BODY = 10_000
MAX_SUBJECT = 200


@dataclass
class ThreadRow:
    """A thread as a list shows it."""

    thread: Thread
    last: Message | None
    unread: int


def _clean_body(body: str | None) -> str:
    text = (body or "").strip()
    if not text:
        raise DomainError(_("Write a message first."), "body")
    if len(text) > MAX_BODY:
        raise DomainError(_("At most %(max)d characters.", max=MAX_BODY), "body")
    return text


def _clean_subject(subject: str | None) -> str:
    text = " ".join((subject or "").split())
    if not text:
        raise DomainError(_("Give the conversation a subject."), "subject")
    if len(text) > MAX_SUBJECT:
        raise DomainError(_("At most %(max)d characters.", max=MAX_SUBJECT), "subject")
    return text


def _sender_for(thread_partner: Partner, author: User) -> str:
    if author.is_operator:
        return Sender.TEAM
    if author.partner is not None and author.partner.id == thread_partner.id:
        return Sender.PARTNER
    # The views already scope threads to their partner; this is the last line of defence.
    raise DomainError(_("You cannot write in this conversation."))


def thread_link(thread: Thread) -> str:
    return absolute_url("partner.show_thread", thread_id=thread.id)


def _add_message(thread: Thread, sender: str, author: User | None, body: str, now: datetime) -> Message:
    message = Message(thread=thread, sender=sender, author_id=author.id if author else None, body=body)
    message.created_at = now
    thread.last_message_at = now
    db.session.add(message)
    db.session.flush()
    payload = {"thread": thread.id, "message": message.id}
    realtime.notify(thread.partner_id, "message", payload)
    realtime.notify_operators("message", payload)
    return message


def start_thread(partner: Partner, author: User, subject: str, body: str) -> Thread:
    """Open a conversation with its first message, written by the partner or an operator."""
    sender = _sender_for(partner, author)
    subject, body = _clean_subject(subject), _clean_body(body)
    now = utcnow()
    thread = Thread(partner_id=partner.id, subject=subject, created_at=now, last_message_at=now)
    thread.partner = partner
    db.session.add(thread)
    message = _add_message(thread, sender, author, body, now)
    if sender == Sender.TEAM:
        delivery.queue_email(partner, "message", subject, body, thread_link(thread))
    return message.thread


def reply(thread: Thread, author: User, body: str) -> Message:
    """Add a message to a conversation."""
    sender = _sender_for(thread.partner, author)
    message = _add_message(thread, sender, author, _clean_body(body), utcnow())
    if sender == Sender.TEAM:
        delivery.queue_email(
            thread.partner,
            "message",
            _("Re: %(subject)s", subject=thread.subject),
            message.body,
            thread_link(thread),
        )
    return message


_THREADS = Thread.__table__
_MESSAGES = Message.__table__
# An automatic message's thread and message, many at once (``post_system_messages``).
_INSERT_THREADS = OrderedInsert(
    _THREADS, ["partner_id", "subject", "automatic_kind", "created_at", "last_message_at"]
)
_INSERT_MESSAGES = OrderedInsert(
    _MESSAGES, ["thread_id", "sender", "author_id", "body", "created_at", "read_at"]
)


def post_system_message(partner: Partner, kind: str, subject: str, body: str) -> Message:
    """An automatic message: a new thread from the program the partner can answer; the
    partner's pages and the team's inbox are told (after the commit)."""
    message = post_system_messages([(partner, kind, subject, body)])[0]
    tell_posted(message)
    return message


def post_system_messages(items: list[tuple[Partner, str, str, str]]) -> list[Message]:
    """Automatic messages, (partner, kind, subject, body) each: a new thread with its one
    message for each, in the order given. Nobody is told yet (``tell_posted``), so a caller
    whose later writes fail has announced nothing.

    Written by two INSERT … RETURNING id whatever their number, not the unit of work: the
    dispatcher writes these in its turn at the write lock (on SQLite the one the conversion
    API also waits for), a burst of them when many partners reach a tier at once. The rows
    come back as loaded objects, each thread with its one message."""
    if not items:
        return []
    now = utcnow()
    threads = [
        {"partner_id": partner.id, "subject": subject[:MAX_SUBJECT], "automatic_kind": kind}
        | {"created_at": now, "last_message_at": now}
        for partner, kind, subject, _body in items
    ]
    thread_ids = _INSERT_THREADS.ids(db.session, threads)
    messages = [
        {"thread_id": thread_id, "sender": Sender.SYSTEM, "author_id": None, "body": body}
        | {"created_at": now, "read_at": None}
        for thread_id, (_partner, _kind, _subject, body) in zip(thread_ids, items, strict=True)
    ]
    message_ids = _INSERT_MESSAGES.ids(db.session, messages)
    posted = []
    for (partner, *_rest), thread_values, message_id, message_values in zip(
        items, threads, message_ids, messages, strict=True
    ):
        thread = stored_as_loaded(Thread, id=message_values["thread_id"], **thread_values)
        message = stored_as_loaded(Message, id=message_id, **message_values)
        set_committed_value(thread, "partner", partner)
        set_committed_value(thread, "messages", [message])
        set_committed_value(message, "thread", thread)
        set_committed_value(message, "author", None)
        posted.append(message)
    return posted


def tell_posted(message: Message) -> None:
    """A new automatic message: its partner's pages and the team's inbox look again."""
    payload = {"thread": message.thread_id, "message": message.id}
    realtime.notify(message.thread.partner_id, "message", payload)
    realtime.notify_operators("message", payload)


# --- reading ------------------------------------------------------------------------------


def partner_thread(partner: Partner, thread_id: int) -> Thread | None:
    """The partner's own thread, or None (another partner's thread does not exist for them)."""
    return db.session.scalars(
        sa.select(Thread).where(Thread.id == thread_id, Thread.partner_id == partner.id)
    ).first()


def get_thread(thread_id: int) -> Thread | None:
    return db.session.get(Thread, thread_id)


def _unread_for_partner():
    return sa.and_(Message.sender != Sender.PARTNER, Message.read_at.is_(None))


def _unread_for_team():
    return sa.and_(Message.sender == Sender.PARTNER, Message.read_at.is_(None))


def _rows(query: sa.Select, unread_condition) -> list[ThreadRow]:
    threads = list(db.session.scalars(query))
    if not threads:
        return []
    ids = [t.id for t in threads]
    unread = dict(
        db.session.execute(
            sa.select(Message.thread_id, sa.func.count())
            .where(Message.thread_id.in_(ids), unread_condition)
            .group_by(Message.thread_id)
        ).all()
    )
    last_ids = db.session.scalars(
        sa.select(sa.func.max(Message.id)).where(Message.thread_id.in_(ids)).group_by(Message.thread_id)
    ).all()
    last = {m.thread_id: m for m in db.session.scalars(sa.select(Message).where(Message.id.in_(last_ids)))}
    return [ThreadRow(t, last.get(t.id), unread.get(t.id, 0)) for t in threads]


def partner_threads(partner: Partner, limit: int = 100) -> list[ThreadRow]:
    query = (
        sa.select(Thread)
        .where(Thread.partner_id == partner.id)
        .order_by(Thread.last_message_at.desc(), Thread.id.desc())
        .limit(limit)
    )
    return _rows(query, _unread_for_partner())


def operator_threads(operator: User, mine_only: bool = False, limit: int = 100) -> list[ThreadRow]:
    """Threads for the team: with an unread partner message first, the operator's own partners first."""
    has_unread = sa.select(Message.id).where(Message.thread_id == Thread.id, _unread_for_team()).exists()
    mine = Partner.manager_id == operator.id
    query = (
        sa.select(Thread)
        .join(Partner, Partner.id == Thread.partner_id)
        .options(joinedload(Thread.partner).joinedload(Partner.user))
    )
    if mine_only:
        query = query.where(mine)
    query = query.order_by(
        sa.case((has_unread, 0), else_=1),
        sa.case((mine, 0), else_=1),
        Thread.last_message_at.desc(),
        Thread.id.desc(),
    ).limit(limit)
    return _rows(query, _unread_for_team())


def mark_read_by_partner(thread: Thread) -> int:
    """The partner opened the thread: the team's and the program's messages are read."""
    result = db.session.execute(
        sa.update(Message)
        .where(Message.thread_id == thread.id, _unread_for_partner())
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        realtime.notify(thread.partner_id, "read", {"thread": thread.id})
    return result.rowcount


def mark_read_by_team(thread: Thread) -> int:
    result = db.session.execute(
        sa.update(Message)
        .where(Message.thread_id == thread.id, _unread_for_team())
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        realtime.notify_operators("read", {"thread": thread.id})
    return result.rowcount


def thread_messages(thread: Thread) -> list[Message]:
    return list(
        db.session.scalars(
            sa.select(Message)
            .where(Message.thread_id == thread.id)
            .options(joinedload(Message.author))
            .order_by(Message.created_at, Message.id)
        )
    )


def partner_unread_messages(partner: Partner) -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .join(Thread, Thread.id == Message.thread_id)
        .where(Thread.partner_id == partner.id, _unread_for_partner())
    )


def partner_unread_announcements(partner: Partner) -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(AnnouncementRecipient)
        .join(Announcement, Announcement.id == AnnouncementRecipient.announcement_id)
        .where(
            AnnouncementRecipient.partner_id == partner.id,
            AnnouncementRecipient.read_at.is_(None),
            Announcement.published_at.is_not(None),
        )
    )


def partner_unread_count(partner: Partner) -> int:
    """What the partner's badge shows: unread messages plus unread announcements."""
    return partner_unread_messages(partner) + partner_unread_announcements(partner)


def team_unread_count(operator: User | None = None) -> int:
    """Partner messages no operator has read yet (only the operator's own partners, if given)."""
    query = (
        sa.select(sa.func.count())
        .select_from(Message)
        .join(Thread, Thread.id == Message.thread_id)
        .where(_unread_for_team())
    )
    if operator is not None:
        query = query.join(Partner, Partner.id == Thread.partner_id).where(Partner.manager_id == operator.id)
    return db.session.scalar(query)


def operator_threads_of(partner: Partner, limit: int = 20) -> list[ThreadRow]:
    """One partner's threads for the operator console (newest first)."""
    query = (
        sa.select(Thread)
        .where(Thread.partner_id == partner.id)
        .order_by(Thread.last_message_at.desc(), Thread.id.desc())
        .limit(limit)
    )
    return _rows(query, _unread_for_team())
