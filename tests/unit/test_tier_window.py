"""A tier change stores its window as a code and says it in the reader's language."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask_babel import force_locale

from portal.models import PartnerTier, Tier
from portal.services import rewards
from portal.services.rewards import window_words
from tests.factories import PartnerFactory, ProgramFactory

ZH = "zh_Hans_CN"


@pytest.mark.parametrize(
    ("window", "english", "chinese"),
    [
        ("2026-11", "November 2026", "2026年11月"),
        ("30d", "the last 30 days", "最近 30 天"),
        ("90d:2026-11", "the 90 days to the end of November 2026", "截至 2026年11月底的 90 天"),
        # As changes written before the code stored it: the same words.
        ("rolling_30 to 2026-11", "the 30 days to the end of November 2026", "截至 2026年11月底的 30 天"),
        (None, "", ""),
    ],
)
def test_window_words(app, window, english, chinese):
    with app.test_request_context(), force_locale("en"):
        assert window_words(window) == english
    with app.test_request_context(), force_locale(ZH):
        assert window_words(window) == chinese


def test_a_month_close_downgrade_reads_in_the_partners_language(db):
    program = ProgramFactory(timezone="Europe/Berlin")
    partner = PartnerFactory(user__locale=ZH)
    silver = Tier(name="Silver", rank=1, rate_type="percent", rate_percent_bp=1500, rate_flat_minor=0,
                  threshold_metric="conversions", threshold_value=2, period="rolling_30")  # fmt: skip
    db.session.add(silver)
    db.session.flush()
    db.session.add(
        PartnerTier(partner_id=partner.id, tier_id=silver.id, since=datetime(2026, 10, 1, tzinfo=UTC))
    )
    db.session.flush()

    # No sale in the 30 days to the end of November: the close moves the partner down.
    report = rewards.close_month(program, "2026-11", now=datetime(2026, 12, 1, 1, tzinfo=UTC))
    assert report.downgrades == 1
    change = rewards.tier_history(partner.id)[0]
    assert change.window == "30d:2026-11"  # stored as a code, never as English words
    with force_locale(ZH):
        words = rewards.describe_tier_change(change, program)
    assert words == "截至 2026年11月底的 30 天 期间为 0 笔转化，低于该等级的门槛。"
    with force_locale("en"):
        words = rewards.describe_tier_change(change, program)
    assert words == "0 conversions over the 30 days to the end of November 2026, below the tier's threshold."
