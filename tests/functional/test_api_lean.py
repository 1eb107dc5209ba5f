"""``POST /api/v1/conversions`` at the WSGI level (portal/blueprints/api/lean.py) answers
every request exactly as the Flask view does: each kind of request is sent to the app as
served and to Flask alone (``Flask.wsgi_app``, past the WSGI routing), and the two answers'
status, headers and bodies are compared. Committed data, SQLite and PostgreSQL: the sales go
through the writer's own thread, as in production."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask, request_started
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import Conversion
from tests.functional.test_sale_writer import _body, world  # noqa: F401 - the fixture

pytestmark = pytest.mark.postgres

PATH = "/api/v1/conversions"
NOW = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)


class Answers:
    """The app as served and Flask alone, side by side; counts the requests Flask handled."""

    def __init__(self, app: Flask, plain: str):
        self.app, self.plain = app, plain
        self.flask_requests = 0
        request_started.connect(self._started, app)

    def _started(self, _sender, **_extra) -> None:
        self.flask_requests += 1

    def close(self) -> None:
        request_started.disconnect(self._started, self.app)

    def key(self, **extra: str) -> dict:
        return {"Authorization": f"Bearer {self.plain}", **extra}

    def send(self, served: bool, **kwargs) -> tuple[str, list, bytes]:
        app = self.app
        target = app if served else (lambda environ, start: Flask.wsgi_app(app, environ, start))
        response = Client(target).post(PATH, **kwargs)
        return response.status, list(response.headers.items()), response.get_data()

    def both(self, **kwargs) -> tuple[tuple, tuple, int]:
        """Each way once: (served, Flask's, how many of the served one Flask handled)."""
        before = self.flask_requests
        served = self.send(True, **kwargs)
        by_flask = self.flask_requests - before
        return served, self.send(False, **kwargs), by_flask


@pytest.fixture
def answers(world):  # noqa: F811 - the imported fixture
    app, plain = world
    both = Answers(app, plain)
    yield both
    both.close()


def _as_side(answer: tuple, side: str, ref: str) -> tuple:
    """An answer with its side's own names made generic."""
    status, headers, body = answer
    text = re.sub(rf"\b(tx|nobody|cus|nope)-{side}\b", r"\1-?", body.decode())
    text = text.replace(f"SAVE{side}", "SAVE?").replace(f'"{ref}"', '"<ref>"')
    number = {"L": "17", "F": "71"}[side]
    return status, headers, text.replace(f'"transaction_id":"{number}"', '"transaction_id":"?"')


def _as_sale(answer: tuple, transaction_id: str, ref: str) -> tuple:
    """An answer with its sale's own transaction id and partner named generically."""
    status, headers, body = answer
    text = body.decode().replace(transaction_id, "<tx>").replace(f'"{ref}"', '"<ref>"')
    return status, headers, text


@pytest.mark.parametrize("language", [None, "zh-CN"])
def test_a_written_sale_is_answered_as_the_view_answers_it_and_its_retry_too(answers, language):
    extra = {"Accept-Language": language} if language else {}
    with time_machine.travel(NOW, tick=False):
        before = answers.flask_requests
        served = answers.send(True, json=_body("lean-1", "alpha"), headers=answers.key(**extra))
        assert answers.flask_requests == before  # answered without Flask
        alone = answers.send(False, json=_body("view-1", "bravo"), headers=answers.key(**extra))
        assert served[0] == "201 CREATED"
        assert _as_sale(served, "lean-1", "alpha") == _as_sale(alone, "view-1", "bravo")
        # The retry of each: the stored sale, 200, the same bytes either way.
        again = {"json": _body("lean-1", "alpha"), "headers": answers.key(**extra)}
        retry, retry_by_flask, by_flask = answers.both(**again)
    assert by_flask == 0
    assert retry[0] == "200 OK"
    assert retry == retry_by_flask
    assert json.loads(retry[2])["conversion"]["transaction_id"] == "lean-1"
    with answers.app.app_context():
        stored = _db.session.scalars(sa.select(Conversion.transaction_id).order_by(Conversion.id)).all()
    assert stored == ["lean-1", "view-1"]


# A valid sale, then up to three fields changed to another value, valid or not, or left out.
# "{side}" is each side's own letter: nothing one side sends can be taken for the other's.
VALID = {"transaction_id": "tx-{side}-{n}", "ref": "<partner>", "amount": "10.00", "currency": "USD"}
_VALUES = {
    "transaction_id": ["<absent>", None, 17, "", "x" * 300],
    "ref": ["<absent>", None, "nobody-{side}", 5],
    "amount": ["0.50", "-1.00", "12.345", "ten", "", 12, None, "99999999999999", "<absent>"],
    "currency": ["EUR", "JPY", "usd", "XYZ", 5, None, "<absent>"],
    "customer_id": ["cus-{side}", "", "c" * 300, 7],
    "occurred_at": ["2026-11-18T09:00:00Z", "2026-11-18T09:00:00", "yesterday", "2026-11-20", "1999-01-01"],
    "product_id": ["sku-1", "", 3],
    "coupon": ["SAVE{side}", "", None],
    "click_id": ["nope-{side}", 42],
    "colour": ["blue"],  # not a field of a sale
}
_CHANGE = st.sampled_from(sorted(_VALUES)).flatmap(
    lambda key: st.tuples(st.just(key), st.sampled_from(_VALUES[key]))
)
CHANGES = st.lists(_CHANGE, max_size=3)


def _sale(changes: list, side: str, partner: str, n: int) -> dict:
    body = {**VALID, **dict(changes)}
    if isinstance(body.get("transaction_id"), int):
        body["transaction_id"] = {"L": 17, "F": 71}[side]  # a number, each side its own
    body = {key: value for key, value in body.items() if value != "<absent>"}
    named = {key: value.format(side=side, n=n) for key, value in body.items() if isinstance(value, str)}
    return {**body, **named, **({"ref": partner} if body.get("ref") == "<partner>" else {})}


@settings(
    max_examples=40,
    deadline=None,
    # One world for every example, on purpose: both sides' partners make the same sales in
    # the same order, so each reaches its tier at the same sale.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(changes=CHANGES, n=st.integers(0, 10**5))
def test_any_body_is_answered_as_the_view_answers_it(answers, changes, n):
    """Served and Flask alone, each with its own partner and its own names (of the same
    length): the same status, headers and body, but for those names."""
    sides = []
    with time_machine.travel(NOW, tick=False):
        for served, side, partner in ((True, "L", "alpha"), (False, "F", "bravo")):
            answer = answers.send(served, json=_sale(changes, side, partner, n), headers=answers.key())
            sides.append(_as_side(answer, side, partner))
    assert sides[0] == sides[1]


FLASKS_OWN = {
    "not JSON": {"data": b'{"transaction_id": ', "content_type": "application/json"},
    "not an object": {"json": ["a", "list"]},
    "missing fields": {"json": {"transaction_id": "f-1"}},
    "a bad amount": {"json": {**_body("f-2", "alpha"), "amount": "ten"}},
    "another content type": {"data": json.dumps(_body("f-3", "alpha")), "content_type": "text/plain"},
    "too large": {"json": {**_body("f-4", "alpha"), "customer_id": "x" * (70 * 1024)}},
}


@pytest.mark.parametrize("language", [None, "zh-CN"])
@pytest.mark.parametrize("case", sorted(FLASKS_OWN))
def test_a_request_the_view_refuses_is_answered_by_it(answers, case, language):
    extra = {"Accept-Language": language} if language else {}
    served, by_view, by_flask = answers.both(headers=answers.key(**extra), **FLASKS_OWN[case])
    assert served == by_view
    assert served[0].split()[0] in {"400", "413", "415", "422"}
    assert by_flask == 1
    with answers.app.app_context():
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0


@pytest.mark.parametrize(
    "authorization", ["Bearer pp_nothing_like_a_key", "Basic dXNlcjpwYXNz", "", "Bearer "], ids=repr
)
def test_a_request_without_a_valid_key_is_answered_401_by_the_view(answers, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    served, by_view, by_flask = answers.both(json=_body("k-1", "alpha"), headers=headers)
    assert served == by_view
    assert served[0] == "401 UNAUTHORIZED"
    assert by_flask == 1


def test_a_retry_with_other_details_is_refused_409_as_the_view_refuses_it(answers):
    assert answers.send(True, json=_body("c-1", "alpha"), headers=answers.key())[0] == "201 CREATED"
    other = {"json": _body("c-1", "alpha", amount="250.00"), "headers": answers.key()}
    # Handed to the writer, which refuses it (nothing written): the view decides it alone.
    served, by_view, by_flask = answers.both(**other)
    assert served == by_view
    assert served[0] == "409 CONFLICT"
    assert by_flask == 1


def test_a_host_outside_trusted_hosts_a_query_string_or_a_chunked_body_goes_to_the_view(answers):
    app = answers.app
    app.config["TRUSTED_HOSTS"] = ["portal.example"]
    try:
        served, by_view, by_flask = answers.both(json=_body("h-1", "alpha"), headers=answers.key())
    finally:
        app.config["TRUSTED_HOSTS"] = None
    assert served == by_view
    assert served[0] == "400 BAD REQUEST"
    assert by_flask == 1

    before = answers.flask_requests
    query = answers.send(True, json=_body("q-1", "alpha"), headers=answers.key(), query_string="x=1")
    assert query[0] == "201 CREATED"
    assert answers.flask_requests == before + 1

    # A body of unknown length: werkzeug's test client sends it unframed, which Flask refuses.
    chunked = answers.key(**{"Transfer-Encoding": "chunked"})
    body = json.dumps(_body("t-1", "bravo")).encode()
    served, by_view, by_flask = answers.both(data=body, headers=chunked, content_type="application/json")
    assert served == by_view
    assert by_flask == 1


def test_with_the_rate_limiter_on_and_the_api_budget_off_a_sale_is_answered_as_flask_answers_it(
    database_url,
    world,  # noqa: F811
):
    _app, plain = world
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        SALE_WRITE_MODE="batched",
        RATELIMIT_ENABLED=True,
        API_RATE_LIMIT="off",
    )
    limited = Answers(app, plain)
    try:
        with time_machine.travel(NOW, tick=False):
            served = limited.send(True, json=_body("o-1", "alpha"), headers=limited.key())
            assert limited.flask_requests == 0  # the WSGI-level path
            alone = limited.send(False, json=_body("o-2", "bravo"), headers=limited.key())
        failed, failed_by_view, by_flask = limited.both(json=_body("o-3", "alpha"), headers={})
    finally:
        limited.close()
        create_app(TestingConfig)  # the limiter's switch is process-wide: off again for the others
    assert served[0] == "201 CREATED"
    assert _as_sale(served, "o-1", "alpha") == _as_sale(alone, "o-2", "bravo")
    assert by_flask == 1
    assert failed[0] == failed_by_view[0] == "401 UNAUTHORIZED"
    # Counted by Flask-Limiter either way, against the same budget: one fewer left each time.
    left = [int(dict(answer[1]).pop("X-RateLimit-Remaining")) for answer in (failed, failed_by_view)]
    assert left[0] == left[1] + 1
    same = [[h for h in answer[1] if h[0] != "X-RateLimit-Remaining"] for answer in (failed, failed_by_view)]
    assert same[0] == same[1]
    assert failed[2] == failed_by_view[2]


ROUTED_TO_FLASK = {
    # Flask-Limiter counts the key's request and adds its headers.
    "the rate limiter on": {"SALE_WRITE_MODE": "batched", "RATELIMIT_ENABLED": True},
    # Each request writes its own sale in its own transaction: no writer to hand it to.
    "inline writes": {"SALE_WRITE_MODE": "inline"},
}


@pytest.mark.parametrize("setting", sorted(ROUTED_TO_FLASK))
def test_every_sale_goes_through_flask_with(database_url, world, setting):  # noqa: F811
    _app, plain = world
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, **ROUTED_TO_FLASK[setting])
    routed = Answers(app, plain)
    try:
        answer = routed.send(True, json=_body("r-1", "alpha"), headers=routed.key())
    finally:
        routed.close()
        create_app(TestingConfig)  # the limiter's switch is process-wide: off again for the others
    assert answer[0] == "201 CREATED"
    assert routed.flask_requests == 1
    assert ("X-RateLimit-Limit" in dict(answer[1])) == app.config["RATELIMIT_ENABLED"]
