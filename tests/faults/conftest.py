"""The fault suite's services: a throwaway PostgreSQL cluster, Redis, an aiosmtpd server and a
moto S3 server, each on a free loopback port, that a test can stop, freeze (SIGSTOP) and bring
back; and the portal itself as a real gunicorn server pointed at them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, migrate_database
from tests.faults._click_services import need, signal_tree

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "fault-suite-secret-key"
PASSWORD = "fault-suite-pass-phrase"


def _need(*programs: str) -> None:
    need(*programs)  # one rule for the whole fault suite: skipped here, a failure under CI=true


def wait_for(condition: Callable[[], bool], timeout: float, what: str, pause: float = 0.05) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails the test after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001, S110 - not ready yet
            pass
        time.sleep(pause)
    pytest.fail(f"{what} did not happen within {timeout} s")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- PostgreSQL -------------------------------------------------------------------------------


class Postgres:
    def __init__(self):
        _need("initdb", "pg_ctl")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="portal-faults-pg-"))
        self.data = self.dir / "data"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/portal"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def freeze(self) -> None:
        signal_tree(self.postmaster(), signal.SIGSTOP)

    def thaw(self) -> None:
        signal_tree(self.postmaster(), signal.SIGCONT)

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute("CREATE DATABASE portal")

    def close(self) -> None:
        try:
            self.thaw()
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except Exception:  # noqa: BLE001, S110 - already stopped
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# --- Redis, moto: plain processes -------------------------------------------------------------


class Process:
    def __init__(self, command: Callable[[int], list[str]], port: int | None = None):
        self.command = command
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command(self.port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: port_open(self.port), 30, f"{self.command(self.port)[0]} listening")

    def stop(self) -> None:
        if self.process is not None:
            self.thaw()
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)


def redis_process() -> Process:
    _need("redis-server")
    return Process(
        lambda port: [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
    )


def moto_process() -> Process:
    return Process(lambda port: [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])


# --- SMTP: aiosmtpd, or a server that accepts and never answers --------------------------------


class Smtp:
    def __init__(self):
        self.port = free_port()
        self.messages: list = []
        self.lock = threading.Lock()
        self.controller = None
        self.silent: socket.socket | None = None
        self._held: list[socket.socket] = []

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes
        from email.policy import default

        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def go_silent(self) -> None:
        """Listen on the port and never say a word (a hung mail server)."""
        self.stop()
        self.silent = listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)

        def hold():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                self._held.append(conn)

        threading.Thread(target=hold, daemon=True).start()

    def stop_silent(self) -> None:
        if self.silent is not None:
            # shutdown() first: close() alone leaves a socket blocked in accept() listening.
            with contextlib.suppress(OSError):
                self.silent.shutdown(socket.SHUT_RDWR)
            self.silent.close()
            for conn in self._held:
                conn.close()
            self.silent, self._held = None, []

    def subjects(self) -> list[str]:
        with self.lock:
            return sorted(str(m["Subject"]) for m in self.messages)


# --- the portal as a real server ---------------------------------------------------------------


class Portal:
    """gunicorn from the venv with the production settings, one worker (events on the same worker)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.env = {**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: requests.get(f"{self.url}/livez", timeout=1).ok, 60, "the portal answering /livez", 0.2
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> float:
        """Stop the server; the seconds it took to exit."""
        if self.process is None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self._log.close()
        return time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> Iterator[dict]:
    """Every dependency, running, for the whole fault suite; tests leave them running."""
    postgres = Postgres()
    redis = redis_process()
    moto = moto_process()
    smtp = Smtp()
    try:
        postgres.start()
        postgres.create_database()
        migrate_database(postgres.url)
        redis.start()
        moto.start()
        smtp.start()
        yield {"postgres": postgres, "redis": redis, "moto": moto, "smtp": smtp}
    finally:
        smtp.stop_silent()
        smtp.stop()
        moto.stop()
        redis.stop()
        postgres.close()


AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "portal-faults"


def create_bucket(moto_port: int) -> str:
    """The suite's bucket on the moto server (again after a restart: moto keeps it in memory)."""
    from portal.storage import S3Storage

    saved = {name: os.environ.get(name) for name in AWS}
    os.environ.update(AWS)
    try:
        client = S3Storage(BUCKET, region="us-east-1", endpoint_url=f"http://127.0.0.1:{moto_port}").client
        client.create_bucket(Bucket=BUCKET)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return BUCKET


@pytest.fixture(scope="session")
def seeded(services) -> dict:
    """A program, a manager, an approved partner (with a password) and an API key."""
    from config import TestingConfig
    from portal import create_app
    from portal.extensions import db
    from portal.models import Partner, PartnerStatus, Program, Role, User
    from portal.services.api_keys import create_api_key

    bucket = create_bucket(services["moto"].port)
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=services["postgres"].url,
        SECRET_KEY=SECRET,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=services["smtp"].port,
        MAIL_TIMEOUT=3,
        MAIL_RETRY_FIRST_SECONDS=1,
        SERVER_NAME=None,
    )
    with app.app_context():
        db.session.add(
            Program(
                name="Faults", default_landing_url="https://shop.example/", allowed_domains=["shop.example"]
            )
        )
        manager = User(email="boss@example.org", name="Boss", role=Role.MANAGER)
        manager.set_password(PASSWORD)
        user = User(email="pat@example.org", name="Pat", role=Role.PARTNER)
        user.set_password(PASSWORD)
        partner = Partner(
            user=user, ref_code="pat", status=PartnerStatus.APPROVED, promotion_description="x", country="US"
        )
        db.session.add_all([manager, partner])
        db.session.flush()
        _key, plain = create_api_key("faults", None)
        db.session.commit()
        ids = {"manager": manager.session_token, "partner": user.session_token}
        partner_id = partner.id
    serializer = app.session_interface.get_signing_serializer(app)
    return {
        "app": app,
        "api_key": plain,
        "partner_id": partner_id,
        "bucket": bucket,
        "cookie": lambda role, **extra: serializer.dumps({"_user_id": ids[role], "_fresh": True, **extra}),
    }


def portal_env(services: dict, seeded: dict, tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        **AWS,
        "PORTAL_ENV": "production",
        # Production refuses to start without its canonical origin (loopback here: Host 127.0.0.1:<port>).
        "PORTAL_BASE_URL": "http://127.0.0.1",
        "PORTAL_INSTANCE_DIR": str(tmp),
        "SECRET_KEY": SECRET,
        "SESSION_COOKIE_SECURE": "false",
        "DATABASE_URL": services["postgres"].url,
        "REDIS_URL": f"redis://127.0.0.1:{services['redis'].port}/0",
        "RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:{services['redis'].port}/0",
        "SOCKETIO_CHANNEL": f"faults-{uuid.uuid4().hex}",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(services["smtp"].port),
        "MAIL_TIMEOUT_SECONDS": "3",
        "MAIL_RETRY_FIRST_SECONDS": "1",
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": seeded["bucket"],
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{services['moto'].port}",
        "S3_REGION": "us-east-1",
        "S3_TIMEOUT_SECONDS": "5",
        "S3_MAX_ATTEMPTS": "1",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "24",
        "SCHEDULER_ENABLED": "false",
        "LOG_LEVEL": "INFO",
    }
    env.pop("GUNICORN_CONTROL_SOCKET", None)
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def portal(services, seeded, tmp_path_factory) -> Iterator[Portal]:
    tmp = tmp_path_factory.mktemp("portal")
    server = Portal(portal_env(services, seeded, tmp), tmp / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lean_portal(services, seeded, tmp_path_factory) -> Iterator[Portal]:
    """The portal with the API's own budget off (API_RATE_LIMIT=off), as a brand reporting
    many sales a second runs it: its sales are answered at the WSGI level
    (portal/blueprints/api/lean.py), not by the Flask view."""
    tmp = tmp_path_factory.mktemp("lean-portal")
    server = Portal(portal_env(services, seeded, tmp, API_RATE_LIMIT="off"), tmp / "server.log")
    server.start()
    yield server
    server.stop()


def csrf_session(portal: Portal, seeded: dict, role: str) -> tuple[requests.Session, str]:
    """A requests session signed in as ``role`` and a CSRF token for its forms (as Flask-WTF makes them)."""
    from itsdangerous import URLSafeTimedSerializer

    raw = uuid.uuid4().hex
    http = requests.Session()
    http.headers["Cookie"] = f"session={seeded['cookie'](role, csrf_token=raw)}"
    return http, URLSafeTimedSerializer(SECRET, salt="wtf-csrf-token").dumps(raw)
