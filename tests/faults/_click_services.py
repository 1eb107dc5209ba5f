"""Throwaway services for the click-path fault tests: a PostgreSQL cluster (initdb + pg_ctl),
a Redis server, gunicorn portals and an nginx in front of them, each on free loopback ports,
each stopped, killed or restarted by the test."""

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
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import free_port, migrate_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "click-faults-secret-key"
IN_CI = os.environ.get("CI", "").lower() == "true"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36"}


def need(*programs: str) -> None:
    """Skip (fail under CI=true) when a program the test starts is not installed."""
    missing = [p for p in programs if shutil.which(p) is None and not Path(p).exists()]
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true but not installed: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, pause: float = 0.1) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if condition():
                return time.monotonic() - started
        time.sleep(pause)
    pytest.fail(f"{what} did not happen within {timeout} s")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to a process and all its descendants (PostgreSQL's backends, say)."""
    for each in _descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, sig)


class Postgres:
    """A PostgreSQL cluster of its own (as the postgres user when run as root)."""

    def __init__(self):
        need("initdb", "pg_ctl")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="portal-clicks-pg-"))
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
            "-c synchronous_commit=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def freeze(self) -> None:
        """SIGSTOP to the server and its backends: it accepts connections and never answers."""
        signal_tree(self.postmaster(), signal.SIGSTOP)

    def thaw(self) -> None:
        signal_tree(self.postmaster(), signal.SIGCONT)

    def create_database(self) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute("CREATE DATABASE portal")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self):
        need("redis-server")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 30, "redis-server listening")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)


class Portal:
    """The portal under gunicorn (production settings), killed or stopped as a test says."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2):
        self.port = free_port()
        self.env = {**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": str(workers)}
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a SIGKILL takes the workers too
            )
        wait_for(lambda: requests.get(f"{self.url}/healthz", timeout=2) is not None, 60, "the portal up")

    def stop(self, timeout: float = 40) -> None:
        """SIGTERM: gunicorn's graceful stop (each worker's worker_exit hook runs)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def kill(self) -> None:
        """SIGKILL to the master and every worker at once: nothing runs on the way out."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Nginx:
    """Debian's nginx, in the foreground, with its own prefix, pid, logs and temp paths."""

    BINARY = "/usr/sbin/nginx"

    def __init__(self, upstreams: list[int], directory: Path):
        need(self.BINARY)
        self.port = free_port()
        self.dir = directory
        for sub in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        template = (ROOT / "deploy" / "nginx" / "portal.conf").read_text()
        servers = "".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;\n" for port in upstreams)
        site = template.replace("    server 127.0.0.1:8001 max_fails=1 fail_timeout=5s;\n", "").replace(
            "    server 127.0.0.1:8002 max_fails=1 fail_timeout=5s;\n", servers
        )
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};").replace(
            "server_name portal.example.com;", "server_name _;"
        )
        assert servers in site and f"listen 127.0.0.1:{self.port};" in site, "the shipped config changed"
        config = f"""
daemon off;
master_process on;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {self.dir}/logs/access.log;
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
{site}
}}
"""
        self.config = self.dir / "nginx.conf"
        self.config.write_text(config)
        subprocess.run(
            [self.BINARY, "-t", "-p", str(self.dir), "-c", str(self.config)], check=True, capture_output=True
        )
        self.process = subprocess.Popen(
            [self.BINARY, "-p", str(self.dir), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 20, "nginx listening")
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def click_postgres() -> Iterator[Postgres]:
    postgres = Postgres()
    try:
        postgres.start()
        postgres.create_database()
        migrate_database(postgres.url)
        yield postgres
    finally:
        postgres.close()


@pytest.fixture(scope="module")
def click_redis() -> Iterator[Redis]:
    redis = Redis()
    yield redis
    redis.close()


@pytest.fixture(scope="module")
def click_seed(click_postgres) -> dict:
    """A program, a manager, an approved partner "pat" with a link, and an API key."""
    from config import TestingConfig
    from portal import create_app
    from portal.extensions import db
    from portal.models import Link, Partner, PartnerStatus, Program, Role, User
    from portal.services.api_keys import create_api_key

    app = create_app(
        TestingConfig, SQLALCHEMY_DATABASE_URI=click_postgres.url, SECRET_KEY=SECRET, SERVER_NAME=None
    )
    with app.app_context():
        db.session.add(
            Program(
                name="Faults", default_landing_url="https://shop.example/", allowed_domains=["shop.example"]
            )
        )
        manager = User(email="boss@example.org", name="Boss", role=Role.MANAGER)
        manager.set_password("click-faults-pass-phrase")
        user = User(email="pat@example.org", name="Pat", role=Role.PARTNER)
        user.set_password("click-faults-pass-phrase")
        partner = Partner(
            user=user, ref_code="pat", status=PartnerStatus.APPROVED, promotion_description="x", country="US"
        )
        db.session.add_all([manager, partner])
        db.session.flush()
        link = Link(partner_id=partner.id, code="shoes", label="Shoes", channel="seo")
        db.session.add(link)
        _key, plain = create_api_key("click faults", None)
        db.session.commit()
        tokens = {"manager": manager.session_token, "partner": user.session_token}
        seed = {"partner_id": partner.id, "link_id": link.id}
    serializer = app.session_interface.get_signing_serializer(app)
    return {
        **seed,
        "app": app,
        "api_key": plain,
        "cookie": lambda role: serializer.dumps({"_user_id": tokens[role], "_fresh": True}),
    }


def portal_env(database_url: str, redis_url: str | None, tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PORTAL_ENV": "production",
        # Production refuses to start without its canonical origin (loopback here: Host 127.0.0.1:<port>).
        "PORTAL_BASE_URL": "http://127.0.0.1",
        "PORTAL_INSTANCE_DIR": str(tmp),
        "CLICK_SPOOL_DIR": str(tmp / "click-spool"),
        "SECRET_KEY": SECRET,
        "SESSION_COOKIE_SECURE": "false",
        "DATABASE_URL": database_url,
        "GUNICORN_THREADS": "16",
        "SCHEDULER_ENABLED": "false",
        "STORAGE_BACKEND": "local",
        "LOG_LEVEL": "INFO",
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "SOCKETIO_CHANNEL": f"click-faults-{uuid.uuid4().hex}",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)
    env.pop("GUNICORN_CONTROL_SOCKET", None)
    env.update(overrides)
    return env


def click_id_of(response: requests.Response) -> str | None:
    location = response.headers.get("Location", "")
    return parse_qs(urlsplit(location).query).get("click_id", [None])[0]


class Flood:
    """Threads following a link as fast as they can; the click ids of every answered 302."""

    def __init__(self, base_url: str, code: str = "shoes", threads: int = 8):
        self.base_url = base_url
        self.code = code
        self.answered: set[str] = set()
        self.sent = 0
        self.errors = 0  # no answer: connection refused or reset (a killed node)
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        http = requests.Session()
        while not self._stop.is_set():
            with self._lock:
                self.sent += 1
            try:
                response = http.get(
                    f"{self.base_url}/go/{self.code}", headers=BROWSER, allow_redirects=False, timeout=10
                )
            except requests.RequestException:
                with self._lock:
                    self.errors += 1
                http = requests.Session()
                time.sleep(0.01)
                continue
            click_id = click_id_of(response) if response.status_code == 302 else None
            with self._lock:
                self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                if click_id:
                    self.answered.add(click_id)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)


def stored_click_ids(database_url: str) -> set[str]:
    import psycopg

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM clicks")}


def clear_clicks(database_url: str) -> None:
    """Forget the clicks of earlier tests. Sales stay: the ledger's triggers refuse to delete a
    conversion (migration 0011), and a sale's click id is set to NULL with its click."""
    import psycopg

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DELETE FROM clicks")


def spool_lines(directory: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in directory.glob("*.clicks"))
