"""Audit: a ladder bonus already written is judged on the step it paid, not on today's ladder."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from portal.models import Commission, LadderStep
from portal.services import reward_rules, rewards, tracking
from tests.factories import UserFactory
from tests.unit.test_rewards import berlin, partner, program, sale, utc  # noqa: F401

pytestmark = pytest.mark.postgres


def _reversals(db, bonus):
    return db.session.scalars(
        sa.select(Commission).where(Commission.reverses_id == bonus.id).order_by(Commission.id)
    ).all()


@pytest.mark.parametrize(
    ("new_steps", "expected"),
    [
        ([(10, 15_000)], []),  # the 3-step is gone: November still reached the step it was paid for
        ([(3, 2_000)], []),  # the 3-step pays less now: November's bonus was earned at 50.00
    ],
)
def test_a_ladder_edit_does_not_take_back_a_closed_months_bonus(db, program, partner, new_steps, expected):  # noqa: F811
    admin = UserFactory()
    first = reward_rules.add_ladder_step(admin, 3, 5_000)
    conversions = [sale(program, partner, at=berlin(2026, 11, day, 12)) for day in range(1, 5)]
    rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
    bonus = rewards.ladder_bonus_line(partner.id, "2026-11")
    assert bonus.amount_minor == 5_000

    # December: the team changes the ladder for the months to come.
    reward_rules.delete_ladder_step(admin, first)
    for threshold, amount in new_steps:
        reward_rules.add_ladder_step(admin, threshold, amount)

    tracking.refund_conversion(conversions[0], None, None)  # 3 November sales still count
    assert [(r.amount_minor, r.reason_code) for r in _reversals(db, bonus)] == expected


def test_below_the_paid_step_the_lower_steps_still_apply(db, program, partner):  # noqa: F811
    db.session.add_all(
        [
            LadderStep(threshold_conversions=2, bonus_minor=1_000),
            LadderStep(threshold_conversions=3, bonus_minor=5_000),
        ]
    )
    db.session.flush()
    conversions = [sale(program, partner, at=berlin(2026, 11, day, 12)) for day in range(1, 4)]
    rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
    bonus = rewards.ladder_bonus_line(partner.id, "2026-11")
    tracking.refund_conversion(conversions[0], None, None)  # 2 left: the 2-step
    assert [(r.amount_minor, r.explanation["entitled_minor"]) for r in _reversals(db, bonus)] == [
        (-4_000, 1_000)
    ]
    tracking.refund_conversion(conversions[1], None, None)  # 1 left: no step
    assert sum(r.amount_minor for r in _reversals(db, bonus)) == -5_000
