"""Shared by the benchmarks: a seeded throw-away instance, gunicorn servers, and a one-process load generator.

Files starting with ``_`` are not run by ``make bench``. This one is also run as a
script by the benchmarks themselves, in a child process with the instance's
environment (``config.py`` reads the environment once, at import):

    python bench/_common.py seed --partners 200 --links 5   # prints the generated codes as JSON
    python bench/_common.py canned PORT                      # a canned-response server (client ceiling)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PYTHON = sys.executable
HOST = "127.0.0.1"

LANDING = "https://shop.northwind-outdoor.example/"
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
)

# Settings of the environment that must not leak from the caller's shell into the servers.
_SCRUBBED_PREFIXES = ("PORTAL_", "CLICK_", "API_", "RATELIMIT_", "MAIL_", "SOCKETIO_", "GUNICORN_", "FLASK_")
_SCRUBBED = {"DATABASE_URL", "SECRET_KEY", "REDIS_URL", "PROXY_FIX_HOPS", "LOG_LEVEL", "GUNICORN_CMD_ARGS"}

# Every wait below is bounded.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0  # gunicorn's graceful_timeout is 30 s
SETUP_TIMEOUT = 300.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- command line --------------------------------------------------------------


def parse_args(description: str, default_seconds: float = 10.0) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--seconds", type=float, default=None, help=f"measured seconds per app (default {default_seconds})"
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: small data, 1 s per app")
    parser.add_argument("--concurrency", type=int, default=16, help="client connections (default 16)")
    parser.add_argument("--threads", type=int, default=50, help="gunicorn threads per worker (default 50)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (default 1)")
    parser.add_argument("--partners", type=int, default=None, help="generated partners (default 200)")
    parser.add_argument("--links", type=int, default=5, help="links per partner (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance folder")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else default_seconds
    if args.partners is None:
        args.partners = 20 if args.quick else 200
    args.warmup = 0.5 if args.quick else 2.0
    if not (0 < args.seconds <= 600 and 1 <= args.concurrency <= 256):
        parser.error("--seconds must be in (0, 600] and --concurrency in [1, 256]")
    return args


def portal_constant(module: str, name: str, default: float) -> float:
    """A constant of the portal's code, read from its source (importing the portal reads the environment)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith(f"{name} = "):
                with contextlib.suppress(ValueError):
                    return float(line.split("=", 1)[1].split("#", 1)[0].strip().replace("_", ""))
    return default


def machine_line() -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return (
        f"machine: {os.cpu_count()} cores (usable by this process: {affinity}), "
        f"Python {platform.python_version()}, gunicorn {_gunicorn_version()}, {platform.platform(terse=True)}"
    )


def _gunicorn_version() -> str:
    try:
        import gunicorn
    except ImportError:
        return "not installed"
    return gunicorn.__version__


# --- a throw-away instance ---------------------------------------------------------


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Instance:
    """A temporary folder with a migrated, seeded SQLite database and the portal's environment."""

    path: Path
    db_path: Path
    env: dict[str, str]
    codes: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    api_key: str = ""
    keep: bool = False

    def env_with(self, **overrides: str) -> dict[str, str]:
        env = dict(self.env)
        env.update(overrides)
        return env

    def count(self, table: str) -> int:
        """Rows in ``table``, read straight from the file (the servers must have stopped)."""
        connection = sqlite3.connect(self.db_path, timeout=30)
        try:
            return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - our names
        finally:
            connection.close()

    def query(self, sql: str) -> list[tuple]:
        connection = sqlite3.connect(self.db_path, timeout=30)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    def cleanup(self) -> None:
        if self.keep:
            print(f"(instance kept in {self.path})")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def prepare_instance(partners: int, links_per_partner: int, *, keep: bool = False) -> Instance:
    """A new SQLite database, migrated (Flask-Migrate's upgrade) and seeded with generated data."""
    path = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    db_path = path / "portal.db"
    env = _base_env()
    env.update(
        PORTAL_ENV="production",
        SECRET_KEY="bench-" + os.urandom(24).hex(),
        PORTAL_INSTANCE_DIR=str(path),
        DATABASE_URL=f"sqlite:///{db_path}",
        LOG_LEVEL="WARNING",
    )
    instance = Instance(path=path, db_path=db_path, env=env, keep=keep)
    try:
        # One child process migrates (Flask-Migrate's upgrade, as `flask db upgrade`) and seeds.
        seed = [str(BENCH_DIR / "_common.py"), "seed", "--partners", str(partners)]
        out = _run([PYTHON, *seed, "--links", str(links_per_partner)], env, "migrations and seed")
    except BaseException:
        instance.cleanup()
        raise
    data = json.loads(out.strip().splitlines()[-1])
    instance.codes, instance.refs, instance.api_key = data["codes"], data["refs"], data["api_key"]
    return instance


def _run(argv: list[str], env: dict[str, str], what: str) -> str:
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SETUP_TIMEOUT, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise RuntimeError(f"{what} failed (exit {result.returncode})")
    return result.stdout


def _seed(partners: int, links_per_partner: int, seed: int) -> dict:
    """Migrate, then the program, ``partners`` approved partners with ``links_per_partner`` links each
    and one API key. Rows are inserted directly (one flush per table), with destinations chosen on the
    program's allowed domains, so that a thousand links take a second, not a minute."""
    sys.path.insert(0, str(ROOT))
    from flask_migrate import upgrade
    from werkzeug.security import generate_password_hash

    from portal import create_app
    from portal.extensions import db
    from portal.models import CHANNELS, Link, Partner, PartnerStatus, Role, User
    from portal.models.types import utcnow
    from portal.services.api_keys import create_api_key
    from portal.services.links import _CODE_ALPHABET
    from portal.services.program import (
        ProgramSettings,
        get_program,
        is_allowed_destination,
        update_program_settings,
    )

    rng = random.Random(seed)
    app = create_app()
    with app.app_context():
        upgrade()  # what `flask db upgrade` does
        password_hash = generate_password_hash("bench-" + os.urandom(8).hex())  # one hash, shared
        admin = User(email="bench-admin@example.com", name="Bench Admin", role=Role.ADMIN)
        admin.password_hash = password_hash
        db.session.add(admin)
        db.session.flush()
        program = get_program()
        update_program_settings(
            program,
            admin,
            ProgramSettings(
                name="Northwind Outdoor",
                currency="USD",
                timezone="America/New_York",
                cookie_window_days=30,
                hold_period_days=30,
                allowed_domains=["northwind-outdoor.example"],
                default_landing_url=LANDING,
            ),
        )
        destinations = [
            None,
            None,
            "https://shop.northwind-outdoor.example/tents/alpine-2p",
            "https://shop.northwind-outdoor.example/c/backpacks?sort=new",
            "https://northwind-outdoor.example/journal/packing-list",
        ]
        assert all(d is None or is_allowed_destination(d, program.allowed_domains) for d in destinations)
        now = utcnow()
        refs = [f"bp{i:05d}" for i in range(partners)]
        members = []
        for i, ref in enumerate(refs):
            user = User(email=f"{ref}@partners.example", name=f"Bench Partner {i}", role=Role.PARTNER)
            user.password_hash = password_hash
            members.append(
                Partner(
                    user=user,
                    ref_code=ref,
                    status=PartnerStatus.APPROVED,
                    website=f"https://{ref}.example",
                    channels=sorted(rng.sample(CHANNELS, 2)),
                    promotion_description="Generated for the benchmarks.",
                    country=rng.choice(["US", "GB", "DE", "FR", "CA"]),
                    status_changed_at=now,
                    status_changed_by=admin,
                )
            )
        db.session.add_all(members)
        db.session.flush()
        codes: list[str] = []
        taken = set(refs)  # link codes and ref codes share /go/
        for partner in members:
            for j in range(links_per_partner):
                code = "".join(rng.choice(_CODE_ALPHABET) for _ in range(7))
                while code in taken:
                    code = "".join(rng.choice(_CODE_ALPHABET) for _ in range(7))
                taken.add(code)
                codes.append(code)
                db.session.add(
                    Link(
                        partner_id=partner.id,
                        code=code,
                        destination_url=rng.choice(destinations),
                        label=f"link {j}",
                        channel=rng.choice(CHANNELS),
                        campaign=rng.choice([None, "spring", "summer sale"]),
                        sub_id=rng.choice([None, None, f"s{j}"]),
                    )
                )
        _key, plain = create_api_key("bench", None)
        db.session.commit()
    return {"codes": codes, "refs": refs, "api_key": plain}


# --- servers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GunicornSettings:
    """One set of gunicorn settings, given as explicit flags to every app in a run."""

    worker_class: str = "gthread"
    workers: int = 1
    threads: int = 50
    keepalive: int = 2
    graceful_timeout: int = 30

    def flags(self, port: int, logdir: Path, name: str) -> list[str]:
        return [
            "--bind",
            f"{HOST}:{port}",
            "--worker-class",
            self.worker_class,
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--keep-alive",
            str(self.keepalive),
            "--graceful-timeout",
            str(self.graceful_timeout),
            "--access-logfile",
            str(logdir / f"{name}-access.log"),
            "--error-logfile",
            str(logdir / f"{name}-error.log"),
            "--log-level",
            "warning",
            # gunicorn >= 25 opens a control socket in ~/.gunicorn by default; two
            # servers (or another engineer's) would fight over it.
            "--no-control-socket",
        ]

    def describe(self) -> str:
        return (
            f"--worker-class {self.worker_class} --workers {self.workers} --threads {self.threads} "
            f"--keep-alive {self.keepalive} --graceful-timeout {self.graceful_timeout} "
            "--access-logfile <file> --no-control-socket"
        )


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (Linux /proc/stat), 0 elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / _CLOCK_TICKS


def load_line() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load average before the run: {one:.2f} (1 min), {five:.2f} (5 min)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on 127.0.0.1; ``stop()`` is SIGTERM (graceful) and a bounded wait."""

    def __init__(
        self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str], port: int, logdir: Path
    ):
        self.name = name
        self.port = port
        self.logdir = logdir
        self.output = open(logdir / f"{name}-stdout.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, path: str = "/healthz", timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
                connection.request("GET", path)
                status = connection.getresponse().status
                connection.close()
                if status < 500:
                    return
                last_error = f"HTTP {status}"
            except OSError as error:
                last_error = error
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready ({last_error}); logs:\n{self.logs()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to the gunicorn master (a graceful stop: workers run worker_exit) and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"!! {self.name} did not stop within {timeout:.0f} s; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.output.close()
        return self.process.returncode

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its worker processes (Linux /proc)."""
        total = 0.0
        for pid in [self.process.pid, *self._children()]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        return total

    def _children(self) -> list[int]:
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    pids += [int(pid) for pid in (task / "children").read_text().split()]
        return pids

    def logs(self, limit: int = 4000) -> str:
        text = ""
        for path in sorted(self.logdir.glob(f"{self.name}-*.log")):
            if "access" in path.name:
                continue
            with contextlib.suppress(OSError):
                text += f"--- {path.name}\n" + path.read_text(errors="replace")[-limit:]
        return text


def start_portal(instance: Instance, settings: GunicornSettings, name: str = "portal", **env: str) -> Server:
    """The portal from the repository's gunicorn.conf.py (for its worker_exit hook), flags overriding it."""
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    argv += [*settings.flags(port, instance.path, name), "wsgi:app"]
    server = Server(name, argv, cwd=ROOT, env=instance.env_with(**env), port=port, logdir=instance.path)
    server.wait_ready("/healthz")
    return server


def start_bare(instance: Instance, settings: GunicornSettings, name: str = "bare") -> Server:
    """bench/bare_app.py under the same flags. Run from bench/ so gunicorn finds no ./gunicorn.conf.py."""
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", *settings.flags(port, instance.path, name), "bare_app:app"]
    server = Server(name, argv, cwd=BENCH_DIR, env=_base_env(), port=port, logdir=instance.path)
    server.wait_ready("/healthz")
    return server


def start_canned(instance: Instance, status: int = 302) -> Server:
    """A single-threaded asyncio server answering every request with fixed bytes: the client's ceiling."""
    port = free_port()
    argv = [PYTHON, str(BENCH_DIR / "_common.py"), "canned", str(port), "--status", str(status)]
    server = Server("canned", argv, cwd=BENCH_DIR, env=_base_env(), port=port, logdir=instance.path)
    server.wait_ready("/healthz")
    return server


def _canned_server(port: int, status: int) -> None:
    import asyncio

    reason = {201: "Created", 302: "Found"}.get(status, "OK")
    body = b'{"ok": true}' if status == 201 else b""
    headers = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
    if status == 302:
        headers += f"Location: {LANDING}?ref=bp00001&click_id=00000000000000000000000000000000\r\n"
    canned = headers.encode() + b"\r\n" + body

    class Canned(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = b""

        def data_received(self, data):
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                length = 0
                at = head.find(b"content-length:")
                if at >= 0:
                    length = int(head[at + 15 :].split(b"\r\n", 1)[0])
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length :]
                self.transport.write(canned)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Canned, HOST, port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


# --- load ---------------------------------------------------------------------------

# (method, path, body or None, headers); a generator returns None when it has nothing more to send.
Request = tuple[str, str, bytes | None, dict[str, str]]


@dataclass
class LoadResult:
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    body_samples: dict[int, bytes] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0  # CPU seconds the server used during the window
    client_cpu: float = 0.0  # CPU seconds this (client) process used during the window
    machine_cpu: float = 0.0  # CPU seconds every process on the machine used during the window

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    def add(self, other: LoadResult) -> LoadResult:
        self.seconds += other.seconds
        self.statuses.update(other.statuses)
        self.errors += other.errors
        self.error_samples.extend(other.error_samples[: max(0, 5 - len(self.error_samples))])
        for status, body in other.body_samples.items():
            self.body_samples.setdefault(status, body)
        self.latencies.extend(other.latencies)
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu
        self.machine_cpu += other.machine_cpu
        return self

    @property
    def other_cores(self) -> float:
        """Cores kept busy by processes other than this client and the server, on average."""
        if not self.seconds or not self.machine_cpu:
            return 0.0
        return max(0.0, self.machine_cpu - self.server_cpu - self.client_cpu) / self.seconds

    def cpu_line(self, label: str) -> str:
        """Where the CPU went: the server's busy share of one core, its CPU per request, and the client's."""
        if not self.seconds or not self.requests:
            return f"{label:<8} no requests"
        return (
            f"{label:<8} server CPU {self.server_cpu / self.seconds:5.0%} of one core, "
            f"{self.server_cpu / self.requests * 1e6:6.0f} us/request;  "
            f"client CPU {self.client_cpu / self.seconds:5.0%};  "
            f"other processes {self.other_cores:4.2f} cores"
        )

    def line(self, label: str) -> str:
        extra = ""
        if self.errors:
            extra += f"  errors {self.errors}"
        odd = {s: n for s, n in self.statuses.items() if s not in (201, 302)}
        if odd:
            extra += f"  other statuses {dict(odd)}"
        return (
            f"{label:<8} {self.rps:8.0f} req/s   p50 {self.percentile(50):6.2f} ms   "
            f"p99 {self.percentile(99):6.2f} ms   ({self.requests} requests in {self.seconds:.1f} s){extra}"
        )


def run_load(
    port: int,
    make_request: Callable[[random.Random], Request | None],
    *,
    concurrency: int,
    seconds: float,
    max_requests: int = 5_000_000,
    seed: int = 1,
    server: Server | None = None,
) -> LoadResult:
    """``concurrency`` threads, each with one keep-alive connection, for ``seconds`` (and at most
    ``max_requests`` in all); redirects are not followed. Everything runs in this one process."""
    per_thread = max(1, max_requests // concurrency)
    results = [LoadResult() for _ in range(concurrency)]
    window: dict[str, float] = {}

    def open_window() -> None:  # run once, when every connection is open
        window["server_cpu"] = server.cpu_seconds() if server else 0.0
        window["client_cpu"] = time.process_time()
        window["machine_cpu"] = machine_busy_seconds()
        window["started"] = time.perf_counter()
        window["deadline"] = window["started"] + seconds

    barrier = threading.Barrier(concurrency + 1, action=open_window, timeout=30)
    max_errors = 200

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        result = results[index]
        connection = _connect(port)
        barrier.wait()
        deadline = window["deadline"]
        latencies = result.latencies
        statuses = result.statuses
        clock = time.perf_counter
        for _ in range(per_thread):
            if clock() >= deadline or result.errors >= max_errors:
                break
            request = make_request(rng)
            if request is None:  # the generator has nothing more to send
                break
            method, path, body, headers = request
            started = clock()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = _connect(port, retries=3)
                continue
            latencies.append(clock() - started)
            statuses[response.status] += 1
            if response.status not in (201, 302) and response.status not in result.body_samples:
                result.body_samples[response.status] = data[:500]
        result.seconds = clock()
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("load threads did not finish in time")
    client_cpu = time.process_time() - window["client_cpu"]
    server_cpu = server.cpu_seconds() - window["server_cpu"] if server else 0.0
    machine_cpu = machine_busy_seconds() - window["machine_cpu"]
    finished = max(r.seconds for r in results)
    total = LoadResult()
    for result in results:
        result.seconds = 0.0
        total.add(result)
    total.seconds = finished - window["started"]
    total.server_cpu, total.client_cpu, total.machine_cpu = server_cpu, client_cpu, machine_cpu
    return total


def _connect(port: int, retries: int = 0) -> http.client.HTTPConnection:
    for attempt in range(retries + 1):
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            connection.connect()
        except OSError:
            if attempt == retries:
                raise
            time.sleep(0.05)
            continue
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection
    raise AssertionError("unreachable")


def abba(
    measure_a: Callable[[float], LoadResult], measure_b: Callable[[float], LoadResult], seconds: float
) -> tuple[LoadResult, LoadResult]:
    """A, B, B, A in halves of ``seconds``: each app gets ``seconds`` and slow drift cancels out."""
    half = seconds / 2
    a, b = LoadResult(), LoadResult()
    a.add(measure_a(half))
    b.add(measure_b(half))
    b.add(measure_b(half))
    a.add(measure_a(half))
    return a, b


def each_once(items: list, make: Callable[[object], Request]) -> Callable[[random.Random], Request | None]:
    """A request generator that sends one request per item (shuffled), then stops."""
    order = list(items)
    random.Random(7).shuffle(order)
    queue = iter(order)
    lock = threading.Lock()

    def make_request(_rng: random.Random) -> Request | None:
        with lock:
            item = next(queue, None)
        return None if item is None else make(item)

    return make_request


def unique_ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):08d}"


def verdict(ratio: float, target: float) -> str:
    return f"target ≥ {target:.2f}: {'met' if ratio >= target else 'MISSED'}"


def check_counts(instance: Instance, served: LoadResult, status: int, rows: int, what: str) -> bool:
    """Print the count check (rows == answers with ``status``) and every failed request; True if all well."""
    answered = served.statuses[status]
    count_ok = rows == answered and answered > 0
    print(
        f"{what}: the portal answered {answered} {status}s (warm-up included), the database holds {rows} "
        f"-> {'PASS' if count_ok else 'FAIL'}"
    )
    failed = served.requests - answered
    if failed or served.errors:
        others = {code: n for code, n in served.statuses.items() if code != status}
        print(
            f"ERRORS: {failed} responses were not {status} {others}; "
            f"{served.errors} requests failed in the client"
        )
        for code, body in served.body_samples.items():
            print(f"  e.g. {code}: {body[:240]!r}")
        for sample in served.error_samples:
            print(f"  e.g. {sample}")
        print(f"  the portal's log: {instance.path / 'portal-error.log'} (instance kept)")
    if not count_ok or failed or served.errors:
        instance.keep = True
        return False
    return True


def noise_warning(*results: LoadResult, limit: float = 0.25) -> str | None:
    """A warning when other processes took CPU during the measurement (2 cores: it shows)."""
    busiest = max((r.other_cores for r in results), default=0.0)
    if busiest <= limit:
        return None
    return (
        f"!! other processes kept up to {busiest:.2f} cores busy during the measurement: "
        "the figures are disturbed; rerun on a quiet machine"
    )


# --- run as a script ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser("seed")
    seed.add_argument("--partners", type=int, default=200)
    seed.add_argument("--links", type=int, default=5)
    seed.add_argument("--seed", type=int, default=20261124)
    canned = commands.add_parser("canned")
    canned.add_argument("port", type=int)
    canned.add_argument("--status", type=int, default=302)
    args = parser.parse_args()
    if args.command == "seed":
        print(json.dumps(_seed(args.partners, args.links, args.seed)))
    else:
        _canned_server(args.port, args.status)


if __name__ == "__main__":
    main()
