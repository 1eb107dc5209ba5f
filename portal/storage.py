"""Where creative files live: the local disk or any S3-compatible store, behind one small protocol.

``STORAGE_BACKEND=local`` keeps files under ``STORAGE_LOCAL_DIR`` and hands out
signed, expiring portal URLs for them; ``s3`` uploads from the server through
boto3 and hands out presigned URLs. Each app builds its store (and so its one
boto3 client) once, in :func:`init_app`.

The database and the store cannot share a transaction, so uploads follow one
rule: write the object last, after the rows are flushed, and remember it in
the session. If the transaction then rolls back instead of committing, the
object is deleted again — never a row without its object, nor an object
without its row.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Protocol

from flask import Flask, current_app, url_for
from flask_babel import gettext as _
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal.errors import StorageUnavailable

log = logging.getLogger(__name__)

_UPLOADS_KEY = "portal_uploaded_objects"
_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


class MissingObject(LookupError):
    """No object under that key."""


class Storage(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def keys(self) -> list[str]: ...
    def url(self, key: str, *, download_name: str | None = None) -> str: ...
    def check(self) -> None: ...


def _unavailable() -> StorageUnavailable:
    return StorageUnavailable(
        _("The file store could not be reached, so nothing was saved. Try again in a few minutes.")
    )


def content_type_for(key: str) -> str:
    return _CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")


class LocalStorage:
    """Files on the local disk, downloaded through signed, expiring portal URLs."""

    name = "local"

    def __init__(self, root: str | Path, secret: str, lifetime: int, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.secret = secret.encode()
        self.lifetime = lifetime
        self.clock = clock

    def path_for(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not key or key.startswith("/") or not path.is_relative_to(self.root.resolve()):
            raise MissingObject(key)
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename: a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.error("storage: writing %s failed: %s", key, exc)
            raise _unavailable() from exc

    def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise MissingObject(key) from exc

    def delete(self, key: str) -> None:
        try:
            self.path_for(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _unavailable() from exc

    def exists(self, key: str) -> bool:
        try:
            return self.path_for(key).is_file()
        except MissingObject:
            return False

    def keys(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".upload-")
        )

    def signature(self, key: str, expires: int, download_name: str | None) -> str:
        message = f"{key}\n{expires}\n{download_name or ''}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def verify(self, key: str, expires: int, download_name: str | None, signature: str) -> bool:
        """A URL is good when its signature matches and it has not expired."""
        expected = self.signature(key, expires, download_name)
        return hmac.compare_digest(expected, signature) and self.clock() <= expires

    def url(self, key: str, *, download_name: str | None = None) -> str:
        expires = int(self.clock()) + self.lifetime
        return url_for(
            "media.signed_file",
            key=key,
            expires=expires,
            dl=download_name,
            sig=self.signature(key, expires, download_name),
        )

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise OSError(f"{self.root} is not writable")
        except OSError as exc:
            raise _unavailable() from exc


class S3Storage:
    """An S3-compatible bucket (AWS S3, MinIO, R2) through one boto3 client."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        lifetime: int = 3600,
        max_attempts: int = 3,
        timeout: int = 10,
    ):
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.lifetime = lifetime
        self.client = _boto3_session().client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            config=BotoConfig(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                # Self-hosted stores (MinIO, a local endpoint) rarely have per-bucket host names.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                signature_version="s3v4",
            ),
        )

    def _errors(self):
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=content_type
            )
        except self._errors() as exc:
            log.error("storage: uploading %s to s3://%s failed: %s", key, self.bucket, exc)
            raise _unavailable() from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingObject(key) from exc
            raise _unavailable() from exc
        except self._errors() as exc:
            raise _unavailable() from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except self._errors() as exc:
            raise _unavailable() from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise _unavailable() from exc
        except self._errors() as exc:
            raise _unavailable() from exc
        return True

    def keys(self) -> list[str]:
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                found.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        except self._errors() as exc:
            raise _unavailable() from exc
        return sorted(found)

    def url(self, key: str, *, download_name: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": self.prefix + key}
        if download_name:
            params["ResponseContentDisposition"] = _attachment(download_name)
        # Presigning is local arithmetic: no request reaches the store.
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.lifetime)

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors() as exc:
            raise _unavailable() from exc


@cache
def _boto3_session():
    """One boto3 session per process: it caches the service models, so each app's client is quick to
    build (apps are built at start-up, one thread at a time). Credentials come from boto3's usual chain."""
    import boto3

    return boto3.session.Session()


def _attachment(name: str) -> str:
    safe = "".join(c for c in name if c.isalnum() or c in "._- ") or "download"
    return f'attachment; filename="{safe}"'


def build_storage(config) -> Storage:
    backend = (config.get("STORAGE_BACKEND") or "local").lower()
    lifetime = int(config["STORAGE_URL_EXPIRES"])
    if backend == "local":
        return LocalStorage(config["STORAGE_LOCAL_DIR"], config["SECRET_KEY"], lifetime)
    if backend == "s3":
        if not config.get("S3_BUCKET"):
            raise RuntimeError("STORAGE_BACKEND=s3 needs S3_BUCKET (see README: Configuration).")
        return S3Storage(
            config["S3_BUCKET"],
            prefix=config.get("S3_PREFIX") or "",
            region=config.get("S3_REGION"),
            endpoint_url=config.get("S3_ENDPOINT_URL"),
            lifetime=lifetime,
            max_attempts=int(config["S3_MAX_ATTEMPTS"]),
            timeout=int(config["S3_TIMEOUT_SECONDS"]),
        )
    raise RuntimeError(f"STORAGE_BACKEND must be local or s3, not {backend!r}.")


def init_app(app: Flask) -> None:
    app.extensions["storage"] = build_storage(app.config)


def current_storage() -> Storage:
    return current_app.extensions["storage"]


# --- keeping the store and the database in step --------------------------------------


def put_in_transaction(session: Session, storage: Storage, key: str, data: bytes, content_type: str) -> None:
    """Upload now; delete the object again unless ``session``'s transaction commits."""
    storage.put(key, data, content_type)
    session.info.setdefault(_UPLOADS_KEY, []).append((storage, key))


@event.listens_for(Session, "after_commit")
def _keep_committed_uploads(session: Session) -> None:
    # Releasing a SAVEPOINT also "commits"; only the outermost commit makes rows real.
    if not session.in_nested_transaction():
        session.info.pop(_UPLOADS_KEY, None)


@event.listens_for(Session, "after_transaction_end")
def _delete_uploads_without_rows(session: Session, transaction) -> None:
    # Whatever is still listed when the outermost transaction ends was rolled
    # back (or dropped unfinished): its rows do not exist, so neither may its objects.
    if transaction.parent is not None or transaction.nested:
        return
    for storage, key in session.info.pop(_UPLOADS_KEY, []):
        try:
            storage.delete(key)
        except StorageUnavailable:
            log.error("storage: %s has no database row and could not be deleted; remove it by hand", key)
