"""Static files addressed by their content (portal/staticfiles.py): a page's stylesheet and
scripts are cached for a year under an address that changes with them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from flask import url_for

from portal import staticfiles

STATIC = Path(__file__).resolve().parents[2] / "portal" / "static"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_a_static_address_carries_its_files_content_version(app):
    with app.test_request_context():
        address = url_for("static", filename="css/portal.css")
    assert address == f"/static/css/portal.css?v={_digest(STATIC / 'css' / 'portal.css')}"


def test_pages_link_their_stylesheet_and_scripts_by_version(client):
    page = client.get("/auth/login").get_data(as_text=True)
    linked = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
    assert linked, "the login page links no static file"
    assert all(re.search(r"\?v=[0-9a-f]{12}$", address) for address in linked), linked


def test_the_current_version_is_cached_for_a_year_and_any_other_address_is_asked_again(client, app):
    with app.test_request_context():
        current = url_for("static", filename="js/portal.js")
    response = client.get(current)
    assert response.status_code == 200
    assert response.cache_control.max_age == staticfiles.MAX_AGE
    assert response.cache_control.public and response.cache_control.immutable
    for other in ("/static/js/portal.js", "/static/js/portal.js?v=000000000000"):
        response = client.get(other)
        assert response.status_code == 200
        assert response.cache_control.max_age != staticfiles.MAX_AGE
        assert not response.cache_control.immutable


def test_a_changed_file_gets_a_new_version_and_a_missing_one_none(tmp_path):
    target = tmp_path / "site.css"
    target.write_text("body { color: black }")
    first = staticfiles.file_version(str(tmp_path), "site.css")
    assert first == _digest(target)
    target.write_text("body { color: navy; }")  # another size: read again
    assert staticfiles.file_version(str(tmp_path), "site.css") == _digest(target) != first
    assert staticfiles.file_version(str(tmp_path), "missing.css") is None
    assert staticfiles.file_version(str(tmp_path), "../escape.css") is None


def test_the_tracking_script_shops_embed_is_addressed_without_a_version(client, login_as):
    """A shop keeps the snippet for years: a versioned address would pin its visitors'
    browsers to the script of the day it was copied."""
    login_as("admin")
    page = client.get("/admin/integration").get_data(as_text=True)
    assert re.search(r'src="http://[^"]+/static/js/track\.js" ', page), page
