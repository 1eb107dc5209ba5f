"""``stored_as_loaded``: a row just inserted, as the session would hold it after a query.

The conversion API builds every sale, its partner and its commission lines this way; the
function attaches them without ``Session.add`` (whose save-update cascade finds nothing on
a new instance), so these hold it to what ``add`` would have given."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import inspect

from portal.database import stored_as_loaded
from portal.models import Partner
from tests.factories.accounts import PartnerFactory
from tests.statements import statements_during


def test_an_object_so_built_is_persistent_clean_and_the_one_the_session_knows(db):
    stored = PartnerFactory()
    db.session.commit()
    partner_id, user_id, ref_code = stored.id, stored.user_id, stored.ref_code
    db.session.expunge_all()

    partner = stored_as_loaded(Partner, id=partner_id, user_id=user_id, ref_code=ref_code, status="approved")

    state = inspect(partner)
    assert state.persistent and not state.modified
    assert partner in db.session and not db.session.new and not db.session.dirty
    assert db.session.get(Partner, partner_id) is partner  # the identity map's, no query
    # A column left out is loaded when first read; the ones given are not read again.
    assert partner.website == stored.website
    assert partner.ref_code == ref_code


def test_a_commit_writes_nothing_for_it_and_a_change_is_flushed_as_an_update(db):
    stored = PartnerFactory()
    db.session.commit()
    partner_id, user_id, ref_code = stored.id, stored.user_id, stored.ref_code
    db.session.expunge_all()

    partner = stored_as_loaded(Partner, id=partner_id, user_id=user_id, ref_code=ref_code, status="approved")
    statements, _ = statements_during(db.engine, db.session.flush)
    assert statements == []

    partner.website = "https://changed.example"
    db.session.commit()
    db.session.expunge_all()
    assert db.session.scalar(sa.select(Partner.website).where(Partner.id == partner_id)) == (
        "https://changed.example"
    )
