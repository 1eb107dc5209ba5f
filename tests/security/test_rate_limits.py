"""API rate limits that cannot be aimed at someone else (README: "Rate limits").

API_RATE_LIMIT counts per verified key; a request that proves no key counts against its
client address, and failed authentications have their own, tighter budget per address.
"""

from __future__ import annotations

import pytest

from config import TestingConfig
from portal import create_app
from portal.extensions import limiter
from portal.services.api_keys import create_api_key

KEY_BUDGET = 40
FAILURE_BUDGET = 10


@pytest.fixture
def app(database_url, tmp_path):
    """The rate limiter on, with small budgets (the test config switches it off)."""
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        STORAGE_LOCAL_DIR=str(tmp_path / "media"),
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI="memory://",
        API_RATE_LIMIT=f"{KEY_BUDGET} per minute",
        API_AUTH_FAILURE_LIMIT=f"{FAILURE_BUDGET} per minute",
    )
    with app.app_context():
        limiter.reset()
    yield app
    with app.app_context():
        limiter.reset()


@pytest.fixture
def keys(db, program):
    _live, live = create_api_key("shop backend", None)
    _other, other = create_api_key("second shop", None)
    db.session.commit()
    return live, other


def signup(client, key: str, n: int, address: str = "198.51.100.7"):
    return client.post(
        "/api/v1/signups",
        json={"customer_id": f"cus-{n}", "ref": "nobody"},
        headers={"Authorization": f"Bearer {key}"},
        environ_base={"REMOTE_ADDR": address},
    )


def forged(key: str) -> str:
    """The live key's public prefix with a made-up secret."""
    prefix, _, _secret = key.rpartition("_")
    return prefix + "_" + "0" * 32


def test_forged_secrets_with_a_live_prefix_do_not_spend_that_keys_budget(client, keys):
    live, _other = keys
    codes = [signup(client, forged(live), n, "203.0.113.9").status_code for n in range(60)]
    assert codes[:FAILURE_BUDGET] == [401] * FAILURE_BUDGET
    assert set(codes[FAILURE_BUDGET:]) == {429}
    # The merchant's own requests, from its own address, are all still answered.
    real = [signup(client, live, n).status_code for n in range(KEY_BUDGET)]
    assert 429 not in real
    assert real[0] == 201


def test_the_real_key_is_answered_even_from_the_attackers_address(client, keys):
    live, _other = keys
    address = "203.0.113.10"
    for n in range(FAILURE_BUDGET + 5):
        signup(client, forged(live), n, address)
    assert signup(client, forged(live), 99, address).status_code == 429
    assert signup(client, live, 1002, address).status_code == 201


def test_rotating_the_prefix_escapes_nothing(client, keys):
    codes = [
        signup(client, f"ppk_{n:08x}_{'1' * 32}", n, "203.0.113.11").status_code
        for n in range(FAILURE_BUDGET + 3)
    ]
    assert codes[-3:] == [429, 429, 429]


def test_each_verified_key_has_its_own_budget(client, keys):
    live, other = keys
    codes = [signup(client, live, n).status_code for n in range(KEY_BUDGET + 1)]
    assert codes[-1] == 429
    assert 429 not in codes[:KEY_BUDGET]
    response = signup(client, live, 100)
    assert response.json["error"]["code"] == "rate_limited"
    # The same address, another merchant's key: its own budget.
    assert signup(client, other, 1001).status_code == 201


def test_the_public_document_is_not_a_failed_authentication(client, keys):
    for _ in range(FAILURE_BUDGET + 2):
        assert client.get("/api/v1/openapi.json").status_code in (200,)


def test_with_the_api_budget_off_a_key_is_never_counted_and_failures_still_are(app, client, keys):
    live, _other = keys
    app.config["API_RATE_LIMIT"] = "off"
    answers = [signup(client, live, n) for n in range(KEY_BUDGET + 5)]
    assert {answer.status_code for answer in answers} == {201}
    assert not any("X-RateLimit-Limit" in answer.headers for answer in answers)
    codes = [signup(client, forged(live), n, "203.0.113.12").status_code for n in range(FAILURE_BUDGET + 3)]
    assert codes[:FAILURE_BUDGET] == [401] * FAILURE_BUDGET
    assert codes[-3:] == [429, 429, 429]
