"""Shared by the benchmarks: a seeded throw-away instance (SQLite, or a PostgreSQL database
given with ``--pg-url``), and gunicorn servers. The load comes from ``wrk`` (``_wrk.py``).

Files starting with ``_`` are not run by ``make bench``. This one is also run as a
script by the benchmarks themselves, in a child process with the instance's
environment (``config.py`` reads the environment once, at import):

    python bench/_common.py seed --partners 200 --links 5   # prints the generated codes as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


# Never these: the shared test database and the server's own.
FORBIDDEN_PG_DATABASES = {"test", "postgres", "template0", "template1"}


def parse_args(description: str, default_seconds: float = 10.0) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--seconds", type=float, default=None, help=f"measured seconds per app (default {default_seconds})"
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: small data, 2 s per app")
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--client-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--partners", type=int, default=None, help="generated partners (default 200)")
    parser.add_argument("--links", type=int, default=5, help="links per partner (default 5)")
    parser.add_argument(
        "--pg-url",
        default=None,
        help="run on this PostgreSQL database instead of SQLite; its schema is dropped and re-created, "
        "so give a throw-away database (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/bench)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance folder")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else default_seconds
    if args.partners is None:
        args.partners = 20 if args.quick else 200
    args.warmup = 1.0 if args.quick else 3.0
    if not (0 < args.seconds <= 600 and 1 <= args.concurrency <= 256):
        parser.error("--seconds must be in (0, 600] and --concurrency in [1, 256]")
    if args.client_threads > args.concurrency:
        parser.error("--client-threads must not exceed --concurrency")
    if args.pg_url:
        from sqlalchemy.engine import make_url

        if make_url(args.pg_url).database in FORBIDDEN_PG_DATABASES:
            parser.error(
                f"refusing to drop the schema of {make_url(args.pg_url).database!r}; use a throw-away one"
            )
    return args


def database_label(args: argparse.Namespace) -> str:
    return "PostgreSQL" if args.pg_url else "SQLite"


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
    """A temporary folder with a migrated, seeded database (a SQLite file in it, or the
    PostgreSQL database given) and the portal's environment."""

    path: Path
    url: str
    env: dict[str, str]
    codes: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    api_key: str = ""
    keep: bool = False

    def env_with(self, **overrides: str) -> dict[str, str]:
        env = dict(self.env)
        env.update(overrides)
        return env

    def query(self, sql: str) -> list[tuple]:
        """Rows of ``sql``, read straight from the database (the servers must have stopped)."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.exec_driver_sql(sql)]
        finally:
            engine.dispose()

    def count(self, table: str) -> int:
        return self.query(f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 - our names

    def check(self, what: str, ids: list[str]) -> dict:
        """The end check of ``what`` ("clicks" or "conversions", bench/_checks.py) in a child
        process with the instance's environment, given the ids the portal answered with."""
        ids_file = self.path / f"answered-{what}.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        out = _run(
            [PYTHON, str(BENCH_DIR / "_checks.py"), what, str(ids_file)], self.env, f"the {what} check"
        )
        return json.loads(out.strip().splitlines()[-1])

    def cleanup(self) -> None:
        if self.keep:
            print(f"(instance kept in {self.path})")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def ensure_database(url: str) -> None:
    """Create ``url``'s PostgreSQL database if the server has none of that name yet: a
    throw-away database named on the command line (or a bench's default) need not be made by
    hand first on a fresh machine. Created from the server's ``postgres`` database."""
    import re

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    target = make_url(url)
    name = target.database or ""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise SystemExit(f"refusing to create a database named {name!r}: letters, digits and _ only")
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")
            if connection.execute(exists, {"name": name}).first() is None:
                # The name is checked above; CREATE DATABASE takes no bound parameter.
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                print(f"created the PostgreSQL database {name!r} for this bench")
    finally:
        engine.dispose()


def _reset_postgres(url: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    # Every bench that drops a schema comes through here, whatever its own options checked.
    name = make_url(url).database
    if name in FORBIDDEN_PG_DATABASES:
        raise SystemExit(f"refusing to drop the schema of {name!r}; use a throw-away database")
    ensure_database(url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


def prepare_instance(
    partners: int, links_per_partner: int, *, keep: bool = False, pg_url: str | None = None
) -> Instance:
    """A new database (a SQLite file, or ``pg_url``'s schema dropped and re-created), migrated
    (Flask-Migrate's upgrade) and seeded with generated data."""
    path = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    if pg_url:
        _reset_postgres(pg_url)
        url = pg_url
    else:
        url = f"sqlite:///{path / 'portal.db'}"
    env = _base_env()
    env.update(
        PORTAL_ENV="production",
        SECRET_KEY="bench-" + os.urandom(24).hex(),
        PORTAL_INSTANCE_DIR=str(path),
        DATABASE_URL=url,
        LOG_LEVEL="WARNING",
        # Production refuses to start without it; 127.0.0.1 is also a trusted host.
        PORTAL_BASE_URL=f"http://{HOST}",
    )
    instance = Instance(path=path, url=url, env=env, keep=keep)
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
        _add_reward_rules(db, now)
        _key, plain = create_api_key("bench", None)
        db.session.commit()
    return {"codes": codes, "refs": refs, "api_key": plain}


# The reward rules every bench instance has (the conversion API's work depends on them):
# two tiers a busy partner reaches during a run, the monthly ladder, and a bonus campaign
# open to everyone. bench/_checks.py replays every sale against these.
BENCH_TIERS = (
    # name, rank, percent (bp), metric, threshold, period
    ("Silver", 1, 1200, "conversions", 8, "rolling_30"),
    ("Gold", 2, 1500, "revenue", 400_000, "previous_month"),
)
BENCH_CAMPAIGN_BONUS_MINOR = 150


def _add_reward_rules(db, now) -> None:
    from datetime import timedelta

    from portal.models import Campaign, LadderStep, Tier

    for name, rank, bp, metric, threshold, period in BENCH_TIERS:
        db.session.add(
            Tier(
                name=name,
                rank=rank,
                rate_type="percent",
                rate_percent_bp=bp,
                rate_flat_minor=0,
                threshold_metric=metric,
                threshold_value=threshold,
                period=period,
            )
        )
    db.session.add_all(
        [
            LadderStep(threshold_conversions=25, bonus_minor=5_000),
            LadderStep(threshold_conversions=100, bonus_minor=25_000),
        ]
    )
    db.session.add(
        Campaign(
            name="Bench week",
            starts_at=now - timedelta(days=3),
            ends_at=now + timedelta(days=4),
            reward="bonus",
            bonus_minor=BENCH_CAMPAIGN_BONUS_MINOR,
        )
    )
    db.session.flush()


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
            # Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads
            # wrk's connections over them. On one shared socket the worker awake first took
            # most of each run's 16 kept-alive connections, often all: that run then measured
            # one process (one GIL) at half the throughput, for either app, at random.
            "--reuse-port",
        ]

    def describe(self) -> str:
        return (
            f"--worker-class {self.worker_class} --workers {self.workers} --threads {self.threads} "
            f"--keep-alive {self.keepalive} --graceful-timeout {self.graceful_timeout} "
            "--access-logfile <file> --no-control-socket --reuse-port"
        )


# OS thread names (portal/osthreads.py; Linux keeps 15 bytes) -> what the benches call them.
_NAMED_THREADS = {
    "sale-writer": "sale writer",
    "outbox-dispatch": "outbox dispatcher",
    "click-writer": "click writer",
    "mail-sender": "mail sender",
}


def thread_kind(comm: str, *, main: bool, master: bool) -> str:
    """What a server thread is, from its OS name: the portal's named background threads, the
    gunicorn master, a worker's main thread (gthread: its accept and keep-alive loop), and the
    rest (gunicorn's request threads, and any thread nobody named)."""
    if master:
        return "gunicorn master"
    for prefix, kind in _NAMED_THREADS.items():
        if comm.startswith(prefix):
            return kind
    return "worker main thread" if main else "request threads"


def postgres_cpu_seconds(proc: str = "/proc") -> float:
    """CPU seconds used so far by this machine's PostgreSQL server processes (0 where /proc
    cannot tell). Each process counts with its reaped children's: a backend that exits
    between two readings leaves its share in the postmaster's (which waits for it), so the
    difference of two readings never goes below zero."""
    total = 0.0
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{proc}/{entry.name}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(") ")
        if name in ("postgres", "postmaster"):
            fields = rest.split()  # fields[11:15]: utime, stime, cutime, cstime (proc(5))
            total += sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS
    return total


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
        self,
        name: str,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        port: int,
        logdir: Path,
        sched_batch: bool = False,
    ):
        self.name = name
        self.port = port
        self.logdir = logdir
        self.output = open(logdir / f"{name}-stdout.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_sched_batch if sched_batch else None,  # the bench runs no threads
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

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the server's processes, by thread (``thread_kind``): the
        portal names its background threads in the OS (portal/osthreads.py). A thread that ends
        between two readings takes its share with it."""
        totals: dict[str, float] = {}
        for pid, master in [(self.process.pid, True), *((child, False) for child in self._children())]:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        comm = (task / "comm").read_text().strip()
                        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                        kind = thread_kind(comm, main=task.name == str(pid), master=master)
                        seconds = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
                        totals[kind] = totals.get(kind, 0.0) + seconds
        return totals

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


def _sched_batch() -> None:
    """The bare app's master (and so its workers) under SCHED_BATCH, as the portal's
    ``portal.osthreads.batch_scheduling`` does; not imported from there, since importing the
    portal reads the environment (see the top of this file)."""
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def batch_scheduling(instance: Instance) -> bool:
    """Whether the portal's workers run under Linux's SCHED_BATCH: its gunicorn.conf.py does so
    unless GUNICORN_SCHEDULING=normal, which no bench passes (the caller's GUNICORN_* settings
    are scrubbed). The bare app then gets it too (its master, before it forks the workers), so
    a bench compares the apps, not two scheduling policies: under it the bare app answered
    about 10 % more requests as well."""
    return hasattr(os, "SCHED_BATCH") and instance.env.get("GUNICORN_SCHEDULING", "batch") == "batch"


def scheduling_line(instance: Instance) -> str:
    if batch_scheduling(instance):
        return (
            "scheduling, both apps' workers: SCHED_BATCH "
            "(the portal's gunicorn.conf.py; README: Worker scheduling)"
        )
    return "scheduling, both apps' workers: the operating system's default (no SCHED_BATCH here)"


def dispatcher_process_env(channel: str) -> dict[str, str]:
    """The portal's settings for its outbox dispatcher as a process of its own
    (OUTBOX_DISPATCH_MODE=process), with the Redis it needs for live events: REDIS_URL from
    the environment, else redis://127.0.0.1:6379/6; a Socket.IO ``channel`` of the bench's
    own. Exits with a message when Redis does not answer."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/6"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        raise SystemExit(
            f"Redis at {url} does not answer ({exc}): the portal's dispatcher process needs it "
            "(set REDIS_URL, or start Redis)"
        ) from exc
    return {"OUTBOX_DISPATCH_MODE": "process", "REDIS_URL": url, "SOCKETIO_CHANNEL": channel}


def start_portal(instance: Instance, settings: GunicornSettings, name: str = "portal", **env: str) -> Server:
    """The portal from the repository's gunicorn.conf.py (for its hooks), flags overriding it."""
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
    server = Server(
        name,
        argv,
        cwd=BENCH_DIR,
        env=_base_env(),
        port=port,
        logdir=instance.path,
        sched_batch=batch_scheduling(instance),
    )
    server.wait_ready("/healthz")
    return server


# --- run as a script ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser("seed")
    seed.add_argument("--partners", type=int, default=200)
    seed.add_argument("--links", type=int, default=5)
    seed.add_argument("--seed", type=int, default=20261124)
    args = parser.parse_args()
    if args.command == "seed":
        print(json.dumps(_seed(args.partners, args.links, args.seed)))


if __name__ == "__main__":
    main()
