"""What the portal answers while a dependency is unreachable (in process; tests/faults/ runs real servers)."""

from __future__ import annotations

import logging
import time

import pytest

from config import TestingConfig
from portal import create_app
from portal.errorpages import RETRY_AFTER_SECONDS
from tests.conftest import free_port


@pytest.fixture
def dead_database_app(tmp_path):
    """An app whose PostgreSQL refuses connections (nothing listens on the port)."""
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone",
        STORAGE_LOCAL_DIR=str(tmp_path / "media"),
    )
    return app


def _sign_in_cookie(client) -> None:
    with client.session_transaction() as session:
        session["_user_id"] = "a-session-token"
        session["_fresh"] = True


@pytest.mark.parametrize("path", ["/partner/", "/admin/", "/admin/partners", "/no-such-page"])
def test_pages_answer_a_styled_503_without_the_database(dead_database_app, path, caplog):
    client = dead_database_app.test_client()
    _sign_in_cookie(client)
    with caplog.at_level(logging.INFO):
        response = client.get(path, headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    page = response.get_data(as_text=True)
    assert 'data-testid="unavailable"' in page
    assert "Temporarily unavailable" in page
    assert "css/portal.css" in page  # styled, in the house look
    assert '<html lang="en">' in page
    # One line per failed request, and no traceback chained behind it.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith(f"database unavailable on GET {path}: OperationalError")
    assert errors[0].exc_info is None


@pytest.mark.parametrize("path", ["/api/v1/conversions", "/api/v1/signups"])
def test_the_api_answers_503_json_with_retry_after(dead_database_app, caplog, path):
    client = dead_database_app.test_client()
    # A well-formed key: checking it needs the database. (A malformed one is refused
    # without it: 401, database or not.)
    key = "ppk_0a1b2c3d_" + "s" * 43
    with caplog.at_level(logging.INFO):
        response = client.post(
            path, json={"transaction_id": "t-1"}, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.get_json()["error"]["code"] == "unavailable"
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_anonymous_pages_that_need_no_database_still_answer(dead_database_app):
    client = dead_database_app.test_client()
    assert client.get("/login").status_code == 200
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert (ready.status_code, ready.get_json()) == (503, {"status": "error", "database": "error"})


def test_a_query_the_database_refuses_is_not_an_outage(app, db):
    """Only an unreachable database is a 503; a broken query stays an error worth a traceback."""
    import sqlalchemy as sa

    from portal.errorpages import database_unavailable

    with pytest.raises(sa.exc.DBAPIError) as caught:
        db.session.execute(sa.text("SELECT * FROM no_such_table"))
    assert not database_unavailable(caught.value)


def test_rate_limits_fall_back_to_memory_while_redis_is_down(database_url, tmp_path, caplog):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        STORAGE_LOCAL_DIR=str(tmp_path / "media"),
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=dead_redis,
        LOGIN_RATE_LIMIT="3 per minute",
    )
    client = app.test_client()
    with caplog.at_level(logging.INFO):
        started = time.monotonic()
        answers = [
            client.post("/login", data={"email": "nobody@example.org", "password": "wrong"}).status_code
            for _ in range(5)
        ]
        elapsed = time.monotonic() - started
    # Sign-in keeps answering (wrong password: 422) and the limit still holds, per process.
    assert answers == [422, 422, 422, 429, 429]
    assert elapsed < 5
    said = [r.getMessage() for r in caplog.records if "falling back to in-memory" in r.getMessage()]
    assert len(said) == 1
    with app.app_context():
        from portal.extensions import db as _db

        _db.engine.dispose()


def test_a_failed_publish_never_raises_and_is_logged_once(caplog):
    from portal.realtime import PortalRedisManager

    manager = PortalRedisManager(f"redis://127.0.0.1:{free_port()}/0", "test-channel", write_only=True)
    with caplog.at_level(logging.WARNING, logger="portal.realtime"):
        started = time.monotonic()
        for _ in range(20):
            manager._publish({"method": "emit", "event": "stats", "data": [{}]})
        elapsed = time.monotonic() - started
    assert elapsed < 3
    lines = [r.getMessage() for r in caplog.records if r.name == "portal.realtime"]
    assert len(lines) == 1
    assert "live events reach only this worker's sockets" in lines[0]


def test_the_fall_back_to_memory_is_told_once_however_many_threads_meet_it(database_url, tmp_path):
    """Flask-Limiter checks, logs, then marks Redis dead without a lock: threads that meet the
    outage together each log it. The app's filter lets the first through until recovery."""
    import threading

    create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, STORAGE_LOCAL_DIR=str(tmp_path / "m"))
    limiter_logger = logging.getLogger("flask-limiter")
    passed: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            passed.append(record.getMessage())

    keep = Keep()
    limiter_logger.addHandler(keep)
    try:
        start = threading.Barrier(8)

        def meet_the_outage():
            start.wait()
            limiter_logger.warning("Rate limit storage unreachable - falling back to in-memory storage")

        threads = [threading.Thread(target=meet_the_outage) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert passed == ["Rate limit storage unreachable - falling back to in-memory storage"]
        limiter_logger.info("Rate limit storage recovered")
        limiter_logger.warning("Rate limit storage unreachable - falling back to in-memory storage")
        assert [m for m in passed if "falling back" in m] == [passed[0]] * 2  # a second outage is told
        assert "Rate limit storage recovered" in passed
    finally:
        limiter_logger.removeHandler(keep)


def test_a_probe_never_waits_for_the_rate_limiters_recheck_of_a_dead_redis(
    database_url, tmp_path, monkeypatch
):
    """While Redis is out the limiter re-checks it from whichever request comes when the
    back-off is due (a socket timeout if Redis hangs); /readyz must not be that request."""
    from portal.extensions import limiter

    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        STORAGE_LOCAL_DIR=str(tmp_path / "media"),
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=dead_redis,
        REDIS_URL=dead_redis,
    )
    client = app.test_client()
    client.post("/login", data={"email": "nobody@example.org", "password": "wrong"})
    assert limiter._storage_dead  # the limiter counts in memory now
    rechecks: list[str] = []
    monkeypatch.setattr(limiter._storage, "check", lambda: rechecks.append("check") or False)

    def due() -> None:
        limiter._Limiter__last_check_backend = 0.0
        limiter._Limiter__check_backend_count = 0

    due()
    for probe in ("/readyz", "/livez", "/healthz"):
        client.get(probe)
    assert rechecks == []
    due()
    client.post("/login", data={"email": "nobody@example.org", "password": "wrong"})
    assert rechecks == ["check"]  # other requests still find out when Redis is back
    with app.app_context():
        from portal.extensions import db as _db

        _db.engine.dispose()
