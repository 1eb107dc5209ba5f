"""``flask portal add-coupon CODE --partner REF_CODE``."""

import sqlalchemy as sa

from portal.models import Coupon, CouponStatus, PartnerStatus
from tests.factories import PartnerFactory


def test_add_coupon_gives_the_partner_an_active_code(runner, db, program):
    partner = PartnerFactory(ref_code="pat")
    db.session.commit()
    result = runner.invoke(args=["portal", "add-coupon", "pat-summer", "--partner", "PAT"])
    assert result.exit_code == 0, result.output
    assert "Coupon code PAT-SUMMER added for partner pat." in result.output
    coupon = db.session.scalars(sa.select(Coupon)).one()
    assert (coupon.code, coupon.status, coupon.partner_id) == ("PAT-SUMMER", CouponStatus.ACTIVE, partner.id)


def test_add_coupon_refuses_a_taken_code_an_unknown_partner_and_a_bad_shape(runner, db, program):
    PartnerFactory(ref_code="pat")
    PartnerFactory(ref_code="applicant", status=PartnerStatus.APPLIED)
    db.session.commit()
    assert runner.invoke(args=["portal", "add-coupon", "PAT10", "--partner", "pat"]).exit_code == 0
    taken = runner.invoke(args=["portal", "add-coupon", "pat10", "--partner", "pat"])
    assert taken.exit_code == 1 and "already taken" in taken.output
    unknown = runner.invoke(args=["portal", "add-coupon", "NEW10", "--partner", "nobody"])
    assert unknown.exit_code == 1 and "No partner has the ref code" in unknown.output
    bad = runner.invoke(args=["portal", "add-coupon", "no spaces", "--partner", "pat"])
    assert bad.exit_code == 1 and "A coupon code is 3-40" in bad.output
    applied = runner.invoke(args=["portal", "add-coupon", "APP10", "--partner", "applicant"])
    assert applied.exit_code == 1 and "Only approved partners" in applied.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Coupon)) == 1
