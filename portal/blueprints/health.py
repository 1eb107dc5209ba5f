"""``GET /healthz`` for load balancers and uptime checks."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify

from portal.extensions import db

bp = Blueprint("health", __name__)


def _check_database() -> str:
    try:
        db.session.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        current_app.logger.warning("health: database check failed: %s", exc)
        db.session.rollback()
        return "error"
    return "ok"


def _check_redis(url: str) -> str:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        current_app.logger.warning("health: redis check failed: %s", exc)
        return "error"
    return "ok"


def _check_storage() -> str:
    from portal.errors import StorageUnavailable
    from portal.storage import current_storage

    try:
        current_storage().check()
    except StorageUnavailable as exc:
        current_app.logger.warning("health: storage check failed: %s", exc.__cause__ or exc)
        return "error"
    return "ok"


@bp.get("/healthz")
def healthz():
    checks = {"database": _check_database()}
    if current_app.config.get("REDIS_URL"):
        checks["redis"] = _check_redis(current_app.config["REDIS_URL"])
    if current_app.config.get("STORAGE_BACKEND") == "s3":
        checks["storage"] = _check_storage()
    healthy = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if healthy else "error", **checks}), 200 if healthy else 503
