"""Probes for load balancers and uptime checks.

``/livez``: the process answers (no dependency is asked). ``/readyz``: the database
answers; Redis, the S3 store and SMTP are reported ``degraded`` when they do not,
without failing the probe, because the portal keeps working without them (rate
limits fall back to memory, live events stay on one worker, e-mail waits in the
outbox, uploads say "try later"). ``/healthz`` is ``/readyz`` under its old name.

Every check runs in its own thread with a deadline, so a dependency that hangs
(a frozen server accepts TCP and never answers) costs the probe at most
``PROBE_TIMEOUT_SECONDS``; a check still running from an earlier probe is not
started again but reported as ``timeout``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, jsonify, request

from portal.extensions import db, limiter

bp = Blueprint("health", __name__)


@limiter.request_filter
def _probes_are_not_limited() -> bool:
    """The probes carry no limit, and the rate limiter must not touch Redis for them: while
    Redis is out, the limiter re-checks it now and then from whichever request comes (a
    socket timeout when Redis hangs), and a probe must stay within its own deadline."""
    return request.blueprint == "health"


_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()


@bp.get("/livez")
def livez():
    return jsonify({"status": "ok"})


def _check_database() -> None:
    try:
        db.session.execute(sa.text("SELECT 1"))
    finally:
        db.session.remove()


def _check_redis() -> None:
    from portal.realtime import quick_redis_client

    client = quick_redis_client(current_app.config["REDIS_URL"], socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def _check_storage() -> None:
    from portal.storage import current_storage

    current_storage().check()


def _check_smtp() -> None:
    """Connect and read the server's greeting; a silent server times out here."""
    config = current_app.config
    timeout = float(config["PROBE_TIMEOUT_SECONDS"])
    with socket.create_connection((config["MAIL_SERVER"], config["MAIL_PORT"]), timeout=timeout) as sock:
        if config.get("MAIL_USE_SSL"):
            return  # the TLS handshake is the sender's business; the port answers
        greeting = sock.recv(512)
        if not greeting.startswith(b"2"):
            raise OSError(f"unexpected greeting {greeting[:60]!r}")
        sock.sendall(b"QUIT\r\n")


def _run_checks(app: Flask, checks: dict[str, Callable[[], None]], timeout: float) -> dict[str, str]:
    """Run the checks in parallel threads; each is "ok", "error" or "timeout" after ``timeout`` seconds."""
    results: dict[str, str] = {}
    threads: dict[str, threading.Thread] = {}

    def run(name: str, check: Callable[[], None]) -> None:
        try:
            with app.app_context():
                check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not answering"
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            app.logger.warning("probe: %s check failed: %s", name, first_line)
            results[name] = "error"
        else:
            results[name] = "ok"
        finally:
            with _in_flight_lock:
                _in_flight.discard(name)

    for name, check in checks.items():
        with _in_flight_lock:
            if name in _in_flight:  # the last probe's check of it still hangs
                results[name] = "timeout"
                continue
            _in_flight.add(name)
        thread = threading.Thread(target=run, args=(name, check), name=f"probe-{name}", daemon=True)
        threads[name] = thread
        thread.start()
    deadline = time.monotonic() + timeout
    for name, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            app.logger.warning("probe: %s check did not answer within %.1f s", name, timeout)
            results[name] = "timeout"
    return results


def readiness() -> tuple[dict[str, str], int]:
    config = current_app.config
    checks: dict[str, Callable[[], None]] = {"database": _check_database}
    if config.get("REDIS_URL"):
        checks["redis"] = _check_redis
    if config.get("STORAGE_BACKEND") == "s3":
        checks["storage"] = _check_storage
    if config.get("MAIL_SERVER"):
        checks["smtp"] = _check_smtp
    results = _run_checks(current_app._get_current_object(), checks, float(config["PROBE_TIMEOUT_SECONDS"]))
    body = {"database": "ok" if results["database"] == "ok" else "error"}
    for name in ("redis", "storage", "smtp"):
        if name in results:
            body[name] = "ok" if results[name] == "ok" else "degraded"
    if body["database"] != "ok":
        return {"status": "error", **body}, 503
    degraded = any(value == "degraded" for value in body.values())
    return {"status": "degraded" if degraded else "ok", **body}, 200


@bp.get("/readyz")
def readyz():
    body, status = readiness()
    return jsonify(body), status


@bp.get("/healthz")
def healthz():
    """The old name of ``/readyz``, kept for existing load-balancer settings."""
    body, status = readiness()
    return jsonify(body), status
