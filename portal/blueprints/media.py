"""Creative files for browsers: signed downloads from the local store.

* ``/media/files/<key>`` serves a file of the local store to whoever holds an unexpired,
  signed URL (the S3 store hands out presigned URLs instead and never uses this).
"""

from __future__ import annotations

from flask import Blueprint, abort, request, send_file

from portal.storage import LocalStorage, MissingObject, content_type_for, current_storage

bp = Blueprint("media", __name__)


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
