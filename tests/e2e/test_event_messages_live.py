"""Acceptance (#16): an automatic message caused by an event reaches the partner's open page live.

The manager moves the partner up a tier in the console; the change commits its
``partner.tier_changed`` event, the dispatcher runs after the commit, and its messages
consumer writes the "tier up" message and tells the partner's socket, all without a reload.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import sqlalchemy as sa
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from portal.extensions import db
from portal.models import Message, Partner, Thread, Tier, User
from portal.services import inbox
from tests.e2e.test_messaging_live import LIVE_MS, _approved_partner, _badge, _open_live

pytestmark = pytest.mark.e2e


def test_a_tier_upgrade_from_the_console_arrives_live_as_an_automatic_message(
    new_context, live_server, make_applicant
):
    partner_id, email = _approved_partner(live_server, make_applicant, "tierlive", None)
    with live_server.app.app_context():
        tier = db.session.scalars(sa.select(Tier).order_by(Tier.rank.desc())).first()
        assert tier is not None, "the demo data has tiers"
        tier_id, tier_name = tier.id, tier.name
    partner = _open_live(new_context, email)
    before = _badge(partner)

    manager = new_context(role="manager").new_page()
    manager.goto(f"/admin/partners/{partner_id}")
    form = manager.locator(f"form[action$='/admin/partners/{partner_id}/tier']")
    form.locator("select[name=tier]").select_option(str(tier_id))
    form.get_by_role("button", name="Set the tier").click()
    expect(manager.locator(".flash, [role=status], [role=alert]").first).to_be_visible()
    changed = time.monotonic()

    subject = f"You moved up to {tier_name}"
    expect(partner.get_by_test_id("dashboard-thread").filter(has_text=subject)).to_be_visible(timeout=LIVE_MS)
    expect(partner.get_by_test_id("unread-count")).to_have_text(str(before + 1), timeout=LIVE_MS)
    assert time.monotonic() - changed < LIVE_MS / 1000
    with live_server.app.app_context():
        # Once: one thread of that kind, one message in it.
        threads = db.session.scalars(
            sa.select(Thread).where(Thread.partner_id == partner_id, Thread.automatic_kind == "tier_upgrade")
        ).all()
        assert len(threads) == 1
        assert db.session.scalar(sa.select(sa.func.count()).where(Message.thread_id == threads[0].id)) == 1


def test_a_message_that_lands_while_the_dashboard_refreshes_still_shows(
    new_context, live_server, make_applicant
):
    """An event arriving while a live fragment's refresh is in flight must refresh it again.

    The refresh swaps the fragment out whole (``outerHTML``); htmx queues the second event on
    the old element and drops it when that element leaves the page, so the list kept the stale
    answer while the badge beside it counted the message. The first refresh is held here until
    the message is written and its event has fired, then answered with what it read before.
    """
    partner_id, email = _approved_partner(live_server, make_applicant, "midflight", None)
    page = _open_live(new_context, email)
    held = []

    def hold_the_first(route):
        if held:
            route.continue_()
            return
        held.append((route, route.fetch()))  # read now: the answer from before the message

    page.route("**/partner/dashboard/news", hold_the_first)
    page.evaluate("document.body.dispatchEvent(new CustomEvent('portal:notification', {bubbles: true}))")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(20)
    assert held, "the dashboard's news refreshes on a notification"

    subject = "Arrived mid-refresh"
    with live_server.app.app_context():
        partner = db.session.get(Partner, partner_id)
        manager = db.session.scalars(sa.select(User).where(User.email == "manager@example.com")).one()
        inbox.start_thread(partner, manager, subject, "Written while the page was already asking.")
        db.session.commit()
    page.evaluate("document.body.dispatchEvent(new CustomEvent('portal:message', {bubbles: true}))")
    route, stale = held[0]
    # Fails only when the newer refresh has already replaced (aborted) this one: what the fix does.
    with contextlib.suppress(PlaywrightError):
        route.fulfill(response=stale)

    expect(page.get_by_test_id("dashboard-thread").filter(has_text=subject)).to_be_visible(timeout=LIVE_MS)
