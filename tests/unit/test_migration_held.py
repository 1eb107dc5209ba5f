"""Migration 0023 on a database of its own: sales waiting for their exchange rate, stored before
it, are counted as held (not accepted) in the partner day rows, as the services count them now;
down to 0022 and up again leaves the same rows, and a recount agrees."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from config import TestingConfig
from portal import create_app
from portal.extensions import db
from portal.models import ConversionStatus, PartnerDailyStat
from portal.services import rollups, tracking
from portal.services.tracking import ConversionInput
from tests.conftest import MIGRATIONS, own_postgres_database
from tests.factories import PartnerFactory, ProgramFactory


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request, tmp_path) -> str:
    """An empty database that this test alone migrates and commits to."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    return own_postgres_database("migrations")


def _partner_days() -> list[dict]:
    table = PartnerDailyStat.__table__
    rows = db.session.execute(sa.select(table).order_by(table.c.partner_id, table.c.day)).mappings()
    return [dict(row) for row in rows]


def test_0023_counts_the_sales_held_before_it_as_held(fresh_database):
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=fresh_database)
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        # Days in Chatham (13:45 ahead): 11:00 UTC on 9 November is already the 10th there.
        program = ProgramFactory(
            timezone="Pacific/Chatham", fraud_duplicate_order=False, fraud_self_referral=False
        )
        first, second = PartnerFactory(), PartnerFactory()
        db.session.flush()
        serial = iter(range(1, 100))

        def sell(partner, currency, at):
            tx = f"tx-{next(serial)}"
            data = ConversionInput(tx, 5_000, currency, ref=partner.ref_code, occurred_at=at)
            return tracking.record_conversion(program, data, {"tx": tx}, received_at=at)[0]

        sell(first, "USD", datetime(2026, 11, 9, 12, tzinfo=UTC))
        sell(first, "JPY", datetime(2026, 11, 9, 11, tzinfo=UTC))
        sell(first, "CHF", datetime(2026, 11, 8, 9, tzinfo=UTC))  # the 8th in Chatham
        sell(second, "JPY", datetime(2026, 11, 20, 12, tzinfo=UTC))
        refunded = sell(second, "JPY", datetime(2026, 11, 20, 12, tzinfo=UTC))
        tracking.refund_conversion(refunded, None, "all of it")  # rejected while held
        assert refunded.status == ConversionStatus.REJECTED
        db.session.commit()
        counted = _partner_days()
        held = [(row["partner_id"], row["day"].isoformat(), row["conversions_held"]) for row in counted]
        assert held == [
            (first.id, "2026-11-08", 1),
            (first.id, "2026-11-10", 1),
            (second.id, "2026-11-21", 1),
        ]
        db.session.remove()
        db.engine.dispose()

        downgrade(directory=MIGRATIONS, revision="0022")
        db.engine.dispose()
        columns = {column["name"] for column in sa.inspect(db.engine).get_columns("stats_partner_daily")}
        assert "conversions_held" not in columns
        db.engine.dispose()
        upgrade(directory=MIGRATIONS)
        db.engine.dispose()

        assert _partner_days() == counted  # the back-fill gives what the services wrote
        rollups.rebuild(db.session)
        assert _partner_days() == counted  # and what a recount gives
        db.session.rollback()
        db.session.remove()
        db.engine.dispose()
