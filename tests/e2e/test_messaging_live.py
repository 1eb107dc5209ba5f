"""Acceptance: a manager's message and tag-targeted announcement reach the partner's open page live.

The audience is a tag (tiers do not exist yet; the rewards module will register
them as another audience kind).
"""

from __future__ import annotations

import itertools
import time

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from portal.extensions import db
from portal.models import Partner, User
from portal.services import accounts, outbox
from portal.services.partners import set_partner_tags
from tests.e2e.support import APPLICANT_PASSWORD, sign_in

pytestmark = pytest.mark.e2e

LIVE_MS = 2_000  # the acceptance bound: on the partner's page within 2 seconds, no reload
_run = itertools.count(1)


def _approved_partner(live_server, make_applicant, label: str, tag: str | None) -> tuple[int, str]:
    partner_id, email = make_applicant(label)
    with live_server.app.app_context():
        manager = db.session.scalars(sa.select(User).where(User.email == "manager@example.com")).one()
        partner = db.session.get(Partner, partner_id)
        accounts.approve_partner(partner, manager)
        if tag:
            set_partner_tags(partner, manager, [tag])
        db.session.commit()
        outbox.dispatch()  # what runs after a request's commit: the welcome message, before the page opens
    return partner_id, email


def _badge(page: Page) -> int:
    badge = page.get_by_test_id("unread-count")
    return int(badge.inner_text()) if badge.count() else 0


def _open_live(new_context, email: str) -> Page:
    page = new_context().new_page()
    sign_in(page, email, APPLICANT_PASSWORD)
    page.goto("/partner/")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    return page


def test_message_and_tag_announcement_arrive_live_and_only_for_the_tag(
    new_context, live_server, make_applicant
):
    n = next(_run)
    tag = f"e2e-live-{n}"
    inside_id, inside_email = _approved_partner(live_server, make_applicant, f"inside{n}", tag)
    _outside_id, outside_email = _approved_partner(live_server, make_applicant, f"outside{n}", None)

    inside = _open_live(new_context, inside_email)
    outside = _open_live(new_context, outside_email)
    inside_before, outside_before = _badge(inside), _badge(outside)
    manager = new_context(role="manager").new_page()

    # 1. a personal message
    subject = f"Your spring plan {n}"
    manager.goto(f"/admin/partners/{inside_id}")
    form = manager.locator("#partner-messages form")
    form.locator("input[name=subject]").fill(subject)
    form.locator("textarea[name=body]").fill("Let's talk about **video** reviews.")
    form.get_by_role("button", name="Send message").click()
    expect(manager.get_by_role("heading", level=1)).to_have_text(subject)
    sent = time.monotonic()
    expect(inside.get_by_test_id("dashboard-thread").filter(has_text=subject)).to_be_visible(timeout=LIVE_MS)
    expect(inside.get_by_test_id("unread-count")).to_have_text(str(inside_before + 1), timeout=LIVE_MS)
    assert time.monotonic() - sent < LIVE_MS / 1000

    # 2. an announcement to the tag, published now
    title = f"Double commission for {tag}"
    manager.goto("/admin/announcements/new")
    manager.locator("input[name=title]").fill(title)
    manager.locator("textarea[name=body]").fill("This week only: **20%** on tents.")
    manager.locator("input[name=audience_kind][value=tags]").check()
    manager.locator("input[name=tags]").fill(tag)
    manager.locator("input[name=when][value=now]").check()
    manager.get_by_role("button", name="Save").click()
    expect(manager.get_by_test_id("read-stats")).to_have_text("Read by 0 of 1")
    published = time.monotonic()
    news = inside.get_by_test_id("dashboard-announcement").filter(has_text=title)
    expect(news).to_be_visible(timeout=LIVE_MS)
    expect(inside.get_by_test_id("unread-count")).to_have_text(str(inside_before + 2), timeout=LIVE_MS)
    assert time.monotonic() - published < LIVE_MS / 1000
    assert inside.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded

    # the partner outside the tag sees nothing, live or after a reload
    expect(outside.get_by_text(title)).to_have_count(0)
    assert _badge(outside) == outside_before
    outside.reload()
    expect(outside.get_by_test_id("dashboard-news")).to_be_visible()
    expect(outside.get_by_text(title)).to_have_count(0)
    expect(outside.get_by_text(subject)).to_have_count(0)

    # reading it lowers the badge and the manager's read count follows live
    news.get_by_role("link", name=title).click()
    expect(inside.get_by_test_id("announcement-body")).to_contain_text("This week only: 20% on tents.")
    expect(inside.get_by_test_id("unread-count")).to_have_text(str(inside_before + 1))
    expect(manager.get_by_test_id("read-stats")).to_have_text("Read by 1 of 1", timeout=LIVE_MS)


def test_the_page_resyncs_after_a_dropped_connection(new_context, live_server, make_applicant):
    n = next(_run)
    partner_id, email = _approved_partner(live_server, make_applicant, f"resync{n}", None)
    page = _open_live(new_context, email)
    before = _badge(page)
    page.evaluate("window.portalSocket.disconnect()")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "offline")

    # something happens while the page is not listening
    with live_server.app.app_context():
        from portal.services import inbox

        manager = db.session.scalars(sa.select(User).where(User.email == "manager@example.com")).one()
        inbox.start_thread(db.session.get(Partner, partner_id), manager, f"While you were away {n}", "Hi")
        db.session.commit()
    assert _badge(page) == before  # nobody told this page yet

    page.evaluate("window.portalSocket.connect()")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("unread-count")).to_have_text(str(before + 1), timeout=LIVE_MS)
    expect(
        page.get_by_test_id("dashboard-thread").filter(has_text=f"While you were away {n}")
    ).to_be_visible()
