"""The console's exchange rates page: a rate by hand, the ECB's file, what is wrong, and the
held sales it converts; both amounts on the operator's and the partner's pages."""

import io
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import Conversion, ConversionStatus, ExchangeRate, Role
from portal.services import tracking
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def held(db, program):
    partner = PartnerFactory(ref_code="pat")
    db.session.flush()
    data = ConversionInput("jp-1", 20_000, "JPY", ref="pat")
    conversion, _created = tracking.record_conversion(program, data, {"transaction_id": "jp-1"})
    db.session.commit()
    assert conversion.status == ConversionStatus.HELD
    return partner, conversion


def _rates(db):
    db.session.expire_all()
    return {(r.base, r.quote, r.day.isoformat()): r.rate for r in db.session.scalars(sa.select(ExchangeRate))}


def test_a_rate_typed_by_hand_converts_the_held_sale(client, db, login_as, held):
    _partner, conversion = held
    login_as(Role.MANAGER)
    page = client.get("/admin/rates").get_data(as_text=True)
    assert "1 sale is held: no exchange rate" in page
    response = client.post(
        "/admin/rates", data={"base": "jpy", "rate": "0.00667", "quote": "USD", "day": "2026-11-20"}
    )
    assert response.status_code == 302
    assert _rates(db) == {("JPY", "USD", "2026-11-20"): "0.00667"}
    page = client.get("/admin/rates").get_data(as_text=True)
    assert "Saved: 1 JPY = 0.00667 USD on 2026-11-20." in page
    assert "1 sale that was waiting for a rate is converted." in page
    assert "None: every sale in another currency has been converted." in page
    stored = db.session.get(Conversion, conversion.id)
    assert (stored.status, stored.amount_minor) == (ConversionStatus.PENDING, 13_340)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"base": "XAU", "rate": "1.2", "quote": "USD", "day": "2026-11-20"}, "base", "ISO 4217"),
        ({"base": "EUR", "rate": "1,2", "quote": "USD", "day": "2026-11-20"}, "rate", "plain decimal"),
        ({"base": "EUR", "rate": "0", "quote": "USD", "day": "2026-11-20"}, "rate", "plain decimal"),
        ({"base": "USD", "rate": "1.2", "quote": "USD", "day": "2026-11-20"}, "quote", "two different"),
        ({"base": "EUR", "rate": "1.2", "quote": "USD", "day": "2026-12-25"}, "day", "future"),
        ({"base": "EUR", "rate": "", "quote": "USD", "day": "2026-11-20"}, "rate", "Enter the rate."),
    ],
)
def test_a_wrong_rate_is_refused_beside_its_field_and_keeps_what_was_typed(
    client, db, program, login_as, data, field, message
):
    login_as(Role.MANAGER)
    response = client.post("/admin/rates", data=data)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page
    for name in ("base", "rate", "quote"):  # what was typed stays in its field
        if data[name]:
            assert f'value="{data[name]}"' in page, name
    assert _rates(db) == {}


def test_the_ecbs_file_uploaded_imports_its_rates_and_converts(client, db, login_as, held):
    login_as(Role.ADMIN)
    csv = b"Date, USD, JPY, \n20 November 2026, 1.0812, 162.47, \n"
    response = client.post(
        "/admin/rates/import",
        data={"file": (io.BytesIO(csv), "eurofxref.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    assert _rates(db) == {("EUR", "USD", "2026-11-20"): "1.0812", ("EUR", "JPY", "2026-11-20"): "162.47"}
    page = client.get("/admin/rates").get_data(as_text=True)
    assert "Imported 2 rates for 1 days, 2026-11-20 to 2026-11-20." in page
    assert "1 JPY = 0.0066547670339" in client.get(f"/admin/conversions/{held[1].id}").get_data(as_text=True)


def test_a_file_that_is_not_the_ecbs_is_refused_and_nothing_is_imported(client, db, program, login_as):
    login_as(Role.MANAGER)
    response = client.post(
        "/admin/rates/import",
        data={"file": (io.BytesIO(b"base,quote,rate\nEUR,USD,1.08\n"), "rates.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert "first column should be" in response.get_data(as_text=True)
    assert _rates(db) == {}


def test_partners_cannot_see_the_rates(client, db, program, login_as):
    login_as(Role.PARTNER)
    assert client.get("/admin/rates").status_code in (302, 403, 404)


def test_both_amounts_on_the_operators_and_the_partners_pages(client, db, login_as, held):
    partner, conversion = held
    login_as(Role.MANAGER)
    listing = client.get("/admin/conversions?status=held").get_data(as_text=True)
    assert "jp-1" in listing and "not converted yet: no exchange rate" in listing
    assert "waiting for an exchange rate" in listing
    client.post("/admin/rates", data={"base": "JPY", "rate": "0.0066", "quote": "USD", "day": "2026-11-20"})
    detail = client.get(f"/admin/conversions/{conversion.id}").get_data(as_text=True)
    assert "$132.00" in detail and "sold as ¥20,000" in detail
    assert "1 JPY = 0.0066 USD on 2026-11-20 (manual)" in detail
    with client.session_transaction() as session:
        session["_user_id"] = partner.user.get_id()
    mine = client.get("/partner/conversions").get_data(as_text=True)
    assert "$132.00" in mine and "sold as ¥20,000" in mine
    trail = client.get(f"/partner/conversions/{conversion.id}").get_data(as_text=True)
    assert "sold as ¥20,000; 1 JPY = 0.0066 USD on 2026-11-20" in trail


def test_the_partners_dashboard_shows_a_held_sale_in_its_own_currency(client, db, held):
    partner, _conversion = held
    with client.session_transaction() as session:
        session["_user_id"] = partner.user.get_id()
    page = client.get("/partner/").get_data(as_text=True)
    assert "¥20,000" in page and "waiting for an exchange rate" in page
    assert "$0.00" not in page.split("jp-1", 1)[1][:300]
    csv = client.get("/partner/stats/activity.csv").get_data(as_text=True)
    [line] = [line for line in csv.splitlines() if "jp-1" in line]
    assert line.split(",")[5] == "" and line.endswith("held")
