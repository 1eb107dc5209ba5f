"""Inbox, announcements, templates and e-mail settings through the pages; XSS stays inert."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask import g

from portal.extensions import socketio
from portal.jobs import run_triggers
from portal.models import (
    AnnouncementRecipient,
    AutomaticKind,
    Message,
    Partner,
    PartnerStatus,
    Role,
    Thread,
)
from portal.services import announcements, delivery, inbox, lifecycle, outbox
from portal.services.announcements import AnnouncementDraft
from tests.factories import PartnerFactory, UserFactory

XSS_PAYLOADS = [
    "<script>alert('xss')</script>",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    '"><iframe src="javascript:alert(1)"></iframe>',
    "[click me](javascript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<a href="javascript:alert(1)">x</a>',
    "<body onload=alert(1)>",
    "`<b>code</b>` and <style>*{display:none}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "{{ 7*7 }}{% raw %}",
    "<<script>script>alert(1)<</script>/script>",
]


class _ActiveContent(HTMLParser):
    """Collects every element or attribute on a page that could run code."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and not (attrs.get("src") or "").startswith("/static/"):
            self.found.append(f"<script> {attrs}")
        # The dashboard's own bar charts are allowed (their on* attributes still count).
        own_chart = tag == "svg" and "data-chart" in attrs
        if tag in {"iframe", "svg", "img", "style", "math", "object", "embed"} and not own_chart:
            self.found.append(f"<{tag}>")
        for name, value in attrs.items():
            if name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if name in {"href", "src", "action", "formaction"} and re.match(
                r"\s*(javascript|data|vbscript):", value or "", re.IGNORECASE
            ):
                self.found.append(f"{tag} {name}={value}")


def assert_inert(html: str) -> None:
    """The payloads are on the page only as text: no element or attribute of theirs runs."""
    parser = _ActiveContent()
    parser.feed(html)
    assert parser.found == []
    assert html.lower().count("<body") == 1


@pytest.fixture
def partner_user(login_as):
    return login_as(Role.PARTNER)


# --- inbox ------------------------------------------------------------------------------------


def test_partner_writes_the_team_answers_and_unread_counts_follow(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    response = client.post(
        "/partner/inbox", data={"subject": "Payout question", "body": "When is **payday**?"}
    )
    assert response.status_code == 302
    thread = db.session.scalars(sa.select(Thread).where(Thread.partner_id == user.partner.id)).one()
    assert inbox.team_unread_count() == 1

    manager = UserFactory(role=Role.MANAGER)
    inbox.mark_read_by_team(thread)
    inbox.reply(thread, manager, "On the 15th. See *the FAQ*.")
    db.session.commit()
    assert inbox.team_unread_count() == 0
    assert inbox.partner_unread_count(user.partner) == 1

    badge = client.get("/partner/inbox/unread").get_data(as_text=True)
    assert 'data-testid="unread-count">1<' in badge
    page = client.get(f"/partner/inbox/{thread.id}").get_data(as_text=True)
    assert "<strong>payday</strong>" in page and "<em>the FAQ</em>" in page
    assert inbox.partner_unread_count(user.partner) == 0
    assert client.get("/partner/inbox/unread").get_data(as_text=True).strip() == ""

    reply = client.post(f"/partner/inbox/{thread.id}", data={"body": "Thanks!"})
    assert reply.status_code == 302
    assert [m.sender for m in inbox.thread_messages(thread)] == ["partner", "team", "partner"]


def test_empty_messages_are_refused_on_the_form(client, db, partner_user):
    response = client.post("/partner/inbox", data={"subject": "Hi", "body": "   "})
    assert response.status_code == 422
    assert "Write a message first." in response.get_data(as_text=True)


def test_a_partner_cannot_read_or_post_to_another_partners_thread(client, db, program, partner_user):
    other = PartnerFactory()
    thread = inbox.start_thread(other, UserFactory(role=Role.MANAGER), "Private deal", "Your rate: 20%")
    db.session.commit()
    assert client.get(f"/partner/inbox/{thread.id}").status_code == 404
    assert client.post(f"/partner/inbox/{thread.id}", data={"body": "let me in"}).status_code == 404
    assert len(inbox.thread_messages(thread)) == 1
    assert "Private deal" not in client.get("/partner/inbox").get_data(as_text=True)
    assert client.get(f"/partner/inbox/{thread.id + 1000}").status_code == 404


def test_operator_inbox_puts_unread_and_own_partners_first(client, db, program, login_as):
    me = login_as(Role.MANAGER)
    mine = PartnerFactory(manager_id=me.id)
    theirs = PartnerFactory()
    quiet = inbox.start_thread(mine, me, "Old news", "FYI")
    theirs_thread = inbox.start_thread(theirs, theirs.user, "Help", "Links broken?")
    mine_thread = inbox.start_thread(mine, mine.user, "Question", "Can I use TikTok?")
    db.session.commit()
    rows = inbox.operator_threads(me)
    assert [r.thread.id for r in rows] == [mine_thread.id, theirs_thread.id, quiet.id]
    assert [r.thread.id for r in inbox.operator_threads(me, mine_only=True)] == [mine_thread.id, quiet.id]

    page = client.get("/admin/inbox").get_data(as_text=True)
    assert page.index("Can I use TikTok?") < page.index("Links broken?")
    client.get(f"/admin/inbox/{theirs_thread.id}")
    assert inbox.team_unread_count() == 1
    response = client.post(f"/admin/inbox/{theirs_thread.id}", data={"body": "Fixed now."})
    assert response.status_code == 302
    assert inbox.partner_unread_count(theirs) == 1


def test_manager_starts_a_thread_tags_and_assigns_from_the_partner_page(client, db, program, login_as):
    me = login_as(Role.MANAGER)
    partner = PartnerFactory()
    db.session.commit()
    assert (
        client.post(
            f"/admin/partners/{partner.id}/messages", data={"subject": "Hello", "body": "Welcome!"}
        ).status_code
        == 302
    )
    assert (
        client.post(
            f"/admin/partners/{partner.id}/tags", data={"tags": "YouTube, top-50, youtube"}
        ).status_code
        == 302
    )
    assert [t.name for t in partner.tags] == ["top-50", "youtube"]
    bad = client.post(f"/admin/partners/{partner.id}/tags", data={"tags": "<b>bold</b>"})
    assert bad.status_code == 422 and "is not a tag" in bad.get_data(as_text=True)
    assert client.post(f"/admin/partners/{partner.id}/manager", data={"manager": me.id}).status_code == 302
    assert partner.manager_id == me.id
    page = client.get(f"/admin/partners/{partner.id}").get_data(as_text=True)
    assert "Hello" in page and "youtube" in page


# --- announcements --------------------------------------------------------------------------------


def test_announcement_to_a_tag_reaches_only_tagged_approved_partners_and_counts_reads(
    client, db, program, login_as
):
    from portal.services.partners import set_partner_tags

    me = login_as(Role.MANAGER)
    tagged, untagged = PartnerFactory(), PartnerFactory()
    suspended = PartnerFactory(status=PartnerStatus.SUSPENDED)
    set_partner_tags(tagged, me, ["vip"])
    set_partner_tags(suspended, me, ["vip"])
    db.session.commit()
    response = client.post(
        "/admin/announcements/new",
        data={
            "title": "VIP rates",
            "body": "You get **15%**.",
            "audience_kind": "tags",
            "tags": "vip",
            "when": "now",
            "pinned": "y",
        },
    )
    assert response.status_code == 302
    [announcement] = announcements.partner_announcements(tagged)
    assert announcement.announcement.pinned and announcement.read_at is None
    assert announcements.partner_announcements(untagged) == []
    assert announcements.partner_announcements(suspended) == []
    assert inbox.partner_unread_count(tagged) == 1

    stats_page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Read by 0 of 1" in stats_page
    announcements.mark_read(tagged, announcement.announcement)
    db.session.commit()
    assert "Read by 1 of 1" in client.get(response.headers["Location"]).get_data(as_text=True)
    assert inbox.partner_unread_count(tagged) == 0


def test_unknown_audience_members_are_refused_on_the_form(client, db, program, login_as):
    login_as(Role.MANAGER)
    for data, message in [
        ({"audience_kind": "tags", "tags": "nobody-has-this"}, "No partner has the tag: nobody-has-this."),
        (
            {"audience_kind": "partners", "partners": "no-such-code"},
            "No approved partner has the code or e-mail",
        ),
        ({"audience_kind": "tags", "tags": ""}, "Name at least one tag."),
    ]:
        response = client.post(
            "/admin/announcements/new", data={"title": "T", "body": "B", "when": "now", **data}
        )
        assert response.status_code == 422
        assert message in response.get_data(as_text=True)


def test_scheduled_announcement_goes_out_once_when_due(db, program):
    manager = UserFactory(role=Role.MANAGER)
    partner = PartnerFactory()
    start = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        announcement = announcements.save_announcement(
            manager,
            AnnouncementDraft("Summer", "Soon", when="schedule", publish_at=start + timedelta(hours=2)),
        )
        assert announcement.state == "scheduled"
        assert run_triggers().announcements == 0
    with time_machine.travel(start + timedelta(hours=2, minutes=1), tick=False):
        assert run_triggers().announcements == 1
        assert run_triggers().announcements == 0
    recipients = db.session.scalars(sa.select(AnnouncementRecipient.partner_id)).all()
    assert partner.id in recipients and len(recipients) == len(set(recipients))
    with pytest.raises(Exception, match="gone out"):
        announcements.save_announcement(manager, AnnouncementDraft("x", "y"), announcement)


@pytest.mark.postgres
def test_publishing_writes_the_audience_in_one_go_and_emits_once_after_commit(
    db, program, database_backend, monkeypatch
):
    manager = UserFactory(role=Role.MANAGER)
    named, _other = PartnerFactory(), PartnerFactory()
    PartnerFactory(status=PartnerStatus.SUSPENDED)
    approved = set(db.session.scalars(sa.select(Partner.id).where(Partner.status == PartnerStatus.APPROVED)))
    assert len(approved) >= 2
    emitted = []
    monkeypatch.setattr(socketio, "emit", lambda event, payload, to=None, **_: emitted.append((event, to)))

    def recipients(announcement):
        return db.session.scalars(
            sa.select(AnnouncementRecipient.partner_id).where(
                AnnouncementRecipient.announcement_id == announcement.id
            )
        ).all()

    everyone = announcements.save_announcement(manager, AnnouncementDraft("All", "x"))
    assert emitted == []  # not before the commit
    db.session.commit()
    assert sorted(recipients(everyone)) == sorted(approved)
    rooms = sorted(f"partner:{pid}" for pid in approved)
    assert emitted == [("announcement", rooms), ("announcement", "operators")]
    assert announcements.publish(everyone) is None  # out already: no second row, no second event
    emitted.clear()
    one = announcements.save_announcement(
        manager, AnnouncementDraft("One", "x", audience_kind="partners", audience_items=[named.ref_code])
    )
    db.session.commit()
    assert recipients(one) == [named.id]
    assert emitted == [("announcement", [f"partner:{named.id}"]), ("announcement", "operators")]


def test_scheduling_in_the_past_is_refused(db, program):
    from portal.errors import DomainError

    with pytest.raises(DomainError, match="in the future") as caught:
        announcements.save_announcement(
            UserFactory(role=Role.MANAGER),
            AnnouncementDraft("T", "B", when="schedule", publish_at=datetime(2000, 1, 1, tzinfo=UTC)),
        )
    assert caught.value.field == "publish_at"


def test_scheduled_time_is_read_in_the_viewers_time_zone(client, db, program, login_as):
    user = login_as(Role.MANAGER)
    user.timezone = "Asia/Kolkata"  # UTC+5:30 all year
    db.session.commit()
    local = (datetime.now(UTC) + timedelta(days=3)).astimezone(ZoneInfo("Asia/Kolkata"))
    response = client.post(
        "/admin/announcements/new",
        data={
            "title": "T",
            "body": "B",
            "audience_kind": "all",
            "when": "schedule",
            "publish_at": local.strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    [announcement] = db.session.scalars(sa.select(announcements.Announcement)).all()
    assert announcement.publish_at == local.replace(second=0, microsecond=0).astimezone(UTC)
    assert announcement.state == "scheduled"


def test_partner_cannot_open_an_announcement_meant_for_others(client, db, program, partner_user):
    other = PartnerFactory()
    manager = UserFactory(role=Role.MANAGER)
    announcement = announcements.save_announcement(
        manager,
        AnnouncementDraft("Just them", "x", audience_kind="partners", audience_items=[other.ref_code]),
    )
    db.session.commit()
    assert client.get(f"/partner/announcements/{announcement.id}").status_code == 404


# --- XSS: messages, announcements, templates ----------------------------------------------------------


def test_injection_in_messages_and_announcements_renders_inert(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    manager = UserFactory(role=Role.MANAGER)
    threads = []
    for payload in XSS_PAYLOADS:
        thread = inbox.start_thread(user.partner, manager, payload[:200], payload)
        inbox.reply(thread, user, payload)
        threads.append(thread)
        announcements.save_announcement(manager, AnnouncementDraft(payload[:200], payload, pinned=True))
    db.session.commit()
    pages = ["/partner/", "/partner/inbox"] + [f"/partner/inbox/{t.id}" for t in threads]
    pages += [
        f"/partner/announcements/{item.announcement.id}"
        for item in announcements.partner_announcements(user.partner)
    ]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200
        assert_inert(response.get_data(as_text=True))
    # and the payloads are there, as text
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in client.get(
        f"/partner/inbox/{threads[0].id}"
    ).get_data(as_text=True)


def test_injection_in_operator_pages_renders_inert(client, db, program, login_as):
    manager = login_as(Role.MANAGER)
    pages = ["/admin/inbox", "/admin/announcements"]
    for payload in XSS_PAYLOADS:
        partner = PartnerFactory()
        partner.user.name = payload[:120]
        thread = inbox.start_thread(partner, partner.user, payload[:200], payload)
        announcement = announcements.save_announcement(manager, AnnouncementDraft(payload[:200], payload))
        pages += [
            f"/admin/inbox/{thread.id}",
            f"/admin/announcements/{announcement.id}",
            f"/admin/partners/{partner.id}",
        ]
    db.session.commit()
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200
        assert_inert(response.get_data(as_text=True))


def test_injection_through_templates_and_their_values_renders_inert(client, db, program, login_as):
    from portal.services.accounts import approve_partner

    manager = login_as(Role.MANAGER)
    hostile = " ".join(p.replace("{", "(").replace("}", ")") for p in XSS_PAYLOADS)
    body = f"Hello {{{{ partner.name }}}}. {hostile}"
    response = client.post(
        "/admin/automatic-messages/welcome",
        data={"enabled": "y", "subject": "Hi <script>x</script>", "body": body},
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert_inert(client.get("/admin/automatic-messages/welcome").get_data(as_text=True))
    partners = []
    for payload in XSS_PAYLOADS:
        partner = PartnerFactory(status=PartnerStatus.APPLIED)
        partner.user.name = payload[:120]  # the value itself is hostile too
        approve_partner(partner, manager)
        partners.append(partner)
    db.session.commit()
    outbox.dispatch()  # what a request's end (or run-triggers) does: the welcome messages
    for partner in partners:
        with client.session_transaction() as session:
            session["_user_id"] = partner.user.get_id()
        thread = db.session.scalars(sa.select(Thread).where(Thread.partner_id == partner.id)).one()
        for path in (f"/partner/inbox/{thread.id}", "/partner/inbox", "/partner/"):
            page = client.get(path)
            assert page.status_code == 200
            assert_inert(page.get_data(as_text=True))


def test_a_template_with_an_unknown_variable_is_refused_on_the_form(client, db, login_as):
    login_as(Role.MANAGER)
    response = client.post(
        "/admin/automatic-messages/wake_up",
        data={"enabled": "y", "subject": "Hi", "body": "You have {{ partner.balance }}", "quiet_days": "21"},
    )
    assert response.status_code == 422
    assert "Unknown variable {{ partner.balance }}" in response.get_data(as_text=True)
    assert lifecycle.get_template(AutomaticKind.WAKE_UP).body != "You have {{ partner.balance }}"


def test_switching_a_template_off_on_the_page(client, db, program, login_as):
    manager = login_as(Role.MANAGER)
    template = lifecycle.get_template(AutomaticKind.WELCOME)
    response = client.post(
        "/admin/automatic-messages/welcome", data={"subject": template.subject, "body": template.body}
    )
    assert response.status_code == 302
    assert lifecycle.get_template(AutomaticKind.WELCOME).enabled is False
    listing = client.get("/admin/automatic-messages").get_data(as_text=True)
    assert 'data-status="off"' in listing
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    from portal.services.accounts import approve_partner

    approve_partner(partner, manager)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


# --- e-mail: preferences and the one-click unsubscribe ---------------------------------------------


def test_preferences_page_switches_kinds_off(client, db, partner_user):
    page = client.get("/partner/preferences").get_data(as_text=True)
    assert "Announcements" in page and "Reminders when your links have gone quiet" in page
    response = client.post("/partner/preferences", data={"email_message": "y", "email_welcome": "y"})
    assert response.status_code == 302
    from portal.services.delivery import email_preferences

    prefs = email_preferences(partner_user.partner)
    assert prefs["message"] and prefs["welcome"]
    assert not prefs["announcement"] and not prefs["wake_up"]


@pytest.mark.smtp
def test_team_message_email_and_its_unsubscribe_link_over_http(app, client, db, program, mail_outbox):
    partner = PartnerFactory()
    manager = UserFactory(role=Role.MANAGER)
    db.session.commit()
    with client.session_transaction() as session:
        session["_user_id"] = manager.get_id()
    response = client.post(
        f"/admin/partners/{partner.id}/messages", data={"subject": "Your rate", "body": "It is **12%** now."}
    )
    assert response.status_code == 302
    [email] = mail_outbox  # sent at the end of the request, after the commit
    assert email["Subject"] == "Your rate"
    assert "It is 12% now." in email.get_body(("plain",)).get_content()
    assert "<strong>12%</strong>" in email.get_body(("html",)).get_content()
    link = re.search(
        r"(http://portal\.test/unsubscribe/\S+)", email.get_body(("plain",)).get_content()
    ).group(1)

    with client.session_transaction() as session:
        session.clear()  # the link works signed out
    # opening it only asks (mail scanners open every link); the button acts
    page = client.get(link.removeprefix("http://portal.test"))
    assert page.status_code == 200
    assert "Stop these e-mails?" in page.get_data(as_text=True)
    assert delivery.email_preferences(partner)["message"] is True
    page = client.post(link.removeprefix("http://portal.test"), data={"List-Unsubscribe": "One-Click"})
    assert page.status_code == 200
    assert "You are unsubscribed" in page.get_data(as_text=True)
    client.post(
        f"/admin/partners/{partner.id}/messages", data={"subject": "x", "body": "y"}
    )  # signed out: no-op
    with client.session_transaction() as session:
        session["_user_id"] = manager.get_id()
    client.post(f"/admin/partners/{partner.id}/messages", data={"subject": "Again", "body": "Still 12%."})
    assert len(mail_outbox) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 2  # the portal still got it

    # RFC 8058 one-click POST from a mail client, without a CSRF token, is accepted too
    assert (
        client.post(
            link.removeprefix("http://portal.test"), data={"List-Unsubscribe": "One-Click"}
        ).status_code
        == 200
    )
    assert client.get("/unsubscribe/forged-token").status_code == 400


# --- live events ------------------------------------------------------------------------------------


def test_manager_actions_reach_the_partners_socket(app, client, db, program, login_as):
    user = login_as(Role.PARTNER)
    for key in list(g):
        g.pop(key)
    sio = socketio.test_client(app, flask_test_client=client)
    sio.get_received()
    other = PartnerFactory()
    manager = UserFactory(role=Role.MANAGER)
    inbox.start_thread(user.partner, manager, "Hi", "Hello")
    announcements.save_announcement(
        manager,
        AnnouncementDraft("Only them", "x", audience_kind="partners", audience_items=[other.ref_code]),
    )
    announcements.save_announcement(manager, AnnouncementDraft("All", "x"))
    db.session.commit()
    names = [m["name"] for m in sio.get_received()]
    assert names.count("message") == 1 and names.count("announcement") == 1
    sio.disconnect()


def test_partners_can_be_filtered_by_tag(client, db, program, login_as):
    from portal.services.partners import set_partner_tags

    manager = login_as(Role.MANAGER)
    tagged, untagged = PartnerFactory(), PartnerFactory()
    set_partner_tags(tagged, manager, ["podcast"])
    db.session.commit()
    page = client.get("/admin/partners?tag=podcast").get_data(as_text=True)
    assert tagged.user.email in page and untagged.user.email not in page
