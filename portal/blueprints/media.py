"""Creative files for browsers: signed downloads (local store) and the public banner address.

* ``/media/files/<key>`` serves a file of the local store to whoever holds an unexpired,
  signed URL (the S3 store hands out presigned URLs instead and never uses this).
* ``/media/banners/<id>`` is the stable address in partners' embed code. It always shows
  the creative's current version, and only while the creative is published: it redirects
  to a short-lived URL of the file, so the store itself stays private.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, request, send_file

from portal.models import CreativeKind
from portal.services.creatives import published_creative
from portal.storage import LocalStorage, MissingObject, content_type_for, current_storage

bp = Blueprint("media", __name__)

# Browsers may reuse the redirect for a while; well inside the signed URL's own lifetime.
_REDIRECT_MAX_AGE = 300


@bp.get("/files/<path:key>")
def signed_file(key: str):
    storage = current_storage()
    if not isinstance(storage, LocalStorage):
        abort(404)
    expires = request.args.get("expires", "")
    download = request.args.get("dl") or None
    signature = request.args.get("sig", "")
    if not expires.isdigit() or not storage.verify(key, int(expires), download, signature):
        abort(403)
    try:
        path = storage.path_for(key)
    except MissingObject:
        abort(404)
    if not path.is_file():
        abort(404)
    response = send_file(
        path,
        mimetype=content_type_for(key),
        as_attachment=download is not None,
        download_name=download,
        max_age=min(storage.lifetime, 3600),
        conditional=True,
    )
    # The bytes were checked at upload, but never let a browser reinterpret them.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@bp.get("/banners/<int:creative_id>")
def banner_image(creative_id: int):
    creative = published_creative(creative_id)
    if creative is None or creative.kind != CreativeKind.BANNER or not creative.current.file_key:
        abort(404)
    storage = current_storage()
    response = redirect(storage.url(creative.current.file_key), 302)
    response.headers["Cache-Control"] = f"public, max-age={min(_REDIRECT_MAX_AGE, storage.lifetime // 2)}"
    # Partners' pages show this image; the portal address must not leak their page URLs onward.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
