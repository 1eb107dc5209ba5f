"""Fixtures shared by the functional tests (the harness's own are in tests/conftest.py)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from portal.services.api_keys import create_api_key
from tests.factories import PartnerFactory


class Api:
    """The tracking API through the test client, with a key's bearer header on every call."""

    def __init__(self, client: FlaskClient, key: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {key}"}

    def post(self, path, json=None):
        return self.client.post(f"/api/v1{path}", json=json, headers=self.headers)

    def get(self, path):
        return self.client.get(f"/api/v1{path}", headers=self.headers)

    def sale(self, tx, amount, currency, **extra):
        """A sale credited to partner ``pat``."""
        body = {"transaction_id": tx, "amount": amount, "currency": currency, "ref": "pat", **extra}
        return self.post("/conversions", body)

    def refund(self, tx, **body):
        # Always a JSON body, ``{}`` when no field is given.
        return self.post(f"/conversions/{tx}/refund", body)


@pytest.fixture
def api(client, db, program):
    """An API key for the program and a partner ``pat`` to credit, committed.

    A module that needs another client (test_api.py, test_coupons_api.py) defines its own ``api``.
    """
    _key, plain = create_api_key("tests", None)
    PartnerFactory(ref_code="pat")
    db.session.commit()
    return Api(client, plain)
