"""Custom campaign requests through the pages: forms, refusals, scoping, the team's queue."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from portal.models import AuditEvent, Campaign, CampaignRequest, RequestStatus, Role, Thread
from portal.services import campaign_requests as requests
from portal.services.partners import set_partner_tags
from tests.factories import PartnerFactory, UserFactory

GOOD = {
    "name": "Winter boots guide",
    "landing_url": "https://shop.example/boots",
    "desired_rate": "14.5",
    "expected_monthly_conversions": "25",
    "note": "Pinned post for the season.",
}


def _make_top(partner, program):
    set_partner_tags(partner, UserFactory(role=Role.MANAGER), [program.top_partner_tag])


@pytest.fixture
def top_user(db, program, login_as):
    user = login_as(Role.PARTNER)
    _make_top(user.partner, program)
    db.session.commit()
    return user


def _saved(db) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(CampaignRequest))


def _someone_elses_request(db, program) -> CampaignRequest:
    other = PartnerFactory()
    _make_top(other, program)
    found = requests.submit_request(
        other,
        program,
        requests.RequestInput("Their secret campaign", "https://shop.example/theirs", 2000, 5),
    )
    db.session.commit()
    return found


def test_an_eligible_partner_asks_from_the_rewards_page(client, db, program, top_user):
    page = client.get("/partner/rewards").get_data(as_text=True)
    assert "Ask for a custom campaign" in page and 'name="landing_url"' in page

    response = client.post("/partner/rewards/requests", data=GOOD)
    assert response.status_code == 302
    found = db.session.scalars(sa.select(CampaignRequest)).one()
    assert response.location.endswith(f"/partner/rewards/requests/{found.id}")
    assert (found.partner_id, found.desired_percent_bp, found.expected_monthly_conversions) == (
        top_user.partner.id,
        1450,
        25,
    )
    detail = client.get(response.location).get_data(as_text=True)
    assert "waiting for the team" in detail and "14.5% of each sale" in detail
    assert "Pinned post for the season." in detail  # the conversation, on the same page
    listing = client.get("/partner/rewards").get_data(as_text=True)
    assert "Winter boots guide" in listing and "waiting for the team" in listing
    assert client.get(f"/partner/inbox/{found.thread_id}").status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"landing_url": "https://evil.example/boots"}, "must be on the program&#39;s sites: shop.example"),
        ({"desired_rate": "150"}, "A rate cannot be over 100 %."),
        ({"desired_rate": "12.345"}, "Enter a percent such as 12.5"),
        ({"desired_rate": "lots"}, "Enter a percent such as 12.5"),
        ({"desired_rate": ""}, "Enter a rate in percent"),
        ({"name": ""}, "Name the campaign."),
        ({"expected_monthly_conversions": "-3"}, "how many sales a month"),
    ],
)
def test_bad_input_is_refused_keeps_what_was_typed_and_saves_nothing(
    client, db, program, top_user, overrides, message
):
    response = client.post("/partner/rewards/requests", data={**GOOD, **overrides})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in page
    if "name" not in overrides:
        assert 'value="Winter boots guide"' in page
    assert "Pinned post for the season." in page
    assert _saved(db) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 0


def test_a_partner_who_is_not_a_top_partner_gets_no_form_and_cannot_post(client, db, program, login_as):
    login_as(Role.PARTNER)
    page = client.get("/partner/rewards").get_data(as_text=True)
    assert 'data-testid="not-eligible"' in page and 'name="landing_url"' not in page
    response = client.post("/partner/rewards/requests", data=GOOD)
    assert response.status_code == 422
    assert "Custom campaigns are for top partners" in response.get_data(as_text=True)
    assert _saved(db) == 0


def test_a_partner_sees_and_touches_only_their_own_requests(client, db, program, top_user):
    theirs = _someone_elses_request(db, program)
    assert "Their secret campaign" not in client.get("/partner/rewards").get_data(as_text=True)
    assert client.get(f"/partner/rewards/requests/{theirs.id}").status_code == 404
    for action in ("accept", "decline", "withdraw"):
        assert client.post(f"/partner/rewards/requests/{theirs.id}/{action}").status_code == 404
    db.session.refresh(theirs)
    assert theirs.status == RequestStatus.REQUESTED


def test_counter_offer_accept_and_refusals_through_the_pages(client, db, program, login_as):
    partner_user = login_as(Role.PARTNER)
    _make_top(partner_user.partner, program)
    db.session.commit()
    assert client.post("/partner/rewards/requests", data=GOOD).status_code == 302
    found = db.session.scalars(sa.select(CampaignRequest)).one()

    manager = login_as(Role.MANAGER)
    queue = client.get("/admin/campaign-requests").get_data(as_text=True)
    assert "Winter boots guide" in queue and "new — waiting for the team" in queue
    assert "1 request waiting for the team" in queue

    # a bad counter-offer: the field says why, nothing changes
    response = client.post(f"/admin/campaign-requests/{found.id}/counter", data={"rate": "101", "note": "x"})
    assert response.status_code == 422
    assert "A rate cannot be over 100 %." in response.get_data(as_text=True)
    db.session.refresh(found)
    assert found.status == RequestStatus.REQUESTED

    response = client.post(
        f"/admin/campaign-requests/{found.id}/counter", data={"rate": "12", "note": "Start here."}
    )
    assert response.status_code == 302
    db.session.refresh(found)
    assert (found.status, found.counter_percent_bp, found.decided_by_id) == (
        RequestStatus.COUNTERED,
        1200,
        manager.id,
    )

    # approving now is the wrong state: refused in words, nothing made
    response = client.post(f"/admin/campaign-requests/{found.id}/approve")
    assert response.status_code == 409
    assert "waiting for the partner&#39;s answer" in response.get_data(as_text=True)

    # the partner answers
    with client.session_transaction() as session:
        session["_user_id"] = partner_user.get_id()
    page = client.get("/partner/rewards").get_data(as_text=True)
    assert "counter-offer — waiting for your answer" in page and "Accept 12% of each sale" in page
    response = client.post(f"/partner/rewards/requests/{found.id}/accept")
    assert response.status_code == 302
    db.session.refresh(found)
    assert found.status == RequestStatus.APPROVED
    assert found.campaign.rate_percent_bp == 1200
    detail = client.get(f"/partner/rewards/requests/{found.id}").get_data(as_text=True)
    assert "approved — your campaign link is ready" in detail
    code = requests.request_link(found).code
    assert f"http://portal.test/go/{code}" in detail
    assert re.search(r"Earns 12% of each sale on sales through this link until", detail)

    # accepting twice: refused, still one campaign
    response = client.post(f"/partner/rewards/requests/{found.id}/accept")
    assert response.status_code == 409
    assert "already approved" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 1
    assert db.session.scalars(
        sa.select(AuditEvent.action).where(AuditEvent.action.like("campaign_request.%"))
    ).all() == [
        "campaign_request.countered",
        "campaign_request.approved",
    ]


def test_the_team_approves_or_declines_from_the_console(client, db, program, login_as):
    first = _someone_elses_request(db, program)
    second = _someone_elses_request(db, program)
    login_as(Role.MANAGER)
    page = client.get(f"/admin/campaign-requests/{first.id}").get_data(as_text=True)
    assert "Approve at the rate asked" in page and "20% of each sale" in page

    assert client.post(f"/admin/campaign-requests/{first.id}/approve").status_code == 302
    db.session.refresh(first)
    assert first.status == RequestStatus.APPROVED and first.campaign.rate_percent_bp == 2000
    again = client.post(f"/admin/campaign-requests/{first.id}/approve")
    assert again.status_code == 409 and "already approved" in again.get_data(as_text=True)

    response = client.post(f"/admin/campaign-requests/{second.id}/decline", data={"reason": ""})
    assert response.status_code == 422 and "Say why, so the partner knows." in response.get_data(as_text=True)
    assert (
        client.post(
            f"/admin/campaign-requests/{second.id}/decline", data={"reason": "Not this season."}
        ).status_code
        == 302
    )
    db.session.refresh(second)
    assert (second.status, second.decline_reason) == (RequestStatus.DECLINED, "Not this season.")

    open_queue = client.get("/admin/campaign-requests").get_data(as_text=True)
    assert "Their secret campaign" not in open_queue
    assert "No request is waiting for the team." in open_queue
    everything = client.get("/admin/campaign-requests?status=all").get_data(as_text=True)
    assert everything.count("Their secret campaign") == 2 and "declined" in everything


def test_the_partner_declines_or_withdraws(client, db, program, top_user):
    client.post("/partner/rewards/requests", data=GOOD)
    client.post("/partner/rewards/requests", data={**GOOD, "name": "Second idea"})
    first, second = db.session.scalars(sa.select(CampaignRequest).order_by(CampaignRequest.id)).all()
    requests.counter_offer(first, UserFactory(role=Role.MANAGER), program, 900, None)
    db.session.commit()
    response = client.post(f"/partner/rewards/requests/{first.id}/decline", data={"note": "Too low."})
    assert response.status_code == 302
    db.session.refresh(first)
    assert (first.status, first.declined_by) == (RequestStatus.DECLINED, "partner")
    assert client.post(f"/partner/rewards/requests/{second.id}/withdraw").status_code == 302
    db.session.refresh(second)
    assert second.status == RequestStatus.WITHDRAWN
    page = client.get("/partner/rewards").get_data(as_text=True)
    assert "closed — you declined the counter-offer" in page and "withdrawn by you" in page


def test_the_request_thread_points_both_sides_to_the_request(client, db, program, top_user, login_as):
    client.post("/partner/rewards/requests", data=GOOD)
    found = db.session.scalars(sa.select(CampaignRequest)).one()
    page = client.get(f"/partner/inbox/{found.thread_id}").get_data(as_text=True)
    assert "This conversation is about your custom campaign request." in page
    assert f'href="/partner/rewards/requests/{found.id}"' in page
    login_as(Role.MANAGER)
    page = client.get(f"/admin/inbox/{found.thread_id}").get_data(as_text=True)
    assert f'href="/admin/campaign-requests/{found.id}"' in page
