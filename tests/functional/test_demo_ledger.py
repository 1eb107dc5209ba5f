"""The demo program's books hold on each database the portal runs on (issue #12: check-ledger
reports 0 violations on the demo database)."""

import pytest
import sqlalchemy as sa

from portal.models import Commission, Conversion
from portal.services.ledger import check_ledger


@pytest.mark.postgres
def test_the_demo_database_has_zero_ledger_violations(database_backend, runner, db):
    seeded = runner.invoke(args=["portal", "demo"])
    assert seeded.exit_code == 0, seeded.output
    assert "check-ledger: 0 violations" in seeded.output
    # The demo has money in it to check, and the check itself, run again, finds nothing.
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) > 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Commission)) > 0
    assert check_ledger() == []
    command = runner.invoke(args=["portal", "check-ledger"])
    assert command.exit_code == 0, command.output
    assert "check-ledger: 0 violations" in command.output
