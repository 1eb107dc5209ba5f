"""The file store: the same cases against the local disk and S3 (boto3 → moto over HTTP)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from config import TestingConfig
from portal import create_app
from portal.errors import StorageUnavailable
from portal.storage import LocalStorage, MissingObject, S3Storage, build_storage, put_in_transaction
from tests.conftest import make_bucket, s3_settings, stop_moto
from tests.images import png


def fetch(client, url: str):
    """(status, body, headers) of a download: through the app for its own URLs, over HTTP for S3's."""
    parts = urlsplit(url)
    if parts.netloc in ("", "portal.test"):
        with client.get(parts.path, query_string=parts.query) as response:
            return response.status_code, response.get_data(), response.headers
    response = requests.get(url, timeout=5)
    return response.status_code, response.content, response.headers


def test_put_get_exists_keys_delete(store, client):
    data = png()
    store.put("creatives/1/a.png", data, "image/png")
    store.put("creatives/2/b.gif", b"GIF89a-not-really", "image/gif")
    assert store.get("creatives/1/a.png") == data
    assert store.exists("creatives/1/a.png")
    assert not store.exists("creatives/1/missing.png")
    assert store.keys() == ["creatives/1/a.png", "creatives/2/b.gif"]
    store.delete("creatives/1/a.png")
    store.delete("creatives/1/a.png")  # deleting twice is fine
    assert not store.exists("creatives/1/a.png")
    assert store.keys() == ["creatives/2/b.gif"]
    with pytest.raises(MissingObject):
        store.get("creatives/1/a.png")


def test_download_url_serves_the_bytes_with_their_type(store, client):
    data = png()
    store.put("creatives/1/banner.png", data, "image/png")
    status, body, headers = fetch(client, store.url("creatives/1/banner.png"))
    assert status == 200
    assert body == data
    assert headers["Content-Type"] == "image/png"
    assert "attachment" not in headers.get("Content-Disposition", "")


def test_download_url_with_a_name_is_an_attachment(store, client):
    store.put("creatives/1/banner.png", png(), "image/png")
    status, _body, headers = fetch(
        client, store.url("creatives/1/banner.png", download_name="summer-300x250.png")
    )
    assert status == 200
    assert headers["Content-Disposition"].startswith("attachment")
    assert "summer-300x250.png" in headers["Content-Disposition"]


def test_download_urls_expire_after_the_configured_lifetime(store, app):
    store.put("creatives/1/banner.png", png(), "image/png")
    url = store.url("creatives/1/banner.png")
    query = parse_qs(urlsplit(url).query)
    if isinstance(store, S3Storage):
        assert query["X-Amz-Expires"] == [str(app.config["STORAGE_URL_EXPIRES"])]
        assert "X-Amz-Signature" in query
    else:
        assert int(query["expires"][0]) - store.clock() == pytest.approx(
            app.config["STORAGE_URL_EXPIRES"], abs=2
        )
        assert "sig" in query


def test_object_written_in_a_rolled_back_transaction_is_deleted(store, db):
    db.session.execute(db.select(1))  # a transaction is open
    put_in_transaction(db.session, store, "creatives/9/gone.png", png(), "image/png")
    assert store.exists("creatives/9/gone.png")
    db.session.rollback()
    assert not store.exists("creatives/9/gone.png")


def test_object_written_in_a_committed_transaction_stays(store, db):
    db.session.execute(db.select(1))
    put_in_transaction(db.session, store, "creatives/9/kept.png", png(), "image/png")
    db.session.commit()
    db.session.rollback()  # a later rollback must not reach back
    assert store.exists("creatives/9/kept.png")


def test_a_store_that_cannot_be_reached_says_so_clearly(app, storage_backend, tmp_path, request):
    if storage_backend == "s3":
        from moto.server import ThreadedMotoServer

        request.getfixturevalue("aws_credentials")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        app.config.update(s3_settings(f"http://{host}:{port}", make_bucket(f"http://{host}:{port}")))
        stop_moto(server)
    else:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the store's folder should be")
        app.config.update(STORAGE_BACKEND="local", STORAGE_LOCAL_DIR=str(blocker / "media"))
    store = build_storage(app.config)
    with app.test_request_context(), pytest.raises(StorageUnavailable) as refused:
        store.put("creatives/1/a.png", png(), "image/png")
    assert "could not be reached, so nothing was saved" in refused.value.message
    with app.test_request_context(), pytest.raises(StorageUnavailable):
        store.check()


# --- the local store's signed URLs ---------------------------------------------------


@pytest.fixture
def local_store(app):
    return app.extensions["storage"]


def test_local_url_is_refused_once_expired(local_store, client):
    local_store.put("creatives/1/a.png", png(), "image/png")
    now = local_store.clock()
    local_store.clock = lambda: now
    url = local_store.url("creatives/1/a.png")
    local_store.clock = lambda: now + local_store.lifetime + 1
    assert fetch(client, url)[0] == 403
    local_store.clock = lambda: now + local_store.lifetime - 1
    assert fetch(client, url)[0] == 200


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: {**q, "sig": "0" * 64},
        lambda q: {**q, "expires": str(int(q["expires"]) + 3600)},
        lambda q: {**q, "dl": "other.png"},
        lambda q: {k: v for k, v in q.items() if k != "sig"},
    ],
    ids=["signature", "expiry", "download-name", "no-signature"],
)
def test_local_url_cannot_be_altered(local_store, client, tamper):
    local_store.put("creatives/1/a.png", png(), "image/png")
    parts = urlsplit(local_store.url("creatives/1/a.png", download_name="a.png"))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    response = client.get(parts.path, query_string=tamper(query))
    assert response.status_code == 403


def test_local_url_for_another_key_is_refused(local_store, client):
    local_store.put("creatives/1/a.png", png(), "image/png")
    local_store.put("creatives/2/secret.png", png(), "image/png")
    parts = urlsplit(local_store.url("creatives/1/a.png"))
    response = client.get(
        parts.path.replace("creatives/1/a.png", "creatives/2/secret.png") + "?" + parts.query
    )
    assert response.status_code == 403


def test_local_files_are_served_as_inert_images(local_store, client):
    local_store.put("creatives/1/a.png", png(), "image/png")
    _status, _body, headers = fetch(client, local_store.url("creatives/1/a.png"))
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"]


def test_local_keys_cannot_leave_the_store(local_store):
    for key in ("../outside.png", "/etc/passwd", "creatives/../../x.png"):
        with pytest.raises(MissingObject):
            local_store.path_for(key)


@pytest.mark.s3
def test_s3_download_route_does_not_serve_local_style_urls(app, client, request):
    request.getfixturevalue("aws_credentials")
    endpoint = request.getfixturevalue("moto_server")
    local = LocalStorage(app.config["STORAGE_LOCAL_DIR"], app.config["SECRET_KEY"], 60)
    local.put("creatives/1/a.png", png(), "image/png")
    with app.test_request_context():
        url = local.url("creatives/1/a.png")
    app.config.update(s3_settings(endpoint, make_bucket(endpoint)))
    app.extensions["storage"] = build_storage(app.config)
    assert client.get(url).status_code == 404


def test_configuration_is_checked_at_start_up(tmp_path):
    with pytest.raises(RuntimeError, match="S3_BUCKET"):
        create_app(TestingConfig, STORAGE_BACKEND="s3", S3_BUCKET=None)
    with pytest.raises(RuntimeError, match="local or s3"):
        create_app(TestingConfig, STORAGE_BACKEND="ftp")
    app = create_app(TestingConfig, STORAGE_LOCAL_DIR=str(tmp_path))
    assert isinstance(app.extensions["storage"], LocalStorage)


@pytest.mark.s3
def test_each_app_builds_one_s3_client(app, request):
    request.getfixturevalue("aws_credentials")
    endpoint = request.getfixturevalue("moto_server")
    app.config.update(s3_settings(endpoint, make_bucket(endpoint)))
    from portal import storage

    storage.init_app(app)
    with app.app_context():
        first = storage.current_storage()
        assert first is storage.current_storage()
        assert first.client is storage.current_storage().client
    assert isinstance(first, S3Storage)


@pytest.mark.s3
def test_health_reports_the_s3_store(app, client, request):
    from moto.server import ThreadedMotoServer

    request.getfixturevalue("aws_credentials")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    app.config.update(s3_settings(f"http://{host}:{port}", make_bucket(f"http://{host}:{port}")))
    app.extensions["storage"] = build_storage(app.config)
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (
        200,
        {"status": "ok", "database": "ok", "storage": "ok"},
    )
    stop_moto(server)
    response = client.get("/healthz")
    # The portal still works without its file store (uploads say "try later"): degraded, not down.
    assert (response.status_code, response.get_json()["storage"]) == (200, "degraded")
    assert response.get_json()["status"] == "degraded"
