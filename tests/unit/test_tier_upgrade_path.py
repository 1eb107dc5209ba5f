"""A sale that lifts its partner into a tier, decided from the counters its own probe read
(the conversion API's path): the tier row, the change and its event written in three
statements, exactly what ``set_tier`` writes; and, when an operator moved the partner after
the probe, the general way that reads the row under its lock instead."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import Conversion, OutboxEvent, PartnerTier, Tier, TierChange
from portal.services import rewards, tracking
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory
from tests.statements import reads_of, statements_during

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def _tiers(db) -> tuple[Tier, Tier]:
    silver = Tier(
        name="Silver", rank=1, rate_percent_bp=1200, threshold_metric="conversions", threshold_value=2
    )
    gold = Tier(name="Gold", rank=2, rate_percent_bp=1500, threshold_metric="conversions", threshold_value=50)
    db.session.add_all([silver, gold])
    db.session.commit()
    return silver, gold


def _sell(program, partner, transaction_id: str) -> Conversion:
    data = ConversionInput(transaction_id, 10_000, program.currency, ref=partner.ref_code)
    return tracking.record_conversion(program, data, {"transaction_id": transaction_id})[0]


def test_a_sale_that_reaches_a_tier_writes_the_row_the_change_and_its_event(db, program):
    silver, _gold = _tiers(db)
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        _sell(program, partner, "U-1")
        db.session.commit()
        seen, conversion = statements_during(db.engine, lambda: _sell(program, partner, "U-2"))
        db.session.commit()
    row = db.session.get(PartnerTier, partner.id)
    assert row.tier_id == silver.id and row.since == conversion.occurred_at
    change = db.session.scalars(sa.select(TierChange).where(TierChange.partner_id == partner.id)).one()
    assert (change.from_tier_id, change.to_tier_id, change.from_name, change.to_name) == (
        None,
        silver.id,
        None,
        "Silver",
    )
    assert change.upgrade and change.reason == "threshold_reached" and change.conversion_id == conversion.id
    assert (change.metric, change.metric_value) == ("conversions", 2)
    event = db.session.scalars(sa.select(OutboxEvent).where(OutboxEvent.type == "partner.tier_changed")).one()
    assert event.partner_id == partner.id
    assert event.data == {
        "partner_id": partner.id,
        "change_id": change.id,
        "from_tier": None,
        "to_tier": "Silver",
        "to_tier_id": silver.id,
        "upgrade": True,
    }
    # The sale earned the new tier's rate itself.
    assert sum(line.amount_minor for line in conversion.commissions) == 1_200
    # The upgrade's own writes: the tier row's upsert, the change, the event; no read of the
    # partner, their tier row or the tier.
    assert reads_of(seen, "partner_tiers") == []
    assert reads_of(seen, "tiers") == []
    assert len([sql for sql in seen if sql.startswith("INSERT INTO partner_tiers")]) == 1


def test_an_upgrade_from_a_tier_the_partner_holds_moves_the_row(db, program):
    silver, gold = _tiers(db)
    gold.threshold_value = 3
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        for number in range(1, 4):
            _sell(program, partner, f"M-{number}")
            db.session.commit()
    assert db.session.get(PartnerTier, partner.id).tier_id == gold.id
    changes = db.session.scalars(
        sa.select(TierChange).where(TierChange.partner_id == partner.id).order_by(TierChange.id)
    ).all()
    assert [(c.from_name, c.to_name) for c in changes] == [(None, "Silver"), ("Silver", "Gold")]
    assert changes[1].from_tier_id == silver.id


def test_when_an_operator_moved_the_partner_after_the_probe_the_sale_does_not_overwrite_it(db, program):
    _silver, gold = _tiers(db)
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        _sell(program, partner, "O-1")
        db.session.commit()
        # The second sale's probe reads "no tier"; then an operator's Gold lands before it writes.
        data = ConversionInput("O-2", 10_000, program.currency, ref=partner.ref_code)
        prepared = tracking.prepare_conversion(program, data, {"transaction_id": "O-2"})
        facts = prepared.probe.fetch()
        assert facts.tier_id is None
        db.session.add(PartnerTier(partner_id=partner.id, tier_id=gold.id, since=NOW))
        db.session.flush()
        conversion = prepared.conversion
        db.session.add(conversion)
        db.session.flush()
        upgrade = rewards.upgrade_on_conversion(program, conversion, facts)
        db.session.commit()
    assert upgrade.change is None  # no move: Gold is above what the sale reached
    assert upgrade.tier.id == gold.id
    assert db.session.get(PartnerTier, partner.id).tier_id == gold.id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TierChange)) == 0
