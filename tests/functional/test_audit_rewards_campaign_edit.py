"""Audit: a campaign whose instants are not whole minutes (ended with the button, or approved
from a partner's request at "now") round-trips through its edit form unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from pprint import pformat

import pytest
import time_machine

from portal.models import Role
from portal.services import reward_rules
from portal.services.reward_rules import CampaignInput, RateInput
from tests.functional.test_edit_roundtrip import audit_count, changes, snapshot, submit_unchanged

STARTED = datetime(2030, 3, 1, 9, 0)  # Berlin wall clock, as typed
ENDED = datetime(2030, 3, 14, 10, 15, 42, 123456, tzinfo=UTC)  # the "End now" button, mid-minute
VIEWED = datetime(2030, 3, 14, 23, 30, tzinfo=UTC)


def _ended_with_the_button(program, admin):
    data = CampaignInput(
        name="Spring",
        starts_local=STARTED,
        ends_local=datetime(2030, 4, 1),
        rate=RateInput("percent", 2000, 0),
    )
    campaign = reward_rules.save_campaign(program, admin, data)
    reward_rules.end_campaign(admin, campaign, now=ENDED)
    return campaign


def _started_at_an_instant(program, admin):
    # What approving a partner's campaign request saves: it starts at the approval's instant.
    data = CampaignInput(
        name="Custom",
        starts_local=datetime(2030, 3, 14, 11, 15, 42, 123456),
        ends_local=datetime(2031, 3, 14, 11, 15, 42, 123456),
        rate=RateInput("percent", 2000, 0),
    )
    return reward_rules.save_campaign(program, admin, data)


@pytest.mark.postgres
@pytest.mark.parametrize("make", [_ended_with_the_button, _started_at_an_instant])
def test_an_unchanged_campaign_form_keeps_its_instants(client, db, program, login_as, make):
    program.timezone = "Europe/Berlin"
    with time_machine.travel(VIEWED, tick=False):
        admin = login_as(Role.ADMIN)
        campaign = make(program, admin)
        db.session.commit()
        starts_at, ends_at = campaign.starts_at, campaign.ends_at
        url = f"/admin/rewards/campaigns/{campaign.id}"
        db.session.expire_all()
        before, audited = snapshot(), audit_count()

        assert submit_unchanged(client, url, url).status_code == 302

        db.session.expire_all()
        assert (campaign.starts_at, campaign.ends_at) == (starts_at, ends_at)
        diff = changes(before, snapshot())
        assert not diff, pformat(diff, width=200)
        assert audit_count() == audited


@pytest.mark.postgres
def test_a_changed_minute_is_still_saved(client, db, program, login_as):
    """Only the minute the form showed, sent back, keeps the stored instant; another is saved."""
    program.timezone = "Europe/Berlin"
    with time_machine.travel(VIEWED, tick=False):
        admin = login_as(Role.ADMIN)
        campaign = _started_at_an_instant(program, admin)
        data = CampaignInput(
            name="Custom",
            starts_local=datetime(2030, 3, 14, 11, 16),
            ends_local=datetime(2031, 3, 14, 11, 14),
            rate=RateInput("percent", 2000, 0),
        )
        reward_rules.save_campaign(program, admin, data, campaign)
        assert campaign.starts_at == datetime(2030, 3, 14, 10, 16, tzinfo=UTC)
        assert campaign.ends_at == datetime(2031, 3, 14, 10, 14, tzinfo=UTC)
