"""Paying partners in the browser: a manager builds, approves and pays a batch while the partner watches."""

from __future__ import annotations

import re
import time
from datetime import date

import pytest
import sqlalchemy as sa
from playwright.sync_api import Locator, Page, expect

from portal import templating
from portal.extensions import db
from portal.models import PayoutAccount
from portal.models.types import utcnow
from portal.services import schedule
from portal.services.program import get_program
from tests.e2e.support import APPLICANT_PASSWORD, PayoutDates, create_partner, sign_in, unique_id

pytestmark = pytest.mark.e2e

# Set on window before the manager acts; still there afterwards means the page never reloaded.
_MARK_PAGE = "window.__e2eSamePage = true"
_SAME_PAGE = "window.__e2eSamePage === true"
# How long a partner's open page may take to show a change made in another browser.
LIVE_MS = 3_000


def _figure(page: Page, name: str) -> Locator:
    return page.locator("#earnings").get_by_test_id(name)


def _line_state(page: Page, order: str) -> Locator:
    return page.get_by_test_id("ledger").locator("tr", has_text=order).get_by_test_id("line-state")


def _item_row(page: Page, partner_name: str) -> Locator:
    return page.get_by_test_id("items").locator("tr").filter(has=page.get_by_role("link", name=partner_name))


def _bulk_form(page: Page) -> Locator:
    return page.locator("form").filter(has=page.get_by_role("button", name="Mark every waiting payment paid"))


def _day(live_server, value: date) -> str:
    """A date as the portal's pages show it (its own ``day`` filter)."""
    with live_server.app.test_request_context():
        return templating.day(value)


def _expect_figures(page: Page, timeout: int | None = None, **figures: str) -> None:
    for name, text in figures.items():
        expect(_figure(page, name.replace("_", "-"))).to_have_text(text, timeout=timeout)


def test_partner_sees_the_payout_go_from_confirmed_to_paid_without_reloading(
    new_context, earner_due_a_payout, live_server
):
    earner = earner_due_a_payout
    with live_server.app.app_context():
        program = get_program()
        dates = PayoutDates.of(program, utcnow())
    first_order = earner.orders[0]

    # The partner has their earnings open, connected for live updates.
    partner = new_context().new_page()
    sign_in(partner, earner.email, APPLICANT_PASSWORD)
    partner.goto("/partner/earnings")
    expect(partner.locator("#live-status")).to_have_attribute("data-state", "live")
    _expect_figures(partner, pending="$9.90", confirmed="$73.50", in_payout="$0.00", paid="$0.00")
    for order in earner.orders:
        expect(_line_state(partner, order)).to_contain_text("confirmed")
    expect(_line_state(partner, earner.pending_order)).to_contain_text("pending")
    partner.evaluate(_MARK_PAGE)

    # A manager, in another browser, builds the batch of the last payout date.
    manager = new_context(role="manager").new_page()
    manager.goto("/admin/payouts")
    manager.get_by_role("button", name="Build the batch for the last payout date now").click()
    expect(manager).to_have_url(re.compile(r"/admin/payouts/\d+$"))
    expect(manager.locator(".flashes")).to_contain_text(f"Payout batch for {dates.last} built.")
    batch_id = int(manager.url.rsplit("/", 1)[1])
    row = _item_row(manager, earner.name)
    expect(row.get_by_test_id("item-status")).to_contain_text("to pay")
    expect(row).to_contain_text("$73.50")
    expect(row).to_contain_text(re.compile("paypal", re.IGNORECASE))

    # The partner's page follows by itself: the lines are now in that payout.
    for order in earner.orders:
        expect(_line_state(partner, order)).to_contain_text(
            f"in payout of {_day(live_server, dates.last)}", timeout=LIVE_MS
        )
    _expect_figures(partner, LIVE_MS, pending="$9.90", confirmed="$0.00", in_payout="$73.50", paid="$0.00")

    manager.get_by_role("button", name="Approve this batch").click()
    expect(manager.get_by_test_id("batch-status")).to_contain_text("approved — being paid")
    expect(manager.locator(".flashes")).to_contain_text("Batch approved.")

    # One reference for every payment waiting (a bulk transfer).
    reference = f"PP-{unique_id('bulk')}".upper()
    bulk = _bulk_form(manager)
    paid_on = date.fromisoformat(bulk.get_by_label("Paid on").input_value())
    # "Today" is the program's day, which is not the UTC date around midnight.
    assert paid_on == schedule.local_today(program, utcnow())
    bulk.get_by_label("Payment reference").fill(reference)
    bulk.get_by_role("button", name="Mark every waiting payment paid").click()
    expect(manager.locator(".flashes")).to_contain_text("Recorded.")
    recorded_at = time.monotonic()
    expect(row.get_by_test_id("item-status")).to_contain_text(
        f"paid {_day(live_server, paid_on)} · {reference}"
    )

    # The partner sees "paid" with the reference, and the four figures, within a few seconds.
    expect(_line_state(partner, first_order)).to_contain_text(
        f"paid on {_day(live_server, paid_on)}, ref. {reference}", timeout=LIVE_MS
    )
    _expect_figures(partner, LIVE_MS, pending="$9.90", confirmed="$0.00", in_payout="$0.00", paid="$73.50")
    assert time.monotonic() - recorded_at < LIVE_MS / 1000 + 1
    expect(_line_state(partner, earner.orders[1])).to_contain_text(f"ref. {reference}")
    expect(_line_state(partner, earner.pending_order)).to_contain_text("pending")
    assert partner.evaluate(_SAME_PAGE), "the earnings page reloaded instead of swapping #earnings"

    # The database agrees: both lines in that one batch's item, paid with that reference.
    items = {live_server.payout_item_of(order) for order in earner.orders}
    assert len(items) == 1
    (item_batch, _item_id, status) = items.pop()
    assert (item_batch, status) == (batch_id, "paid")
    assert live_server.payout_items(batch_id)[earner.id] == ("paid", reference)
    assert live_server.payout_item_of(earner.pending_order) is None


def test_marking_paid_without_a_reference_shows_the_error_and_changes_nothing(
    new_context, payout_showcase, live_server
):
    batch_id = payout_showcase.batch_id
    before = live_server.payout_items(batch_id)
    assert sorted(p for p, (status, _ref) in before.items() if status == "pending") == sorted(
        payout_showcase.payable_partner_ids
    )
    manager = new_context(role="manager").new_page()
    manager.goto(f"/admin/payouts/{batch_id}")
    expect(manager.get_by_test_id("batch-status")).to_contain_text("approved — being paid")

    # The bulk form, with only spaces for a reference.
    bulk = _bulk_form(manager)
    bulk.get_by_label("Payment reference").fill("   ")
    with manager.expect_response(re.compile(rf"/admin/payouts/{batch_id}/paid$")) as answer:
        bulk.get_by_role("button", name="Mark every waiting payment paid").click()
    assert answer.value.status == 422
    expect(manager.locator(".flashes")).to_contain_text("Not recorded: Enter the payment reference.")
    bulk = _bulk_form(manager)
    expect(bulk.locator("#reference-error")).to_contain_text("Enter the payment reference.")
    expect(bulk.get_by_label("Payment reference")).to_have_attribute("aria-invalid", "true")
    expect(manager.get_by_test_id("item-status").filter(has_text="to pay")).to_have_count(2)
    assert live_server.payout_items(batch_id) == before

    # One item's own form, left empty.
    manager.goto(f"/admin/payouts/{batch_id}")
    row = manager.get_by_test_id("items").locator("tr").filter(has=manager.locator("details")).first
    row.locator("summary").click()
    with manager.expect_response(re.compile(r"/items/\d+/paid$")) as answer:
        row.get_by_role("button", name="Paid").click()
    assert answer.value.status == 422
    expect(manager.locator(".flashes")).to_contain_text("Not recorded: Enter the payment reference.")
    expect(manager.get_by_test_id("item-status").filter(has_text="to pay")).to_have_count(2)
    # The error sits in that payment's own form, left open; the batch-wide form stays empty.
    refused = manager.locator("main details[open]")  # the page's own, not the navigation's
    expect(refused).to_have_count(1)
    expect(refused.get_by_label("Payment reference")).to_have_attribute("aria-invalid", "true")
    expect(refused).to_contain_text("Enter the payment reference.")
    expect(_bulk_form(manager).get_by_label("Payment reference")).to_have_value("")
    expect(_bulk_form(manager).locator("#reference-error")).to_have_count(0)
    assert live_server.payout_items(batch_id) == before

    # A reference typed into one payment's form, with a date that is not one, comes back in that
    # form only — never into the form that marks every payment paid.
    manager.goto(f"/admin/payouts/{batch_id}")
    row = manager.get_by_test_id("items").locator("tr").filter(has=manager.locator("details")).first
    row.locator("summary").click()
    row.get_by_label("Payment reference").fill("PP-ONLY-THIS-ONE")
    row.get_by_label("Paid on").evaluate("input => { input.type = 'text'; input.value = 'soon'; }")
    with manager.expect_response(re.compile(r"/items/\d+/paid$")) as answer:
        row.get_by_role("button", name="Paid").click()
    assert answer.value.status == 422
    refused = manager.locator("main details[open]")  # the page's own, not the navigation's
    expect(refused.get_by_label("Payment reference")).to_have_value("PP-ONLY-THIS-ONE")
    expect(refused.get_by_label("Paid on")).to_have_attribute("aria-invalid", "true")
    expect(_bulk_form(manager).get_by_label("Payment reference")).to_have_value("")
    assert live_server.payout_items(batch_id) == before


def _payout_account_of(live_server, partner_id: int) -> PayoutAccount | None:
    with live_server.app.app_context():
        account = db.session.scalars(
            sa.select(PayoutAccount).where(PayoutAccount.partner_id == partner_id)
        ).first()
        if account is not None:
            db.session.expunge(account)
        return account


def test_bad_iban_shows_the_field_error_and_keeps_what_was_typed(new_context, live_server):
    with live_server.app.app_context():
        partner, email = create_partner("Nordkapp Cycling Diaries", "iban")
        db.session.commit()
        partner_id = partner.id
    page = new_context().new_page()
    sign_in(page, email, APPLICANT_PASSWORD)
    page.goto("/partner/payout-details")

    typed = {
        "Account holder": "Ingrid Nordkapp-Øvergaard",
        "IBAN": "DE89 3704 0044 0532 0130 01",  # the check digits do not match
        "BIC / SWIFT (optional)": "COBADEFFXXX",
        "Bank name (optional)": "Commerzbank Köln",
        "Tax or VAT number (optional)": "DE123456789",
    }
    page.get_by_label("Bank transfer (IBAN)").check()
    for label, value in typed.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Tax country (optional)").select_option("DE")
    with page.expect_response(re.compile(r"/partner/payout-details$")) as answer:
        page.get_by_role("button", name="Save payout details").click()
    assert answer.value.status == 422

    iban = page.get_by_label("IBAN", exact=True)
    expect(page.locator("#iban-error")).to_have_text(
        re.compile(r"This IBAN is not valid; check it against your bank statement\.")
    )
    expect(iban).to_have_attribute("aria-invalid", "true")
    for label, value in typed.items():
        expect(page.get_by_label(label, exact=True)).to_have_value(value)
    expect(page.get_by_label("Bank transfer (IBAN)")).to_be_checked()
    expect(page.get_by_label("Tax country (optional)")).to_have_value("DE")
    assert _payout_account_of(live_server, partner_id) is None

    # Corrected, it is saved (normalised) and the earnings page says how the partner is paid.
    iban.fill("DE89 3704 0044 0532 0130 00")
    page.get_by_label("Your current password").fill(APPLICANT_PASSWORD)
    page.get_by_role("button", name="Save payout details").click()
    expect(page).to_have_url(live_server("/partner/earnings"))
    expect(page.locator(".flashes")).to_contain_text("Payout details saved.")
    expect(page.get_by_text("Paid by bank transfer.")).to_be_visible()
    account = _payout_account_of(live_server, partner_id)
    assert (account.method, account.iban, account.account_holder) == (
        "bank",
        "DE89370400440532013000",
        "Ingrid Nordkapp-Øvergaard",
    )
