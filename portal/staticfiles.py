"""Static files addressed by their content: cached by browsers for a year, fetched again
the moment they change.

``url_for("static", filename=…)`` adds ``v=`` with the start of the file's SHA-256
(read once per file and again only when its size or modification time changes). A request
whose ``v`` is the file's current one is answered ``Cache-Control: public,
max-age=31536000, immutable``: a page view then costs no request for the stylesheet and the
scripts, where before each view asked for all four again (answered 304). An address
without ``v``, or with an outdated one, gets Flask's default: look again every time.
An address other sites embed (the tracking script of the integration guide) is built with
``v=None``: unversioned, so their visitors always get today's script.
"""

from __future__ import annotations

import hashlib
import os
import threading

from flask import Flask, current_app, has_request_context, request
from werkzeug.security import safe_join

MAX_AGE = 365 * 24 * 3600
_DIGEST_CHARS = 12

_lock = threading.Lock()
_versions: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, version)


def file_version(folder: str, filename: str) -> str | None:
    """The version of ``folder``/``filename`` (its content's digest, shortened), or None
    when there is no such file."""
    path = safe_join(folder, filename)
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    known = _versions.get(path)
    if known is not None and known[:2] == (stat.st_mtime_ns, stat.st_size):
        return known[2]
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 16), b""):
                digest.update(chunk)
    except OSError:
        return None
    version = digest.hexdigest()[:_DIGEST_CHARS]
    with _lock:
        _versions[path] = (stat.st_mtime_ns, stat.st_size, version)
    return version


def _add_version(endpoint: str, values: dict) -> None:
    if endpoint != "static" or "v" in values or "filename" not in values:
        return
    version = file_version(current_app.static_folder, values["filename"])
    if version is not None:
        values["v"] = version


def max_age(filename: str, default: int | None) -> int | None:
    """A year for a static file the request asked for by its current version, else ``default``."""
    if not has_request_context() or request.endpoint != "static":
        return default
    asked = request.args.get("v")
    if asked and asked == file_version(current_app.static_folder, filename):
        return MAX_AGE
    return default


def init_app(app: Flask) -> None:
    app.url_defaults(_add_version)
