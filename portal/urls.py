"""The portal's one public origin: absolute addresses come from ``PORTAL_BASE_URL``, never from a request.

``PortalFlask.create_url_adapter`` (portal/__init__.py) points every URL adapter at this
origin, so ``url_for(..., _external=True)`` in views, templates, jobs and e-mails builds on
it; ``PortalRequest`` answers ``request.host_url`` / ``request.url_root`` with it too. A
client's ``Host`` or ``X-Forwarded-Host`` never reaches an address the portal hands out.
"""

from __future__ import annotations

from functools import lru_cache

from flask import current_app, url_for

from config import BaseURL, parse_base_url


@lru_cache(maxsize=8)
def _parsed(value: str) -> BaseURL:
    return parse_base_url(value)


def base_url(config=None) -> BaseURL:
    """``PORTAL_BASE_URL`` taken apart (read at every call: tests may change it)."""
    return _parsed((config if config is not None else current_app.config)["PORTAL_BASE_URL"])


def origin_root(config=None) -> str:
    """``https://partners.example/`` (with the base's path, if any), always ending in a slash."""
    base = base_url(config)
    return f"{base.scheme}://{base.netloc}{base.path}/"


def absolute_url(endpoint: str, **values) -> str:
    """The route's address on ``PORTAL_BASE_URL``, the same in a request, a job or an e-mail."""
    return url_for(endpoint, _external=True, **values)
