"""Audit point: a withdrawal passing the minimum on lines of an old currency. Not reachable:
the program's currency cannot change once there is a sale, and no commission line exists
without one (the table's CHECK: a line has a sale, or is a ladder bonus, counted from sales,
or corrects another line)."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from portal.errors import InvalidSetting
from portal.extensions import db as _db
from portal.models import Commission, CommissionKind, CommissionStatus
from portal.services.program import settings_of, update_program_settings
from tests.factories import PartnerFactory, UserFactory, earn

# Money tests: `make test` runs them again with the clock pinned (marker ``money``).
pytestmark = [pytest.mark.postgres, pytest.mark.money]


def test_the_currency_cannot_change_once_a_line_exists(db, program):
    admin = UserFactory(role="admin")
    earn(PartnerFactory(), 2500, at=datetime(2026, 9, 1, tzinfo=UTC))
    db.session.flush()
    other = "EUR" if program.currency != "EUR" else "USD"
    with pytest.raises(InvalidSetting) as refused:
        update_program_settings(program, admin, replace(settings_of(program), currency=other))
    assert refused.value.field == "currency"
    assert {line.currency for line in db.session.scalars(sa.select(Commission))} == {program.currency}


def test_no_line_can_exist_without_a_sale_a_ladder_month_or_a_line_it_corrects(db, program):
    partner = PartnerFactory()
    db.session.flush()
    with pytest.raises(sa.exc.IntegrityError), _db.session.begin_nested():
        _db.session.add(
            Commission(
                partner_id=partner.id,
                kind=CommissionKind.BASE,
                amount_minor=100,
                currency=program.currency,
                status=CommissionStatus.CONFIRMED,
                confirm_after=datetime(2026, 9, 1, tzinfo=UTC),
            )
        )
        _db.session.flush()
