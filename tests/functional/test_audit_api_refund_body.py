"""Audit of the refund endpoint's body: a body sent without Content-Length (chunked)."""

import io
import json

import pytest
import sqlalchemy as sa

from portal.models import Commission, Refund
from tests.functional.test_api import sale

pytestmark = pytest.mark.postgres


def _chunked(client, api, path, data: bytes, content_type="application/json"):
    # Transfer-Encoding: chunked has no Content-Length; gunicorn and werkzeug's server say the
    # stream ends by itself (wsgi.input_terminated), and Flask reads the whole body.
    return client.post(
        f"/api/v1{path}",
        input_stream=io.BytesIO(data),
        headers={**api.headers, "Content-Type": content_type, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_partial_refund_refunds_its_amount_not_the_whole_sale(client, db, api):
    assert api.post("/conversions", sale(ref="pat")).status_code == 201
    body = json.dumps({"amount": "10.00", "refund_id": "RMA-1"}).encode()

    response = _chunked(client, api, "/conversions/order-1/refund", body)

    assert response.status_code == 200
    assert response.json["conversion"]["refunded_amount"] == "10.00"
    assert response.json["conversion"]["status"] == "pending"
    refund = db.session.scalars(sa.select(Refund)).one()
    assert (refund.refund_id, refund.amount_minor) == ("RMA-1", 1000)
    reversed_minor = db.session.scalar(
        sa.select(sa.func.sum(Commission.amount_minor)).where(Commission.kind == "reversal")
    )
    assert reversed_minor == -100  # 10.00 of 49.90 is about a fifth of the 4.99 commission


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b"not json", "application/json"), (b'{"amount": "10.00"}', "text/plain")],
)
def test_a_chunked_refund_body_that_is_not_a_json_object_is_a_400_and_refunds_nothing(
    client, db, api, data, content_type
):
    assert api.post("/conversions", sale(ref="pat")).status_code == 201

    response = _chunked(client, api, "/conversions/order-1/refund", data, content_type)

    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Refund)) == 0
    assert api.get("/conversions/order-1").json["conversion"]["refunded_amount"] == "0.00"


def test_an_empty_chunked_body_is_a_full_refund_as_no_body_is(client, db, api):
    assert api.post("/conversions", sale(ref="pat")).status_code == 201

    response = _chunked(client, api, "/conversions/order-1/refund", b"")

    assert response.status_code == 200
    assert response.json["conversion"]["refunded_amount"] == "49.90"
