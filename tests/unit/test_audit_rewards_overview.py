"""Audit: the partner's "how far to the next tier" reads the window the upgrade reads."""

from __future__ import annotations

import pytest
from flask_babel import force_locale

from portal.services import rewards
from portal.services.rewards_overview import rewards_overview
from tests.unit.test_rewards import berlin, only_rate_line, partner, program, sale, tier  # noqa: F401

pytestmark = pytest.mark.postgres


def test_rolling_progress_counts_the_whole_days_the_upgrade_counts(app, db, program, partner):  # noqa: F811
    """A rolling tier counts the sale's day and the 29 before it, whole days in the program's
    zone. A sale late on the 31st day back is outside that window; the Rewards page must not
    count it, or it promises an upgrade the next sale does not give."""
    tier(db, name="Silver", threshold=3, period="rolling_30")
    sale(program, partner, at=berlin(2026, 10, 11, 22))  # 30 days before Nov 10, late in the day
    sale(program, partner, at=berlin(2026, 11, 1, 12))
    now = berlin(2026, 11, 10, 9)

    with app.test_request_context(), force_locale("en"):
        overview = rewards_overview(partner, program, now=now)
    assert overview.next_tier.value == 1
    assert "1 sale of the 3 sales" in overview.next_tier.words

    # And indeed: the next sale (2 in the window) does not reach Silver.
    line = only_rate_line(sale(program, partner, at=berlin(2026, 11, 10, 10)))
    assert line.kind == "base"
    assert rewards.current_tier(partner.id) is None
