"""The next payout in one sentence — amount and date, or why not — on the dashboard and the
earnings page alike; the onboarding checklist; early withdrawal and what it still needs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from portal.models import Commission, CommissionKind, PartnerStatus, RejectionReason, Role
from portal.models.types import utcnow
from portal.services import payouts
from portal.services.payout_outlook import NextPayoutState, next_payout_of, withdrawal_of
from portal.services.payouts import PayoutDetails, save_payout_account
from tests.factories import earn

# The payout queries differ by database (see payouts._fill_batch).
pytestmark = pytest.mark.postgres

# The demo program pays monthly on the 15th, minimum $50.00, in Europe/Berlin.
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
PAYOUT_DAY = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)


def _sentence(page: str) -> str:
    match = re.search(r'data-testid="payout-sentence">([^<]*)<', page)
    assert match, "no payout sentence on the page"
    return match.group(1)


def _both_pages(client) -> tuple[str, str]:
    dashboard = _sentence(client.get("/partner/").get_data(as_text=True))
    earnings = _sentence(client.get("/partner/earnings").get_data(as_text=True))
    return dashboard, earnings


def _details(partner, user=None):
    save_payout_account(
        partner,
        PayoutDetails(method="paypal", paypal_email=f"{partner.ref_code}@example.org"),
        user or partner.user,
    )


@pytest.fixture
def partner(login_as, program):
    """A partner signed in at NOW (a session may not start after the time a test looks at)."""
    program.minimum_payout_minor = 5000
    program.payout_schedule, program.payout_day = "monthly", 15
    with time_machine.travel(NOW, tick=False):
        yield login_as(Role.PARTNER).partner


@pytest.mark.parametrize(
    ("confirmed", "with_details", "state", "sentence"),
    [
        (
            3470,
            False,
            NextPayoutState.BELOW_MINIMUM,
            "None on December 15, 2026: $15.30 more to reach the $50.00 minimum, "
            "and add your payout details.",
        ),
        (
            3470,
            True,
            NextPayoutState.BELOW_MINIMUM,
            "None on December 15, 2026: $15.30 more to reach the $50.00 minimum.",
        ),
        (
            0,
            True,
            NextPayoutState.BELOW_MINIMUM,
            "None on December 15, 2026: $50.00 more to reach the $50.00 minimum.",
        ),
        (7350, True, NextPayoutState.SCHEDULED, "$73.50 on December 15, 2026."),
        (5000, True, NextPayoutState.SCHEDULED, "$50.00 on December 15, 2026."),
        (
            7350,
            False,
            NextPayoutState.NO_DETAILS,
            "None on December 15, 2026: add your payout details to be paid your $73.50.",
        ),
    ],
)
def test_the_sentence_for_each_balance(
    client, db, program, partner, confirmed, with_details, state, sentence
):
    with time_machine.travel(NOW, tick=False):
        if confirmed:
            earn(partner, confirmed)
        earn(partner, 990, confirmed=False, at=utcnow())  # pending money never counts toward the minimum
        if with_details:
            _details(partner)
        db.session.commit()
        assert next_payout_of(program, partner).state == state
        assert _both_pages(client) == (sentence, sentence)


def test_the_earnings_page_promises_no_date_under_the_minimum(client, db, program, partner):
    with time_machine.travel(NOW, tick=False):
        earn(partner, 3470)
        _details(partner)
        db.session.commit()
        page = client.get("/partner/earnings").get_data(as_text=True)
    assert "Next payout: December 15" not in page
    assert "$15.30 more to reach the $50.00 minimum" in page


def test_a_suspended_partner_reads_on_hold(client, db, program, partner):
    with time_machine.travel(NOW, tick=False):
        earn(partner, 7350)
        _details(partner)
        partner.status = PartnerStatus.SUSPENDED
        db.session.commit()
        expected = "On hold: your account is suspended; your $73.50 is paid once it is reinstated."
        assert _both_pages(client) == (expected, expected)


def test_new_payout_details_hold_the_payout_until_checked(client, db, program, partner):
    with time_machine.travel(datetime(2026, 12, 14, 12, 0, tzinfo=UTC), tick=False):
        earn(partner, 7350)
        _details(partner)
        db.session.commit()
    with time_machine.travel(datetime(2026, 12, 15, 8, 0, tzinfo=UTC), tick=False):
        save_payout_account(
            partner, PayoutDetails(method="paypal", paypal_email="new@example.org"), partner.user
        )
        payouts.settle(program)
        db.session.commit()
        assert next_payout_of(program, partner).state == NextPayoutState.ON_HOLD
        expected = (
            "On hold: the program team is checking your new payout details; "
            "your $73.50 is paid on January 15, 2027 once they have."
        )
        assert _both_pages(client) == (expected, expected)


def test_money_in_a_batch_is_on_its_way(client, db, program, partner):
    with time_machine.travel(PAYOUT_DAY, tick=False):
        earn(partner, 7350)
        _details(partner)
        batch, _created = payouts.settle(program)
        db.session.commit()
        assert batch.items[0].status == "pending"
        expected = "$73.50 is on its way in the payout of December 15, 2026."
        assert _both_pages(client) == (expected, expected)


def test_today_is_the_payout_date_until_its_batch_is_built(client, db, program, partner):
    with time_machine.travel(PAYOUT_DAY, tick=False):
        earn(partner, 7350)
        _details(partner)
        db.session.commit()
        assert _sentence(client.get("/partner/").get_data(as_text=True)) == "$73.50 on December 15, 2026."


def test_a_clawback_larger_than_the_balance_is_owed(client, db, program, partner):
    with time_machine.travel(NOW, tick=False):
        line = earn(partner, 1200)
        db.session.add(
            Commission(
                conversion=line.conversion,
                partner_id=partner.id,
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
        expected = (
            "None on December 15, 2026: you owe $12.00 from a refund after a payout, "
            "netted from your next earnings."
        )
        assert _both_pages(client) == (expected, expected)


def test_the_sentence_is_in_chinese_for_a_chinese_reader(client, db, program, partner):
    with time_machine.travel(NOW, tick=False):
        earn(partner, 3470)
        _details(partner)
        partner.user.locale = "zh_Hans_CN"
        db.session.commit()
        sentence = _sentence(client.get("/partner/").get_data(as_text=True))
    assert "还差 US$15.30" in sentence or "还差 $15.30" in sentence, sentence
    assert "2026年12月15日" in sentence


# --- early withdrawal ------------------------------------------------------------------


def test_early_withdrawal_is_explained_with_what_is_missing(client, db, program, partner):
    program.allow_withdrawals = True
    with time_machine.travel(NOW, tick=False):
        earn(partner, 3470)
        db.session.commit()
        page = client.get("/partner/earnings").get_data(as_text=True)
        assert 'data-testid="withdrawal"' in page
        assert "This program lets you ask for your confirmed balance before the payout date" in page
        missing = page[page.index('data-testid="withdrawal-missing"') :]
        missing = missing[: missing.index("</ul>")]
        assert "$15.30 more confirmed earnings" in missing and "add your payout details" in missing
        assert "Request my" not in page

        earn(partner, 2000)
        _details(partner)
        db.session.commit()
        assert withdrawal_of(program, partner).available
        page = client.get("/partner/earnings").get_data(as_text=True)
        assert "Request my $54.70 now" in page and 'data-testid="withdrawal-missing"' not in page


def test_no_word_of_withdrawal_when_the_program_pays_on_schedule_only(client, db, program, partner):
    program.allow_withdrawals = False
    with time_machine.travel(NOW, tick=False):
        earn(partner, 9000)
        db.session.commit()
        page = client.get("/partner/earnings").get_data(as_text=True)
    assert 'data-testid="withdrawal"' not in page and "Request my" not in page


# --- the onboarding checklist ------------------------------------------------------------


def _steps(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-testid="step-(\w+)" data-done="(yes|no)"', page))


def test_the_checklist_ticks_itself_and_goes_when_done(client, db, program, partner):
    page = client.get("/partner/").get_data(as_text=True)
    assert _steps(page) == dict.fromkeys(("payout_details", "copy_link", "grab_creative", "read_terms"), "no")
    assert "https://" in page or "http://" in page
    assert re.search(r'data-testid="partner-link"[^>]*|value="[^"]*/go/' + partner.ref_code, page)

    assert client.post("/partner/onboarding/copy_link").status_code == 204
    assert client.post("/partner/onboarding/copy_link").status_code == 204  # again: no change
    assert client.post("/partner/onboarding/nothing").status_code == 404
    assert _steps(client.get("/partner/").get_data(as_text=True))["copy_link"] == "yes"

    assert "What you earn" in client.get("/partner/terms").get_data(as_text=True)
    _details(partner)
    db.session.commit()
    steps = _steps(client.get("/partner/").get_data(as_text=True))
    assert steps == {"payout_details": "yes", "copy_link": "yes", "grab_creative": "no", "read_terms": "yes"}

    client.post("/partner/onboarding/grab_creative")
    page = client.get("/partner/").get_data(as_text=True)
    assert 'data-testid="checklist"' not in page
    db.session.refresh(partner)
    assert partner.link_copied_at and partner.creative_grabbed_at and partner.terms_read_at


def test_after_the_payout_on_its_way_the_balance_under_the_minimum_waits(client, db, program, partner):
    """The issue's case: $34.70 confirmed while an earlier payout is being sent."""
    with time_machine.travel(PAYOUT_DAY, tick=False):
        earn(partner, 8849)
        _details(partner)
        payouts.settle(program)
        earn(partner, 3470, at=utcnow())
        db.session.commit()
        page = client.get("/partner/").get_data(as_text=True)
    assert _sentence(page) == "$88.49 is on its way in the payout of December 15, 2026."
    then = re.search(r'data-testid="payout-then">([^<]*)<', page).group(1)
    assert then == "After that: None on January 15, 2027: $15.30 more to reach the $50.00 minimum."


def test_the_checklist_is_for_new_partners_only(client, db, program, partner):
    partner.status_changed_at = NOW - timedelta(days=61)
    db.session.commit()
    assert 'data-testid="checklist"' not in client.get("/partner/").get_data(as_text=True)
    partner.status_changed_at = NOW - timedelta(days=59)
    db.session.commit()
    assert 'data-testid="checklist"' in client.get("/partner/").get_data(as_text=True)
