"""The migrated schema: it matches the models, and the database itself enforces the rules."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from portal.extensions import db as _db
from portal.models import Partner, Program, User
from tests.factories import PartnerFactory, ProgramFactory, UserFactory

pytestmark = pytest.mark.postgres


def test_migrations_match_the_models(app, db):
    with app.app_context():
        context = MigrationContext.configure(db.session.connection(), opts={"compare_type": True})
        differences = compare_metadata(context, _db.metadata)
    assert differences == []


def _insert_fails(db, make) -> None:
    savepoint = db.session.begin_nested()
    with pytest.raises(sa.exc.IntegrityError):
        make()
        db.session.flush()
    savepoint.rollback()


def test_email_is_unique(db):
    UserFactory(email="same@example.org")
    _insert_fails(db, lambda: UserFactory(email="same@example.org"))


def test_email_must_be_stored_lowercase(db):
    _insert_fails(db, lambda: UserFactory(email="Upper@Example.org"))


def test_role_and_status_come_from_the_fixed_lists(db):
    _insert_fails(db, lambda: UserFactory(role="superuser"))
    _insert_fails(db, lambda: PartnerFactory(status="vip"))


def test_ref_code_is_unique_and_one_partner_per_user(db):
    first = PartnerFactory(ref_code="taken")
    _insert_fails(db, lambda: PartnerFactory(ref_code="taken"))
    _insert_fails(
        db,
        lambda: db.session.add(
            Partner(user=first.user, ref_code="other", promotion_description="x", country="US")
        ),
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"currency": "EU"},
        {"cookie_window_days": 0},
        {"hold_period_days": -1},
        {"minimum_payout_minor": -1},
        {"payout_schedule": "daily"},
        {"payout_schedule": "monthly", "payout_day": 31},
        {"payout_schedule": "weekly", "payout_day": 7},
        {"commission_type": "tiered"},
        {"commission_percent_bp": 10001},
        {"commission_flat_minor": -5},
    ],
)
def test_program_settings_are_checked_by_the_database(db, overrides):
    _insert_fails(db, lambda: ProgramFactory(**overrides))


def test_deleting_a_user_deletes_their_partner_record(db):
    partner = PartnerFactory()
    user_id = partner.user.id
    db.session.execute(sa.delete(User).where(User.id == user_id))
    db.session.expire_all()
    assert db.session.scalar(sa.select(Partner).where(Partner.user_id == user_id)) is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0


def _creative(**overrides):
    from portal.models import Creative

    values = {"kind": "text", "name": "Copy", "channels": ["seo"], "language": "en", "status": "draft"}
    creative = Creative(**{**values, **overrides})
    _db.session.add(creative)
    return creative


@pytest.mark.parametrize("overrides", [{"kind": "poster"}, {"status": "live"}, {"current_version": 0}])
def test_creative_kind_and_status_come_from_the_fixed_lists(db, overrides):
    _insert_fails(db, lambda: _creative(**overrides))


def test_creative_versions_are_numbered_once_and_files_are_whole(db):
    from portal.models import CreativeVersion

    creative = _creative()
    db.session.flush()

    def version(**overrides):
        db.session.add(CreativeVersion(creative_id=creative.id, **{"number": 1, **overrides}))

    version(body="{link}")
    db.session.flush()
    _insert_fails(db, lambda: version(body="again"))
    _insert_fails(db, lambda: version(number=2, file_key="creatives/1/a.png"))  # no size or type
    _insert_fails(db, lambda: version(number=3, file_key="k", file_type="image/png", file_size=0))
    _insert_fails(db, lambda: version(number=4, width=0, height=10))


def test_a_commission_line_is_in_at_most_one_payout(db):
    from datetime import UTC, date, datetime

    from portal.models import PayoutBatch, PayoutItem, PayoutLine
    from tests.factories import earn

    ProgramFactory()
    partner = PartnerFactory()
    line = earn(partner, 5000)
    batches = [
        PayoutBatch(
            kind="withdrawal", currency="USD", period_end=date(2026, 11, d), cutoff_at=datetime.now(UTC)
        )
        for d in (1, 2)
    ]
    items = [
        PayoutItem(batch=b, partner_id=partner.id, amount_minor=5000, currency="USD", status="pending")
        for b in batches
    ]
    db.session.add_all(items)
    db.session.flush()
    db.session.add(PayoutLine(commission_id=line.id, payout_item_id=items[0].id))
    db.session.flush()
    # The same line in a second batch's item: the primary key refuses it.
    _insert_fails(db, lambda: db.session.add(PayoutLine(commission_id=line.id, payout_item_id=items[1].id)))


def test_rewards_rules_are_checked_by_the_database(db):
    from datetime import UTC, datetime

    from portal.models import Campaign, Commission, LadderStep, Tier

    def tier(**kw):
        db.session.add(
            Tier(**({"name": "T", "rank": 1, "threshold_metric": "revenue", "threshold_value": 1} | kw))
        )

    _insert_fails(db, lambda: tier(rate_percent_bp=10001))
    _insert_fails(db, lambda: tier(period="weekly"))
    _insert_fails(db, lambda: tier(threshold_value=-1))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    _insert_fails(db, lambda: db.session.add(Campaign(name="c", starts_at=start, ends_at=start)))
    _insert_fails(
        db,
        lambda: db.session.add(
            Campaign(name="c", starts_at=start, ends_at=datetime(2026, 12, 1, tzinfo=UTC), audience="tag")
        ),
    )
    _insert_fails(db, lambda: db.session.add(LadderStep(threshold_conversions=0, bonus_minor=100)))
    partner = PartnerFactory()
    # A line without a conversion must be a month's ladder bonus (or a reversal of one).
    _insert_fails(
        db,
        lambda: db.session.add(
            Commission(
                partner_id=partner.id, kind="base", amount_minor=1, currency="USD", confirm_after=start
            )
        ),
    )
    _insert_fails(
        db,
        lambda: db.session.add(
            Commission(
                partner_id=partner.id,
                kind="base",
                amount_minor=1,
                currency="USD",
                confirm_after=start,
                period="2026-11",
            )
        ),
    )
