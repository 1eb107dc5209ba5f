"""Absolute portal addresses for e-mails and automatic messages, built the same in and out of a request."""

from __future__ import annotations

from flask import current_app


def absolute_url(endpoint: str, **values) -> str:
    """``PORTAL_BASE_URL`` + the route's path; jobs have no request to take the host from."""
    adapter = current_app.url_map.bind("portal.invalid", url_scheme="https")
    path = adapter.build(endpoint, values, force_external=False)
    return current_app.config["PORTAL_BASE_URL"].rstrip("/") + path
