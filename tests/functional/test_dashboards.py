"""The partner and operator dashboards and their CSV exports, through the test client."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import PartnerStatus, Role, Thread
from portal.services import tracking
from portal.services.links import create_link
from tests.factories import PartnerFactory, at_noon, sale, store_clicks

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 15, 10, 0, tzinfo=UTC)
TODAY = date(2026, 3, 15)


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def figure(page: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}">([^<]*)<', page)
    assert match, f"no {testid} on the page"
    return match.group(1)


def rows_of(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "a table for people starts with the UTF-8 mark"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def test_partner_dashboard_shows_the_chosen_period(client, db, program, login_as):
    partner = login_as(Role.PARTNER).partner
    link = create_link(partner, program, label="Trail blog", channel="seo", campaign="spring")
    clicked = store_clicks(db, partner, TODAY, 3, link)
    store_clicks(db, partner, TODAY - timedelta(days=20), 4)
    sale(db, program, partner, TODAY, amount=20_000, click_id=clicked[0])
    store_clicks(db, PartnerFactory(), TODAY, 50)  # someone else's
    db.session.commit()

    page = client.get("/partner/").get_data(as_text=True)
    assert figure(page, "fig-clicks") == "7"
    assert figure(page, "fig-conversions") == "1"
    assert figure(page, "fig-rate") == "14.29%"
    assert figure(page, "fig-commission") == "$20.00"
    assert figure(page, "fig-epc") == "$2.86"
    assert figure(page, "balance-pending") == "$20.00"
    assert "Trail blog" in page
    assert 'data-testid="activity"' in page
    assert "Feb 14, 2026 to Mar 15, 2026" in page  # the last 30 days, in the program's zone

    page = client.get("/partner/?range=7d").get_data(as_text=True)
    assert figure(page, "fig-clicks") == "3"


def test_a_bad_period_says_why_and_shows_the_default(client, db, program, login_as):
    login_as(Role.PARTNER)
    page = client.get("/partner/?range=custom&start=2026-03-10&end=2026-03-01").get_data(as_text=True)
    assert "The last day cannot be before the first." in page
    assert "Feb 14, 2026 to Mar 15, 2026" in page
    page = client.get("/partner/?range=custom&start=2020-01-01&end=2026-03-01").get_data(as_text=True)
    assert "Choose at most 731 days." in page
    page = client.get("/partner/?range=forever").get_data(as_text=True)
    assert "Not a valid choice" in page
    page = client.get("/partner/?range=custom&start=2026-01-01&end=2026-01-31").get_data(as_text=True)
    assert "Jan 1, 2026 to Jan 31, 2026" in page


def test_the_live_fragment_is_the_dashboard_alone(client, db, program, login_as):
    login_as(Role.PARTNER)
    response = client.get("/partner/?range=7d", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="dashboard"')
    assert "<html" not in body
    # It re-fetches the same period when the socket says something changed.
    assert 'hx-get="/partner/?range=7d"' in body
    assert "portal:stats from:body" in body


def test_partner_csv_exports_are_their_own(client, db, program, login_as):
    partner = login_as(Role.PARTNER).partner
    store_clicks(db, partner, TODAY, 2)
    other = PartnerFactory()
    other_link = create_link(other, program, label="Not yours", channel="ads")
    store_clicks(db, other, TODAY, 9, other_link)
    db.session.commit()
    response = client.get("/partner/stats/link.csv?range=7d")
    assert response.mimetype == "text/csv"
    assert f"link-{partner.ref_code}-2026-03-09-2026-03-15.csv" in response.headers["Content-Disposition"]
    rows = rows_of(response.data)
    assert rows[0][:3] == ["Link", "Link code", "Clicks"]
    assert [row[:3] for row in rows[1:]] == [["Your partner-code link", partner.ref_code, "2"]]
    daily = rows_of(client.get("/partner/stats/daily.csv?range=7d").data)
    assert len(daily) == 8 and daily[-1][0] == "2026-03-15" and daily[-1][2] == "2"
    assert client.get("/partner/stats/secrets.csv").status_code == 404


def test_operator_dashboard_queues_trends_and_leaders(client, db, program, login_as):
    login_as(Role.MANAGER)
    PartnerFactory(status=PartnerStatus.APPLIED)
    star = PartnerFactory(user__name="Star Partner")
    link = create_link(star, program, label="Video", channel="video")
    store_clicks(db, star, TODAY - timedelta(days=2), 8, link, creative_id=31)
    sale(db, program, star, TODAY - timedelta(days=2), amount=50_000)
    fading = PartnerFactory(user__name="Fading Partner", user__email="fading@example.org")
    store_clicks(db, fading, TODAY - timedelta(days=45), 12)
    store_clicks(db, fading, TODAY - timedelta(days=25), 1)
    db.session.commit()

    page = client.get("/admin/").get_data(as_text=True)
    assert figure(page, "applications-count") == "1"
    assert figure(page, "review-count") == "0"
    assert figure(page, "fig-clicks") == "9"
    assert figure(page, "fig-sales") == "$500.00"
    assert figure(page, "at-risk-count") == "1"
    risk = page[page.index('data-testid="at-risk"') :]
    assert "Fading Partner" in risk
    assert "clicks fell by half or more" in risk
    assert "no click in 21 days" in risk
    assert f'href="/admin/partners/{fading.id}"' in risk
    # "Message" opens a new conversation with that partner in the inbox, subject filled in.
    message = f'href="/admin/inbox/new/{fading.id}?subject=How+are+things+going+with+Test+Outdoor?"'
    assert message in risk
    top = page[page.index('data-testid="top-partners"') :]
    assert top.index("Star Partner") < top.index("</table>")
    assert "Creative #31 (not in the library)" in page


def test_operator_csv_exports(client, db, program, login_as):
    login_as(Role.ADMIN)
    quiet = PartnerFactory(user__name="Quiet One", status_changed_at=at_noon(TODAY - timedelta(days=40)))
    tracking.record_signup(program, tracking.SignupInput("c-1", ref=quiet.ref_code), {"c": 1})
    db.session.commit()
    rows = rows_of(client.get("/admin/stats/at_risk.csv").data)
    assert rows[0][0] == "Partner"
    assert rows[1][0] == "Quiet One" and rows[1][-1] == "never_clicked"
    for table in ("daily", "top_partners", "rising", "falling", "channels", "creatives"):
        response = client.get(f"/admin/stats/{table}.csv?range=last_month")
        assert response.status_code == 200, table
        assert "2026-02-01-2026-02-28" in response.headers["Content-Disposition"]


def test_message_from_the_risk_list_starts_a_thread_in_the_inbox(client, db, program, login_as):
    login_as(Role.MANAGER)
    fading = PartnerFactory(user__name="Fading Partner")
    db.session.commit()
    page = client.get(f"/admin/inbox/new/{fading.id}?subject=How+are+things%3F").get_data(as_text=True)
    assert "New message to Fading Partner" in page
    assert 'value="How are things?"' in page

    # Nothing typed in the body: the error is on the field, the subject stays as typed.
    response = client.post(f"/admin/inbox/new/{fading.id}", data={"subject": "How are things?", "body": ""})
    assert response.status_code == 422
    assert 'value="How are things?"' in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 0

    response = client.post(
        f"/admin/inbox/new/{fading.id}", data={"subject": "How are things?", "body": "Anything we can do?"}
    )
    thread = db.session.scalars(sa.select(Thread)).one()
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/admin/inbox/{thread.id}")
    assert (thread.partner_id, thread.subject) == (fading.id, "How are things?")
    assert client.get("/admin/inbox/new/999999").status_code == 404
