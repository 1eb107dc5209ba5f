"""Two real server processes sharing Redis: what one emits (or a CLI job) reaches a socket on the other."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import socketio as socketio_client

from config import TestingConfig
from portal import create_app
from portal.extensions import db
from portal.models import Announcement, Partner, PartnerStatus, Program, Role, User
from portal.models.types import utcnow
from tests.conftest import free_port, migrate_database

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
SECRET = "two-servers-share-this-secret"
WAIT = 10  # seconds: generous bounds; the events normally arrive in milliseconds


def _wait_for_port(process: subprocess.Popen, port: int) -> None:
    deadline = 1200  # × 0.05 s: a loaded machine takes seconds just to import
    for _ in range(deadline):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            try:
                process.wait(timeout=0.05)  # doubles as the pause between attempts
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"server on {port} exited: {process.stderr.read().decode()[-2000:]}") from None
    raise RuntimeError(f"server on {port} did not start")


@pytest.fixture
def cluster(tmp_path, redis_url):
    """A migrated SQLite database, two `python wsgi.py` servers on it, one Redis channel of their own."""
    database = f"sqlite:///{tmp_path / 'cluster.db'}"
    migrate_database(database)
    seed_app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database, SECRET_KEY=SECRET)
    with seed_app.app_context():
        db.session.add(
            Program(
                name="Cluster", default_landing_url="https://shop.example/", allowed_domains=["shop.example"]
            )
        )
        manager = User(email="boss@example.org", name="Boss", role=Role.MANAGER, password_hash="x")
        user = User(email="pat@example.org", name="Pat", role=Role.PARTNER, password_hash="x")
        partner = Partner(
            user=user, ref_code="pat", status=PartnerStatus.APPROVED, promotion_description="x", country="US"
        )
        db.session.add_all([manager, partner])
        db.session.commit()
        ids = {"manager": manager.session_token, "partner": user.session_token, "partner_id": partner.id}
        db.engine.dispose()
    serializer = seed_app.session_interface.get_signing_serializer(seed_app)

    env = {
        **os.environ,
        "PORTAL_ENV": "development",
        "PORTAL_INSTANCE_DIR": str(tmp_path),
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "SOCKETIO_CHANNEL": f"portal-test-{uuid.uuid4().hex}",
        "SCHEDULER_ENABLED": "false",
        "RATELIMIT_ENABLED": "false",
        "RATELIMIT_STORAGE_URI": "memory://",
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
    }
    env.pop("MAIL_SERVER", None)
    servers = []
    try:
        for _ in range(2):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "wsgi.py"],
                cwd=ROOT,
                env={**env, "PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            servers.append((process, port))
        for process, port in servers:
            _wait_for_port(process, port)

        def cookie(role: str) -> str:
            return serializer.dumps({"_user_id": ids[role], "_fresh": True})

        yield {
            "urls": [f"http://127.0.0.1:{port}" for _, port in servers],
            "cookie": cookie,
            "env": env,
            "partner_id": ids["partner_id"],
            "database": database,
            "seed_app": seed_app,
        }
    finally:
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            process.stderr.close()


def _listen(url: str, cookie: str):
    """A python-socketio client on ``url`` signed in by cookie; returns (client, events, ready)."""
    client = socketio_client.Client(reconnection=False)
    received: dict[str, threading.Event] = {}
    payloads: dict[str, list] = {}

    def event(name: str) -> threading.Event:
        return received.setdefault(name, threading.Event())

    @client.on("*")
    def any_event(name, data=None):
        payloads.setdefault(name, []).append(data)
        event(name).set()

    client.connect(url, headers={"Cookie": f"session={cookie}"}, transports=["websocket"], wait_timeout=WAIT)
    assert event("ready").wait(WAIT), "the server never said ready"
    return client, event, payloads


def test_events_from_one_server_and_from_the_job_reach_a_client_of_the_other(cluster):
    server_a, server_b = cluster["urls"]
    with cluster["seed_app"].app_context():
        db.session.add(
            Announcement(
                title="Scheduled",
                body="Out now",
                audience_kind="all",
                audience_keys=[],
                publish_at=utcnow() - timedelta(minutes=1),
            )
        )
        db.session.commit()
        db.engine.dispose()
    client, event, payloads = _listen(server_b, cluster["cookie"]("partner"))
    try:
        assert payloads["ready"] == [{"room": f"partner:{cluster['partner_id']}"}]

        # 1. a manager's request handled by server A
        http = requests.Session()
        http.cookies.set("session", cluster["cookie"]("manager"), domain="127.0.0.1")
        page = http.get(f"{server_a}/admin/partners/{cluster['partner_id']}", timeout=WAIT)
        assert page.status_code == 200
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
        sent = http.post(
            f"{server_a}/admin/partners/{cluster['partner_id']}/messages",
            data={"csrf_token": token, "subject": "From server A", "body": "Hello over Redis"},
            allow_redirects=False,
            timeout=WAIT,
        )
        assert sent.status_code == 302, sent.text[:500]
        assert event("message").wait(WAIT), "server A's emit did not reach the client on server B"
        assert set(payloads["message"][0]) == {"thread", "message"}

        # 2. the CLI job, a third process
        job = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "portal", "run-triggers"],
            cwd=ROOT,
            env=cluster["env"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert job.returncode == 0, job.stderr[-2000:]
        assert "1 scheduled announcements published" in job.stdout
        assert event("announcement").wait(WAIT), "the job's emit did not reach the client"
    finally:
        client.disconnect()
