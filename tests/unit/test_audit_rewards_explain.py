"""Audit: the partner's "why this amount" of a refund line accounts for the line's own amount."""

from __future__ import annotations

import pytest
from flask_babel import force_locale

from portal.services import rewards, tracking
from tests.unit.test_rewards import only_rate_line, partner, program, sale  # noqa: F401

pytestmark = pytest.mark.postgres


def test_a_second_partial_refund_explains_what_this_line_takes_back(app, db, program, partner):  # noqa: F811
    conversion = sale(program, partner, amount=10_000)  # 10 % of 100.00: 10.00
    assert only_rate_line(conversion).amount_minor == 1_000
    tracking.refund_conversion(conversion, 3_000, None)
    tracking.refund_conversion(conversion, 2_000, None)  # 50.00 refunded in all
    first, second = sorted(
        (line for line in conversion.commissions if line.kind == "reversal"), key=lambda line: line.id
    )
    assert (first.amount_minor, second.amount_minor) == (-300, -200)

    with app.test_request_context(), force_locale("en"):
        assert rewards.explain(first) == (
            "$30.00 of the $100.00 sale was refunded, so the same share of the commission is taken back."
        )
        words = rewards.explain(second)
    # The line takes back 2.00: half of 10.00 in all, less the 3.00 taken back before.
    assert "$2.00" in words and "$5.00" in words and "$3.00" in words, words
