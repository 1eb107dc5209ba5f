"""Audit: the maximum sale applies to a held foreign sale's converted amount too."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import Commission, Conversion, ExchangeRate
from portal.models.types import utcnow
from portal.services import tracking
from portal.services.ledger import check_ledger
from portal.services.program import get_program

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


def test_a_held_sale_above_the_maximum_once_converted_earns_nothing(db, api, program):
    program.max_sale_minor = 10_000  # $100.00
    db.session.commit()
    held = api.sale("jp-big", "2000000", "JPY")  # ¥2,000,000: no rate yet, so nothing to compare
    assert held.status_code == 201
    assert held.json["conversion"]["status"] == "held"

    db.session.add(
        ExchangeRate(
            base="JPY", quote="USD", day=NOW.date(), rate="0.0066", source="ecb", created_at=utcnow()
        )
    )
    assert tracking.convert_waiting(get_program()) == 1
    db.session.commit()

    conversion = db.session.scalars(sa.select(Conversion)).one()
    assert conversion.amount_minor == 1_320_000  # $13,200.00, the rate is kept
    assert (conversion.status, conversion.rejection_reason) == ("rejected", "other")
    assert "maximum sale" in conversion.rejection_note
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Commission)) == 0
    assert check_ledger() == []


def test_a_held_sale_within_the_maximum_still_earns_once_converted(db, api, program):
    program.max_sale_minor = 10_000
    db.session.commit()
    assert api.sale("jp-small", "10000", "JPY").json["conversion"]["status"] == "held"
    db.session.add(
        ExchangeRate(
            base="JPY", quote="USD", day=NOW.date(), rate="0.0066", source="ecb", created_at=utcnow()
        )
    )
    tracking.convert_waiting(get_program())
    db.session.commit()

    conversion = db.session.scalars(sa.select(Conversion)).one()
    assert (conversion.status, conversion.amount_minor) == ("pending", 6_600)
    assert db.session.scalar(sa.select(sa.func.sum(Commission.amount_minor))) == 660
