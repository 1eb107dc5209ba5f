"""Every CSV export, as the operator and the partner who download it: no cell a spreadsheet runs.

People's text (names, e-mails, link labels, campaigns, sub-ids, transaction ids, payout
e-mails) is set to formula payloads; every cell of every export must then start with
something other than a formula character, unless it is a plain number (portal.csvfile).
A new CSV route fails ``test_every_csv_route_is_in_this_file`` until it is added here.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal import csvfile
from portal.models import CreativeKind, Link, PayoutAccount, PayoutBatch, Role
from portal.services import creatives, dashboards, payouts
from portal.services.creatives import CreativeInput
from portal.services.links import create_link
from tests.factories import PartnerFactory, UserFactory, at_noon, earn, sale, store_clicks

NOW = datetime(2026, 3, 15, 10, 0, tzinfo=UTC)
TODAY = date(2026, 3, 15)
PAYLOADS = [
    '=HYPERLINK("http://x")',
    "+2+5",
    "@SUM(1)",
    "-1+1",
    "\t=1",
    "\r=1",
    "\uff1d1",  # full-width =
    "\uff0b1+1",  # full-width +
    "\uff0d1+1",  # full-width -
    "\uff20SUM(1)",  # full-width @
]

# endpoint -> (who downloads it, the URLs it serves)
CSV_ROUTES = {
    "admin.export_stats": (
        Role.ADMIN,
        [f"/admin/stats/{t}.csv?range=30d" for t in dashboards.PROGRAM_TABLES],
    ),
    "admin.export_batch": (
        Role.ADMIN,
        ["/admin/payouts/{batch}/export.csv", "/admin/payouts/{batch}/export.paypal"],
    ),
    "partner.export_stats": (
        Role.PARTNER,
        [f"/partner/stats/{t}.csv?range=30d" for t in dashboards.PARTNER_TABLES],
    ),
    "partner.earnings_csv": (Role.PARTNER, ["/partner/earnings.csv"]),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def sign_in(client, user) -> None:
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True


def test_every_csv_route_is_in_this_file(app):
    exports = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if ".csv" in rule.rule or "export" in rule.endpoint or "csv" in rule.endpoint
    }
    assert exports == set(CSV_ROUTES)


def _books_full_of(db, program, payload: str):
    """A partner whose every piece of text is ``payload``, with clicks, a sale, a paid-out
    balance and a payout batch; and a quiet one (for the at-risk list) named the same."""
    partner = PartnerFactory(user__name=payload, user__email=f"{payload}@example.org".lower())
    PartnerFactory(
        user__name=payload,
        user__email=f"quiet{payload}@example.org".lower(),
        status_changed_at=at_noon(TODAY - timedelta(days=40)),
    )
    manager = UserFactory(role=Role.MANAGER)
    creative = creatives.create_creative(
        CreativeKind.LANDING,
        manager,
        program,
        CreativeInput(name=payload, channels=["seo"], url="https://shop.example/tents"),
    )
    link = create_link(partner, program, label="x", channel="seo")
    link.label, link.campaign, link.sub_id = payload, payload, payload
    db.session.flush()
    clicked = store_clicks(db, partner, TODAY, 6, link, creative_id=creative.id, sub_id=payload)
    store_clicks(db, partner, TODAY - timedelta(days=45), 1, link)
    # A merchant's transaction id is never rewritten (the ledger triggers refuse it): stored so.
    sale(db, program, partner, TODAY, amount=20_000, click_id=clicked[0], transaction_id=payload)
    earn(partner, 6000, at=NOW - timedelta(days=60), transaction_id=payload + " 2")
    # As it may be stored from before the payout form refused it.
    db.session.add(
        PayoutAccount(partner_id=partner.id, method="paypal", paypal_email=f"{payload}@example.org")
    )
    db.session.flush()
    batch, _ = payouts.settle(program, TODAY)
    payouts.approve_batch(batch, manager)
    db.session.commit()
    return partner, batch


def _cells(body: bytes) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(body.decode("utf-8-sig"))) for cell in row]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_export_has_a_cell_a_spreadsheet_would_run(client, db, program, payload):
    partner, batch = _books_full_of(db, program, payload)
    admin = UserFactory(role=Role.ADMIN)
    db.session.commit()
    seen: dict[str, list[str]] = {}
    for role, urls in CSV_ROUTES.values():
        sign_in(client, admin if role == Role.ADMIN else partner.user)
        for url in urls:
            url = url.format(batch=batch.id)
            response = client.get(url)
            assert response.status_code == 200, url
            assert response.mimetype == "text/csv", url
            cells = _cells(response.data)
            dangerous = [
                c for c in cells if c.startswith(csvfile.FORMULA_STARTS) and not csvfile.is_number(c)
            ]
            assert dangerous == [], url
            seen[url] = cells
    # The payloads were there to neutralise (the check above is not vacuous).
    quoted = "'" + payload
    assert quoted in seen[f"/admin/payouts/{batch.id}/export.csv"]  # partner name
    assert quoted + "@example.org" in seen[f"/admin/payouts/{batch.id}/export.paypal"]
    assert quoted in seen["/admin/stats/top_partners.csv?range=30d"]
    assert f"{quoted}@example.org".lower() in seen["/admin/stats/top_partners.csv?range=30d"]
    assert quoted in seen["/admin/stats/at_risk.csv?range=30d"]
    assert "'" + payload.strip() in seen["/admin/stats/creatives.csv?range=30d"]  # names are trimmed
    assert quoted in seen["/partner/stats/link.csv?range=30d"]
    assert quoted in seen["/partner/stats/campaign.csv?range=30d"]
    assert quoted in seen["/partner/stats/sub_id.csv?range=30d"]
    assert quoted in seen["/partner/earnings.csv"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutBatch)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Link)) == 1


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("-12.50", "-12.50"),
        ("-3", "-3"),
        (-1250, "-1250"),
        ("12.50", "12.50"),
        ("-1+1", "'-1+1"),
        ("-2,5", "'-2,5"),
        ("-1e3", "'-1e3"),
        ("- 1", "'- 1"),
        ("+12.50", "'+12.50"),
        ("=1", "'=1"),
        ("\uff0d12.50", "'\uff0d12.50"),
        ("a=1", "a=1"),
        (None, ""),
    ],
)
def test_numbers_stay_numbers_and_everything_else_is_quoted(cell, written):
    assert next(csv.reader(io.StringIO(csvfile.to_csv(None, [[cell]])))) == [written]


@pytest.mark.parametrize("email", ["=attacker@example.org", "+1@example.org", "-x@example.org"])
def test_the_payout_form_refuses_a_paypal_address_that_is_a_formula(db, program, email):
    partner = PartnerFactory()
    with pytest.raises(payouts.DomainError) as refused:
        payouts.save_payout_account(
            partner, payouts.PayoutDetails(method="paypal", paypal_email=email), partner.user
        )
    assert refused.value.field == "paypal_email"
    assert payouts.account_of(partner) is None
