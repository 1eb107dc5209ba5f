"""Payout pages: the operator's batch flow and the partner's earnings and payout details."""

import csv
import io
from datetime import UTC, datetime

import sqlalchemy as sa

from portal.models import PayoutBatch, Role
from portal.models.types import utcnow
from portal.services.payouts import PayoutDetails, save_payout_account
from portal.services.schedule import local_today
from tests.factories import PASSWORD, PartnerFactory, earn


def _books(db, program):
    program.minimum_payout_minor = 1000
    program.payout_day = 1
    partner = PartnerFactory(ref_code="payme")
    save_payout_account(
        partner, PayoutDetails(method="paypal", paypal_email="payme@example.org"), partner.user
    )
    earn(partner, 2500, at=datetime(2026, 9, 1, tzinfo=UTC))
    db.session.commit()
    return partner


def test_operator_builds_approves_exports_and_pays_a_batch(client, db, program, login_as):
    partner = _books(db, program)
    login_as(Role.MANAGER)
    built = client.post("/admin/payouts/settle")
    batch = db.session.scalars(sa.select(PayoutBatch)).one()
    assert built.headers["Location"] == f"/admin/payouts/{batch.id}"
    assert client.post("/admin/payouts/settle").status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutBatch)) == 1

    page = client.get(f"/admin/payouts/{batch.id}").get_data(as_text=True)
    assert "waiting for approval" in page
    assert "$25.00" in page
    early = client.get(f"/admin/payouts/{batch.id}/export.csv")
    assert early.status_code == 302  # not before approval

    client.post(f"/admin/payouts/{batch.id}/approve")
    # Settled today: the batch is for the last payout day (the 1st) on or before today.
    assert batch.period_end.day == 1 and batch.period_end <= local_today(program, utcnow())
    payout_date = batch.period_end
    exported = client.get(f"/admin/payouts/{batch.id}/export.paypal")
    assert exported.mimetype == "text/csv"
    assert list(csv.reader(io.StringIO(exported.get_data(as_text=True)))) == [
        ["payme@example.org", "25.00", "USD", f"payout-{batch.items[0].id}", f"Partner payout {payout_date}"]
    ]

    missing = client.post(f"/admin/payouts/{batch.id}/paid", data={"reference": "", "paid_on": ""})
    assert missing.status_code == 422
    assert "Enter the payment reference." in missing.get_data(as_text=True)
    today = utcnow().date().isoformat()
    paid = client.post(f"/admin/payouts/{batch.id}/paid", data={"reference": "PP-BATCH-7", "paid_on": today})
    assert paid.status_code == 302
    again = client.post(f"/admin/payouts/{batch.id}/paid", data={"reference": "PP-8", "paid_on": today})
    assert again.status_code == 422
    assert "already recorded" in again.get_data(as_text=True)
    db.session.refresh(batch)
    assert batch.status == "closed"
    assert batch.items[0].reference == "PP-BATCH-7"

    client.post("/logout")
    with client.session_transaction() as session:
        session["_user_id"] = partner.user.get_id()
    earnings = client.get("/partner/earnings").get_data(as_text=True)
    assert "PP-BATCH-7" in earnings
    assert "paid" in earnings
    ledger = client.get("/partner/earnings.csv")
    assert "PP-BATCH-7" in ledger.get_data(as_text=True)
    assert ledger.headers["Content-Disposition"].startswith("attachment")


def test_marking_an_item_failed_needs_a_reason(client, db, program, login_as):
    _books(db, program)
    login_as(Role.ADMIN)
    client.post("/admin/payouts/settle")
    batch = db.session.scalars(sa.select(PayoutBatch)).one()
    client.post(f"/admin/payouts/{batch.id}/approve")
    item = batch.items[0]
    empty = client.post(f"/admin/payouts/{batch.id}/items/{item.id}/failed", data={"reason": ""})
    assert empty.status_code == 422
    done = client.post(f"/admin/payouts/{batch.id}/items/{item.id}/failed", data={"reason": "account closed"})
    assert done.status_code == 302
    db.session.refresh(item)
    assert (item.status, item.failure_reason) == ("failed", "account closed")


def test_a_refused_item_payment_stays_in_its_own_row(client, db, program, login_as):
    """One payment's refused form must never pre-fill the form that pays every partner."""
    _books(db, program)
    login_as(Role.MANAGER)
    client.post("/admin/payouts/settle")
    batch = db.session.scalars(sa.select(PayoutBatch)).one()
    client.post(f"/admin/payouts/{batch.id}/approve")
    item = batch.items[0]
    refused = client.post(
        f"/admin/payouts/{batch.id}/items/{item.id}/paid",
        data={"reference": "PP-ONLY-THIS-ONE", "paid_on": "not a date"},
    )
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    bulk = page[page.index(f'action="/admin/payouts/{batch.id}/paid"') :]
    bulk = bulk[: bulk.index("</form>")]
    assert 'name="reference"' in bulk
    assert "PP-ONLY-THIS-ONE" not in bulk
    assert 'aria-invalid="true"' not in bulk
    row = page[page.index(f'action="/admin/payouts/{batch.id}/items/{item.id}/paid"') :]
    row = row[: row.index("</form>")]
    assert 'value="PP-ONLY-THIS-ONE"' in row
    assert f'id="on-{item.id}-error"' in row
    assert "<details open>" in page

    failed = client.post(f"/admin/payouts/{batch.id}/items/{item.id}/failed", data={"reason": "  "})
    assert failed.status_code == 422
    page = failed.get_data(as_text=True)
    assert f'id="why-{item.id}-error"' in page
    db.session.refresh(item)
    assert (item.status, item.reference) == ("pending", None)


def test_partner_earnings_page_shows_the_four_figures_and_next_date(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    earn(user.partner, 1234, confirmed=False, at=utcnow())
    db.session.commit()
    page = client.get("/partner/earnings").get_data(as_text=True)
    assert 'data-testid="pending">$12.34<' in page
    # under the minimum: no date promised, the sentence says why
    assert "$50.00 more to reach the $50.00 minimum, and add your payout details." in page
    assert "Add your payout details" in page
    fragment = client.get("/partner/earnings", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="earnings"')


def test_payout_details_form_validates_and_keeps_input(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    bad = client.post(
        "/partner/payout-details",
        data={"method": "bank", "account_holder": "Pat Partner", "iban": "DE00 1234", "bic": ""},
    )
    page = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert "This IBAN is not valid" in page
    assert 'value="Pat Partner"' in page
    bad_paypal = client.post("/partner/payout-details", data={"method": "paypal", "paypal_email": "nope"})
    assert "PayPal account" in bad_paypal.get_data(as_text=True)
    good = client.post(
        "/partner/payout-details",
        data={"method": "paypal", "paypal_email": "Pat@Example.org", "current_password": PASSWORD},
    )
    assert good.status_code == 302
    from portal.services.payouts import account_of

    assert account_of(user.partner).paypal_email == "Pat@example.org"
    assert 'value="Pat@example.org"' in client.get("/partner/payout-details").get_data(as_text=True)


def test_withdrawal_request(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    program.allow_withdrawals = True
    program.minimum_payout_minor = 1000
    save_payout_account(user.partner, PayoutDetails(method="paypal", paypal_email="w@example.org"), user)
    earn(user.partner, 2000)
    db.session.commit()
    page = client.get("/partner/earnings").get_data(as_text=True)
    assert "Request my $20.00 now" in page
    client.post("/partner/earnings/withdraw")
    batch = db.session.scalars(sa.select(PayoutBatch)).one()
    assert (batch.kind, batch.items[0].amount_minor) == ("withdrawal", 2000)
    client.post("/partner/earnings/withdraw")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutBatch)) == 1


def _batch_with_held_items(db, program, payable: int, held: int):
    program.minimum_payout_minor = 1000
    program.payout_day = 1
    for n in range(payable + held):
        partner = PartnerFactory(ref_code=f"page{n:02d}")
        if n < payable:
            save_payout_account(
                partner, PayoutDetails(method="paypal", paypal_email=f"page{n}@example.org"), partner.user
            )
        earn(partner, 1000 + n, at=datetime(2026, 9, 1, tzinfo=UTC))
    db.session.commit()


def test_batch_page_pages_its_items_and_totals_the_whole_batch(client, db, program, login_as, monkeypatch):
    from portal.blueprints.admin import payouts as payout_views

    monkeypatch.setattr(payout_views, "BATCH_ITEMS_PER_PAGE", 2)
    _batch_with_held_items(db, program, payable=3, held=2)
    login_as(Role.MANAGER)
    client.post("/admin/payouts/settle")
    batch = db.session.scalars(sa.select(PayoutBatch)).one()

    first = client.get(f"/admin/payouts/{batch.id}").get_data(as_text=True)
    assert first.count('data-testid="item-status"') == 2
    assert "Payments 1–2 of 5" in first
    assert "Page 1 of 3" in first
    # The figures are over all five items, not the two on the page.
    assert "$30.03" in first  # 1000 + 1001 + 1002 to pay
    assert "3 partners" in first
    assert "2 partners, $20.07" in first  # held: 1003 + 1004
    last = client.get(f"/admin/payouts/{batch.id}?page=3").get_data(as_text=True)
    assert last.count('data-testid="item-status"') == 1
    assert "page04" in last and "page00" not in last
    assert "$30.03" in last


def test_batch_list_and_batch_page_count_held_items_alike(client, db, program, login_as):
    _batch_with_held_items(db, program, payable=2, held=1)
    login_as(Role.MANAGER)
    client.post("/admin/payouts/settle")
    batch = db.session.scalars(sa.select(PayoutBatch)).one()
    listing = client.get("/admin/payouts").get_data(as_text=True)
    page = client.get(f"/admin/payouts/{batch.id}").get_data(as_text=True)
    # Both: two partners to pay ($20.01), one held back and not in the total.
    assert "2 to pay" in listing and "1 held back" in listing
    assert "$20.01" in listing
    assert "2 partners" in page and "1 partners, $10.02" in page
    assert "<strong>$20.01</strong>" in page


def test_mark_paid_forms_default_to_today_in_the_programs_time_zone(client, db, program, login_as):
    import time_machine

    _books(db, program)
    program.timezone = "Pacific/Kiritimati"  # UTC+14: its day starts 14 hours before UTC's
    db.session.commit()
    with time_machine.travel(datetime(2026, 11, 20, 12, 0, tzinfo=UTC), tick=False):
        login_as(Role.MANAGER)
        built = client.post("/admin/payouts/settle")
        assert built.status_code == 302, built.get_data(as_text=True)
        batch = db.session.scalars(sa.select(PayoutBatch)).one()
        client.post(f"/admin/payouts/{batch.id}/approve")
        page = client.get(f"/admin/payouts/{batch.id}").get_data(as_text=True)
    assert 'value="2026-11-21"' in page  # the bulk form and the per-item form
    assert 'value="2026-11-20"' not in page


def test_partner_who_owes_a_clawback_reads_it_in_words(client, db, program, login_as):
    from portal.models import Commission, CommissionKind, RejectionReason

    user = login_as(Role.PARTNER)
    line = earn(user.partner, 1200, at=datetime(2026, 9, 1, tzinfo=UTC))
    db.session.add(
        Commission(
            conversion=line.conversion,
            partner_id=user.partner.id,
            kind=CommissionKind.CLAWBACK,
            amount_minor=-2400,
            currency="USD",
            status="confirmed",
            confirm_after=utcnow(),
            confirmed_at=utcnow(),
            reverses_id=line.id,
            reason_code=RejectionReason.REFUND,
        )
    )
    db.session.commit()
    page = client.get("/partner/earnings").get_data(as_text=True)
    assert "You owe $12.00 from a refund after payout; it is netted from your next payout." in page
    assert 'data-testid="owed"' in page and "you owe</span>" in page  # a word, not colour alone
    assert "taken back after payout" in page


def test_settle_command_counts_held_items_as_the_pages_do(runner, db, program):
    _batch_with_held_items(db, program, payable=2, held=1)
    result = runner.invoke(args=["portal", "settle", "--as-of", "2026-11-20"])
    assert result.exit_code == 0, result.output
    assert "2 partners to pay, 1 held back (no payout details)." in result.output
