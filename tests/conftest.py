"""Test harness: apps, a rolled-back database per test, clients, logins, real services.

* Every test runs on SQLite. Tests marked ``postgres`` run on PostgreSQL too when
  ``PORTAL_TEST_POSTGRES_URL`` is set.
* Tests marked ``redis`` need ``REDIS_URL``; ``e2e`` tests need /usr/bin/chromium.
* Tests marked ``s3`` run the S3 store through real boto3 against moto's server, which
  the tests start themselves on a free port (so it is never missing).
* Under ``CI=true`` a missing service is a failure, never a skip.
* ``--clock=night`` (or ``late``, ``month-end``, or an ISO instant; also ``PORTAL_TEST_CLOCK``)
  runs the whole session with the clock pinned there and ticking, so a test that compares the
  real date with the program's date fails by day, not only at night. ``night`` (00:30 UTC) is
  still the day before in New York (the demo program); ``late`` (23:30 UTC) is already the next
  day in Berlin (the factories' programs); ``month-end`` is 23:30 on a month's last day in Berlin.
  ``--clock=night,late,month-end`` runs every test once per clock in one session (fixture
  ``pinned_clock``), so the start-up is paid once. A test marked ``own_clock`` (the harness pins
  its clock, not ticking, for all its fixtures and its body) is left out of ``--clock`` runs.
* Under pytest-xdist each worker gets its own PostgreSQL database (``<name>_gw0``, …), so
  workers never reset each other's schema.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import jinja2.bccache
import pytest
import sqlalchemy as sa
from flask import g, has_app_context
from flask.testing import FlaskClient
from flask_sqlalchemy.session import Session as FlaskSession

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import PartnerStatus, Role, User

IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("REDIS_URL")
CHROMIUM = os.environ.get("PORTAL_TEST_CHROMIUM", "/usr/bin/chromium")
MIGRATIONS = str(Path(__file__).resolve().parent.parent / "migrations")
# The programs the factories make keep their days in this zone (tests.factories.ProgramFactory).
PROGRAM_TIMEZONE = ZoneInfo("Europe/Berlin")


def _worker_database(url: str | None) -> str | None:
    """Under pytest-xdist, ``url`` with the worker's name appended to the database name."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    parsed = sa.engine.make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


POSTGRES_URL = _worker_database(os.environ.get("PORTAL_TEST_POSTGRES_URL"))


# --- what every test's fresh app would build again -------------------------------------


def _share_url_builders() -> None:
    """Each test makes its own app (create_app), and werkzeug compiles two URL-building functions
    per rule for each: two thirds of create_app's time (~50 of ~70 ms). A builder depends only on
    the rule's parsed parts (``_trace``) and defaults, and takes its rule as ``self``: rules alike
    share one. A rule whose defaults fill one of its variables (converted by that rule's
    converter) builds its own; so does every rule if werkzeug's internals change."""
    from werkzeug.routing.rules import Rule

    compile_builder = getattr(Rule, "_compile_builder", None)
    if compile_builder is None or getattr(compile_builder, "_portal_shared", False):
        return
    builders: dict[tuple, object] = {}

    def shared_builder(self, append_unknown: bool = True):
        trace = getattr(self, "_trace", None)
        defaults = self.defaults or {}
        if trace is None or any(dynamic and data in defaults for dynamic, data in trace):
            return compile_builder(self, append_unknown)
        key = (append_unknown, self.rule, tuple(trace), tuple(sorted(defaults)))
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = compile_builder(self, append_unknown)
        return builder

    shared_builder._portal_shared = True
    Rule._compile_builder = shared_builder


_share_url_builders()


# --- the clock of the whole run --------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--clock",
        default=os.environ.get("PORTAL_TEST_CLOCK") or None,
        help="pin the run's clock: 'night' (today 00:30 UTC: yesterday in New York), 'late' (today "
        "23:30 UTC: tomorrow in Berlin), 'month-end' (23:30 on the last day of this month in the "
        "programs' time zone) or an ISO 8601 instant; the clock ticks from there. Several, "
        "comma-separated: every test runs once per clock, in one session",
    )


def pinned_clocks(config: pytest.Config) -> list[str]:
    """The ``--clock`` values, in order (none: the real clock)."""
    value = config.getoption("--clock") or ""
    return [part.strip() for part in value.split(",") if part.strip()]


def clock_instant(value: str, today: date | None = None) -> datetime:
    """The UTC instant a ``--clock`` value names."""
    today = today or datetime.now(UTC).date()
    if value == "night":
        return datetime.combine(today, time(0, 30), tzinfo=UTC)
    if value == "late":
        return datetime.combine(today, time(23, 30), tzinfo=UTC)
    if value == "month-end":
        first_of_next = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
        last_day = first_of_next - timedelta(days=1)
        return datetime.combine(last_day, time(23, 30), tzinfo=PROGRAM_TIMEZONE).astimezone(UTC)
    instant = datetime.fromisoformat(value)
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def pytest_configure(config: pytest.Config) -> None:
    clocks = pinned_clocks(config)
    for value in clocks:
        clock_instant(value)  # a bad value fails here, before any test
    if len(clocks) == 1:
        import time_machine

        traveller = time_machine.travel(clock_instant(clocks[0]), tick=True)
        traveller.start()
        config._portal_clock = traveller  # stopped in pytest_unconfigure


def pytest_unconfigure(config: pytest.Config) -> None:
    traveller = getattr(config, "_portal_clock", None)
    if traveller is not None:
        traveller.stop()


def pytest_report_header(config: pytest.Config) -> str | None:
    clocks = pinned_clocks(config)
    if clocks:
        pins = ", ".join(f"{value} = {clock_instant(value).isoformat()}" for value in clocks)
        each = " (every test once per clock)" if len(clocks) > 1 else ""
        return f"clock pinned: {pins} (ticking){each}"
    return None


@pytest.fixture(scope="session", autouse=True)
def pinned_clock(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Under ``--clock=a,b,…`` the clock its tests run at, pinned and ticking (None otherwise:
    the real clock, or one ``--clock`` pinned for the whole session).

    Session-scoped and autouse, so it is set up before every other fixture of its tests, and pytest
    runs the tests of one clock together; a session fixture that keeps dates (the browser suite's
    live server and its seeded data) asks for it, and is made again for each clock."""
    value = getattr(request, "param", None)
    if value is None:
        yield None
        return
    import time_machine

    with time_machine.travel(clock_instant(value), tick=True):
        yield value


# --- which services this run has -------------------------------------------------


def _missing_services(item: pytest.Item) -> list[str]:
    missing = []
    if item.get_closest_marker("redis") and not REDIS_URL:
        missing.append("Redis (set REDIS_URL)")
    if item.get_closest_marker("e2e") and not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    callspec = getattr(item, "callspec", None)
    if callspec and callspec.params.get("database_backend") == "postgresql" and not POSTGRES_URL:
        missing.append("PostgreSQL (set PORTAL_TEST_POSTGRES_URL)")
    return missing


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    clocks = pinned_clocks(metafunc.config)
    if len(clocks) > 1:
        metafunc.parametrize(
            "pinned_clock", clocks, indirect=True, scope="session", ids=[f"clock={c}" for c in clocks]
        )
    if "database_backend" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("postgres_only"):
            # No SQLite variant to skip; without PostgreSQL it is skipped locally, failed in CI.
            metafunc.parametrize("database_backend", ["postgresql"], scope="session")
            return
        backends = ["sqlite"]
        # PostgreSQL variants exist when it is configured, and always in CI,
        # where a missing server must fail rather than vanish.
        if metafunc.definition.get_closest_marker("postgres") and (POSTGRES_URL or IN_CI):
            backends.append("postgresql")
        metafunc.parametrize("database_backend", backends, scope="session")


# The money, payout and rewards tests: `make test` runs them again with the clock pinned where
# the UTC date and the programs' dates differ (marker ``money``). A new money test module joins
# here. Browser modules join only through MONEY_E2E_MODULES (each costs a Chromium per run).
MONEY_MODULES = {
    "test_api.py",
    "test_commissions.py",
    "test_concurrency.py",
    "test_demo_ledger.py",
    "test_ledger.py",
    "test_ledger_stateful.py",
    "test_line_status.py",
    "test_money.py",
    "test_payout_pages.py",
    "test_payouts.py",
    "test_rates.py",
    "test_refund_concurrency.py",
    "test_sale_writer.py",
    "test_rewards.py",
    "test_rewards_admin.py",
    "test_rewards_page.py",
    "test_schedule.py",
    "test_suspension.py",
    "test_tier_window.py",
}


# The payout walk once failed between UTC midnight and New York's (issue #12, reproduction 7).
MONEY_E2E_MODULES = {"test_payouts.py"}


def is_money_test(path: Path) -> bool:
    if "/e2e/" in str(path):
        return path.name in MONEY_E2E_MODULES
    return path.name in MONEY_MODULES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if pinned_clocks(config):
        # Their harness pins their clock for all they do (pytest_runtest_setup): a pinned run
        # would repeat them exactly. The unpinned run keeps them.
        own_clock = [item for item in items if item.get_closest_marker("own_clock")]
        if own_clock:
            config.hook.pytest_deselected(items=own_clock)
            items[:] = [item for item in items if not item.get_closest_marker("own_clock")]
    for item in items:
        if is_money_test(item.path):
            item.add_marker(pytest.mark.money)
        missing = _missing_services(item)
        if not missing:
            continue
        if not IN_CI:
            item.add_marker(pytest.mark.skipif(True, reason="not available here: " + ", ".join(missing)))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A test marked ``own_clock(instant)`` sees that instant, not ticking, from before its
    first fixture to after its last (pytest_runtest_teardown): no clock of the run reaches it."""
    marker = item.get_closest_marker("own_clock")
    if marker is not None:
        import time_machine

        traveller = time_machine.travel(marker.args[0], tick=False)
        traveller.start()
        item._portal_own_clock = traveller
    missing = _missing_services(item)
    if missing and IN_CI:
        pytest.fail(f"CI=true but a service this test needs is missing: {', '.join(missing)}")
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        traveller = getattr(item, "_portal_own_clock", None)
        if traveller is not None:
            del item._portal_own_clock
            traveller.stop()


class _ConnectionBoundSession(FlaskSession):
    """Flask-SQLAlchemy's session, pinned to the test's connection."""

    def get_bind(self, *args, **kwargs):
        return self.bind


# --- databases ---------------------------------------------------------------------


def _create_postgres_database(url: str) -> None:
    """Create ``url``'s database when it does not exist yet (a worker's own copy)."""
    parsed = sa.engine.make_url(url)
    engine = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.scalar(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
        )
        if not exists:
            connection.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    engine.dispose()


def _reset_postgres(url: str) -> None:
    _create_postgres_database(url)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


def own_postgres_database(suffix: str) -> str:
    """An empty PostgreSQL database beside the shared one (its name + ``_<suffix>``), for a
    test that commits for real what the other tests must not see. Fails under CI when
    PostgreSQL is not configured; elsewhere skips."""
    if not POSTGRES_URL:
        if IN_CI:
            pytest.fail("PORTAL_TEST_POSTGRES_URL is not set")
        pytest.skip("needs PostgreSQL (PORTAL_TEST_POSTGRES_URL)")
    url = sa.engine.make_url(POSTGRES_URL)
    url = url.set(database=f"{url.database}_{suffix}").render_as_string(hide_password=False)
    _reset_postgres(url)
    return url


def migrate_database(url: str) -> None:
    """Bring a database to the newest schema through the migrations, as production does."""
    from flask_migrate import upgrade

    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        _db.engine.dispose()


@pytest.fixture(scope="session")
def database_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


# The database of each backend, migrated once per session (per worker). pytest sets
# ``database_url`` up again whenever a worker's next test is on the other backend (its parameter
# changes, a few dozen times a run); migrating again each time cost 1-3 s. Tests leave the
# database as they found it (a rolled-back transaction, or rows removed by the few that commit).
_MIGRATED: dict[str, str] = {}


@pytest.fixture(scope="session")
def database_url(database_backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if database_backend in _MIGRATED:
        return _MIGRATED[database_backend]
    if database_backend == "postgresql":
        if not POSTGRES_URL:
            pytest.fail("PORTAL_TEST_POSTGRES_URL is not set")
        _reset_postgres(POSTGRES_URL)
        migrate_database(POSTGRES_URL)
        url = POSTGRES_URL
    else:
        path = tmp_path_factory.mktemp("db") / "portal-test.db"
        url = f"sqlite:///{path}"
        migrate_database(url)
    _MIGRATED[database_backend] = url
    return url


class _SharedTemplateCode(jinja2.BytecodeCache):
    """Compiled templates shared by every app of the run (in memory), keyed by name and source
    checksum as Jinja's own file cache is: each test's fresh app otherwise compiles again every
    template it renders (~8 ms each, several a page)."""

    def __init__(self) -> None:
        self._code: dict[tuple, object] = {}

    @staticmethod
    def _key(bucket: jinja2.bccache.Bucket) -> tuple:
        env = bucket.environment  # the apps are made alike; the settings that shape the code
        return (
            bucket.key,
            bucket.checksum,
            tuple(sorted(env.extensions)),
            env.trim_blocks,
            env.lstrip_blocks,
            env.optimized,
            env.autoescape if isinstance(env.autoescape, bool) else id(env.autoescape),
        )

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(self._key(bucket))
        if code is not None:
            bucket.code = code

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[self._key(bucket)] = bucket.code


_TEMPLATE_CODE = _SharedTemplateCode()


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    """A fresh app per test (cheap), on a database migrated once per session, with its own file store."""
    app = create_app(
        TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, STORAGE_LOCAL_DIR=str(tmp_path / "media")
    )
    app.jinja_env.bytecode_cache = _TEMPLATE_CODE
    yield app
    with app.app_context():
        _db.engine.dispose()


@pytest.fixture
def db(app):
    """The database inside one transaction that is rolled back after the test.

    Views and services may commit: their commits release a SAVEPOINT, never the
    outer transaction.
    """
    with app.app_context():
        connection = _db.engine.connect()
        transaction = connection.begin()
        _clear_leftover_events(connection)
        original = _db.session
        _db.session = _db._make_scoped_session(
            {
                "bind": connection,
                "join_transaction_mode": "create_savepoint",
                "class_": _ConnectionBoundSession,
            }
        )
        try:
            yield _db
        finally:
            _db.session.remove()
            _db.session = original
            if transaction.is_active:
                transaction.rollback()
            connection.close()


def _clear_leftover_events(connection) -> None:
    """Start the test with an empty event outbox, inside its rolled-back transaction.

    The race tests commit for real (their own app and connections) and remove their rows
    afterwards, but not the outbox events their changes wrote. Left there, the next test's
    dispatcher would act on them, for a partner whose id SQLite has handed out again."""
    if connection.exec_driver_sql("SELECT 1 FROM outbox_events LIMIT 1").first() is None:
        return  # nothing left behind (the usual case): no write, no lock
    for table in ("webhook_deliveries", "outbox_receipts", "outbox_consumers", "outbox_events"):
        connection.exec_driver_sql(f"DELETE FROM {table}")  # noqa: S608 - our own table names


class _FreshGlobalsClient(FlaskClient):
    """Requests share the test's app context (and so its session); give each a clean ``g``
    as a real request would have, so cached values such as the signed-in user do not leak."""

    def open(self, *args, **kwargs):
        if has_app_context():
            for key in list(g):
                g.pop(key)
        return super().open(*args, **kwargs)


@pytest.fixture
def client(app, db):
    app.test_client_class = _FreshGlobalsClient
    return app.test_client()


@pytest.fixture
def runner(app, db):
    return app.test_cli_runner()


# --- people ------------------------------------------------------------------------


@pytest.fixture
def make_user(db):
    from tests.factories import PartnerFactory, UserFactory

    def make(role: str = "partner", status: str = PartnerStatus.APPROVED, **kwargs) -> User:
        if role == Role.PARTNER:
            return PartnerFactory(status=status, **kwargs).user
        return UserFactory(role=role, **kwargs)

    return make


@pytest.fixture
def login_as(client, make_user):
    """Sign the test client in as a new user of ``role``; returns the user."""

    def login(role: str = "partner", **kwargs) -> User:
        user = make_user(role, **kwargs)
        _db.session.commit()
        with client.session_transaction() as session:
            session["_user_id"] = user.get_id()
            session["_fresh"] = True
        return user

    return login


@pytest.fixture
def program(db):
    from tests.factories import ProgramFactory

    program = ProgramFactory()
    _db.session.flush()
    return program


# --- real services ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Collector:
    def __init__(self):
        self.messages: list = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes
        from email.policy import default

        message = message_from_bytes(envelope.content, policy=default)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free local port, for the whole run."""
    from aiosmtpd.controller import Controller

    collector = _Collector()
    controller = Controller(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, collector
    controller.stop()


@pytest.fixture
def mail_outbox(app, smtp_server):
    """Point the app at the SMTP server; the list fills with the messages it receives."""
    controller, collector = smtp_server
    app.config.update(MAIL_SERVER=controller.hostname, MAIL_PORT=controller.port)
    with collector.lock:
        collector.messages.clear()
    return collector.messages


@pytest.fixture
def redis_url() -> str:
    if not REDIS_URL:
        pytest.fail("REDIS_URL is not set")
    return REDIS_URL


# --- S3: real boto3 against moto's server over HTTP ----------------------------------


def stop_moto(server) -> None:
    """Stop a ThreadedMotoServer and close its socket, so that connections are refused."""
    server.stop()
    server._server.server_close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free local port, for the whole run; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    stop_moto(server)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for boto3's normal environment chain; nothing from the machine's own AWS set-up."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


_buckets = itertools.count(1)


def make_bucket(endpoint_url: str) -> str:
    """A new, empty bucket on the moto server at ``endpoint_url``."""
    from portal.storage import S3Storage

    name = f"portal-test-{os.getpid()}-{next(_buckets)}"
    S3Storage(name, region="us-east-1", endpoint_url=endpoint_url).client.create_bucket(Bucket=name)
    return name


def s3_settings(endpoint_url: str, bucket: str) -> dict:
    return {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "S3_PREFIX": "portal/",
        "S3_REGION": "us-east-1",
        "S3_ENDPOINT_URL": endpoint_url,
        # A stopped store should fail fast in tests; production keeps the retries.
        "S3_MAX_ATTEMPTS": 1,
        "S3_TIMEOUT_SECONDS": 2,
    }


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage_backend(request: pytest.FixtureRequest) -> str:
    """Run the test once with each store: ``local`` and ``s3`` (moto over HTTP)."""
    return request.param


@pytest.fixture
def store(app, db, storage_backend: str, request: pytest.FixtureRequest):
    """The app's file store, switched to ``storage_backend`` as create_app would build it."""
    from portal import storage

    if storage_backend == "s3":
        request.getfixturevalue("aws_credentials")
        endpoint = request.getfixturevalue("moto_server")
        app.config.update(s3_settings(endpoint, make_bucket(endpoint)))
    storage.init_app(app)
    return app.extensions["storage"]
