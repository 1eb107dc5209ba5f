"""Settlement: ``portal.services.payouts.settle(program, as_of)`` building one batch, at 100k and 1M lines
(``--lines 10000000``: 1M and 10M on PostgreSQL).

For each database (SQLite file, PostgreSQL) and each size, a fresh schema (through the
migrations) gets 10,000 approved partners, each with payout details (PayPal or bank), and
N confirmed base commission lines, each with its conversion (the FK needs one; one sale,
one line, as in real data), spread over the 40 days before the payout date's cut-off.
The lines are made by the database, 500,000 per INSERT ... SELECT over a generated series
of ids (generate_series; a recursive CTE on SQLite), amount and time slot integer hashes of
the id that Python computes too for the expected totals: nothing per line passes through
Python, memory stays bounded at any size. The two big tables' secondary indexes, the
outbox's insert triggers (and, on PostgreSQL, their foreign keys) are off during the load
and put back afterwards, so the schema being measured is exactly the migrations' and the
foreign keys are checked.

Then ``settle`` builds the batch of that payout date and the session commits; both are
timed (wall clock, and CPU of this process plus its PostgreSQL backend, which is robust
to other load on the machine), every SQL statement too. Afterwards the batch is checked
against the generator's own figures: every line of a partner at or above the minimum is
in exactly that partner's item, no other line is in any item, and every item equals the
sum of its lines. Last, ``check_ledger()`` checks every invariant of the books (timed); a
violation fails the run. Each line stores its rule (the base 10 %) as the engine writes it.

Each (database, size) runs in a child process of its own (a fresh interpreter, no warm
caches from the run before). PostgreSQL's schema is dropped and re-created: point
--pg-url at a throw-away database only (the shared "test" database is refused).

    python bench/settle.py [--quick] [--backend sqlite|postgresql|both] [--sizes 100000,1000000 | --lines N]
                           [--partners 10000] [--pg-url URL] [--profile] [--no-operator-flow] [--keep]

Afterwards the operator's next steps are timed on the built batch: approve_batch, export_csv,
export_paypal and mark_batch_paid (every waiting item paid with one reference; 10,000 items at
full size); --no-operator-flow skips them. --profile settles once more under cProfile (then
rolls back).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from _common import (
    BENCH_DIR,
    FORBIDDEN_PG_DATABASES,
    PYTHON,
    ROOT,
    _base_env,
    _reset_postgres,
    load_line,
    machine_busy_seconds,
    machine_line,
)

# settle + commit: at 1M lines on either database, at 10M on PostgreSQL (issue #20)
TARGETS = {1_000_000: 3.0, 10_000_000: 30.0}
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test_payouts"

PAYOUT_DATE = date(2026, 11, 15)  # monthly, day 15
AS_OF = date(2026, 11, 20)  # settle "today": builds the batch of PAYOUT_DATE
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
TIMEZONE = "America/New_York"
MINIMUM_MINOR = 5000
WRITE_BATCH = 20_000  # partners per executemany
LINE_CHUNK = 500_000  # lines (and conversions) per INSERT ... SELECT


# --- the parent: runs every (database, size) in a child and sums up -------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 partners, 3k and 30k lines")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql", "both"],
        default=None,
        help="default: both, or postgresql alone when a size is above 1M (the 10M target is PostgreSQL's)",
    )
    parser.add_argument("--sizes", default=None, help="comma-separated line counts (default 100000,1000000)")
    parser.add_argument(
        "--lines",
        type=int,
        default=None,
        help="the largest size; measured with a tenth of it too, for the growth (--lines 10000000)",
    )
    parser.add_argument("--partners", type=int, default=None, help="partners (default 10000)")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help=f"throw-away database (default {DEFAULT_PG_URL})"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the timed run, undo the batch and settle again under cProfile (then roll back)",
    )
    parser.add_argument(
        "--no-operator-flow",
        dest="operator_flow",
        action="store_false",
        help="skip timing approve_batch, export_csv / export_paypal and mark_batch_paid on the built batch",
    )
    parser.add_argument("--keep", action="store_true", help="keep the SQLite files")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "backend:lines", run by the parent
    args = parser.parse_args()
    if args.lines is not None:
        args.sizes = f"{args.lines // 10},{args.lines}"
    if args.sizes is None:
        args.sizes = "3000,30000" if args.quick else "100000,1000000"
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.backend is None:
        args.backend = "postgresql" if max(args.sizes) > 1_000_000 else "both"
    if args.partners is None:
        args.partners = 300 if args.quick else 10_000
    if min(args.sizes) < args.partners:
        parser.error("every size must be at least --partners (each partner gets lines)")
    from sqlalchemy.engine import make_url

    if make_url(args.pg_url).database in FORBIDDEN_PG_DATABASES:
        parser.error(
            f"refusing to drop the schema of {make_url(args.pg_url).database!r}; use a throw-away database"
        )
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        backend, lines = args.child.split(":")
        return run_child(args, backend, int(lines))

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    began = time.monotonic()
    print("== settlement: payouts.settle(program, as_of) building one batch, then commit")
    print(machine_line())
    print(load_line())
    print(
        f"data: {args.partners} approved partners with payout details (3 PayPal : 1 bank), "
        f"sizes {', '.join(f'{n:,}' for n in args.sizes)} confirmed base lines (one conversion each), "
        f"amounts 3.00-90.00 USD, minimum payout {MINIMUM_MINOR / 100:.2f}, "
        f"payout date {PAYOUT_DATE} ({TIMEZONE}), as_of {AS_OF}"
    )
    print(
        "each (database, size) in a fresh child process on a freshly migrated schema; "
        "targets: settle + commit ≤ 3 s at 1M lines (both databases), ≤ 30 s at 10M (PostgreSQL)"
    )
    results: dict[tuple[str, int], dict] = {}
    failed = False
    for backend in backends:
        for lines in args.sizes:
            print(f"\n-- {backend}, {lines:,} lines")
            result = _run_child(args, backend, lines)
            if result is None:
                failed = True
                continue
            results[backend, lines] = result

    print("\n== summary (seconds)")
    print(
        f"{'database':<11} {'lines':>10} {'generate':>9} {'settle()':>9} {'commit':>7} {'total':>7} "
        f"{'CPU':>7} {'approve':>7} {'csv':>6} {'paypal':>6} {'mark paid':>9} {'ledger':>7}  check"
    )
    for (backend, lines), r in results.items():
        print(
            f"{backend:<11} {lines:>10,} {r['generate']:>9.1f} {r['settle']:>9.2f} {r['commit']:>7.2f} "
            f"{r['settle'] + r['commit']:>7.2f} {r['cpu']:>7.2f} "
            + "".join(
                f"{'-' if r.get(step) is None else format(r[step], '.2f'):>{width}} "
                for step, width in (("approve", 7), ("export_csv", 6), ("export_paypal", 6), ("mark_paid", 9))
            )
            + f"{r['check_ledger']:>7.2f}  "
            f"{'ok' if r['ok'] else 'FAILED'}"
        )
        failed |= not r["ok"]
    print("  (total = settle() + commit, wall clock; CPU = this process + its PostgreSQL backend, same span;")
    print("   approve, csv, paypal = approve_batch, export_csv, export_paypal (+ commit) on the built batch;")
    print("   mark paid = mark_batch_paid + commit on the built batch, every item paid with one reference;")
    print("   ledger = check_ledger() on the books afterwards, every invariant; a violation fails the run)")
    small, large = min(args.sizes), max(args.sizes)
    for backend in backends:
        if (backend, small) in results and (backend, large) in results and small != large:
            a, b = results[backend, small], results[backend, large]
            ratio = (b["settle"] + b["commit"]) / max(a["settle"] + a["commit"], 1e-9)
            print(
                f"{backend}: {large:,}/{small:,} lines: time ratio {ratio:.1f} (linear growth ≈ "
                f"{large / small:.0f}); settle() alone {b['settle'] / max(a['settle'], 1e-9):.1f}; "
                f"CPU {b['cpu'] / max(a['cpu'], 1e-9):.1f}"
            )
        for size, target in TARGETS.items():
            if (backend, size) not in results or (size > 1_000_000 and backend != "postgresql"):
                continue
            r = results[backend, size]
            total = r["settle"] + r["commit"]
            verdict = "met" if total <= target else "MISSED"
            print(
                f"{backend}: settle + commit at {size:,} lines {total:.2f} s "
                f"(CPU {r['cpu']:.2f} s), target ≤ {target:g} s: {verdict}"
            )
    print(f"\nwall time {time.monotonic() - began:.0f} s")
    return 1 if failed else 0


def _run_child(args: argparse.Namespace, backend: str, lines: int) -> dict | None:
    argv = [
        PYTHON,
        str(Path(__file__).resolve()),
        "--child",
        f"{backend}:{lines}",
        "--partners",
        str(args.partners),
    ]
    argv += (
        ["--pg-url", args.pg_url]
        + (["--profile"] if args.profile else [])
        + ([] if args.operator_flow else ["--no-operator-flow"])
        + (["--keep"] if args.keep else [])
    )
    env = _base_env()
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        argv, cwd=BENCH_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    result = None
    for line in process.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        elif not line.startswith("INFO  [alembic"):  # the migrations' own log; one line says it instead
            print("   " + line, end="", flush=True)
    if process.wait() != 0:
        print(f"   !! the {backend} {lines:,} run failed (exit {process.returncode})")
        return None
    return result


# --- the child: one database, one size ----------------------------------------------------------


def run_child(args: argparse.Namespace, backend: str, lines: int) -> int:
    import shutil

    sys.path.insert(0, str(ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-settle-"))
    keep = args.keep and backend == "sqlite"
    try:
        url = _fresh_database(backend, args.pg_url, workdir)
        result = _measure(url, backend, args.partners, lines, args)
    finally:
        if keep:
            print(f"(SQLite file kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("RESULT " + json.dumps(result))
    return 0


def _fresh_database(backend: str, pg_url: str, workdir: Path) -> str:
    """An empty database brought to the newest schema by the migrations, as in tests/conftest.py."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'portal.db'}"
    else:
        url = pg_url
        _reset_postgres(url)  # created first if the server has no database of that name
    from flask_migrate import upgrade

    started = time.perf_counter()
    app = _app(url)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        from portal.extensions import db

        db.engine.dispose()
    print(f"schema: migrations applied in {time.perf_counter() - started:.1f} s ({_describe(url)})")
    return url


def _describe(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return f"{parsed.drivername} {parsed.database}"


def _app(url: str):
    from config import ProductionConfig
    from portal import create_app

    return create_app(
        ProductionConfig,
        SQLALCHEMY_DATABASE_URI=url,
        SECRET_KEY="bench-" + os.urandom(16).hex(),
        PORTAL_BASE_URL="http://127.0.0.1",  # production refuses to start without one
        REDIS_URL=None,
        CLICK_WRITE_MODE="inline",  # no click-writer thread
        LOG_LEVEL="WARNING",
    )


def _measure(url: str, backend: str, partners: int, lines: int, args: argparse.Namespace) -> dict:
    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import User
    from portal.services import payouts, schedule
    from portal.services.program import get_program

    app = _app(url)
    with app.app_context():
        started = time.perf_counter()
        expected = _generate(partners, lines)
        generate_seconds = time.perf_counter() - started
        _settle_the_storage(backend)

        program = get_program()
        admin = db.session.scalars(sa.select(User).where(User.role == "admin")).one()
        cutoff = schedule.start_of_day_utc(program, PAYOUT_DATE)
        assert schedule.last_payout_date(program.payout_schedule, program.payout_day, AS_OF) == PAYOUT_DATE
        db.session.commit()  # start the timed part with no transaction open

        # PostgreSQL does the work in its backend process (on this machine): count its CPU too.
        backend_pid = None
        if backend == "postgresql":
            backend_pid = db.session.execute(db.text("SELECT pg_backend_pid()")).scalar()
        with _StatementTimer(db.engine) as statements:
            cpu_before = (time.process_time(), _process_cpu(backend_pid), machine_busy_seconds())
            started = time.perf_counter()
            batch, created = payouts.settle(program, AS_OF, now=NOW, actor=admin)
            built = time.perf_counter()
            batch_id = batch.id
            db.session.commit()
            committed = time.perf_counter()
            cpu_after = (time.process_time(), _process_cpu(backend_pid), machine_busy_seconds())
        own_cpu, server_cpu, machine_cpu = (b - a for a, b in zip(cpu_before, cpu_after, strict=True))
        settle_seconds, commit_seconds = built - started, committed - built
        assert created, "a batch for this payout date already existed"
        print(
            f"settle(): {settle_seconds:.2f} s, commit: {commit_seconds:.2f} s  "
            f"(SQL {statements.total:.2f} s in {statements.count} statements; the rest is Python)"
        )
        seconds = committed - started
        others = max(0.0, machine_cpu - own_cpu - server_cpu) / seconds
        warning = (
            f"  !! other processes kept {others:.1f} cores busy: wall times are disturbed, CPU times less so"
            if others > 0.5
            else ""
        )
        print(
            f"  CPU: this process {own_cpu:.2f} s"
            + (f", its PostgreSQL backend {server_cpu:.2f} s" if backend_pid else "")
            + warning
        )
        statements.print_top(6)

        ok = _verify(batch_id, cutoff, expected)
        if args.profile:
            _profile_again(program, admin, batch_id)
        operator = _operator_flow(batch_id) if args.operator_flow else {}
        ledger = _check_ledger()
        db.session.remove()
        db.engine.dispose()
    return {
        "generate": generate_seconds,
        "settle": settle_seconds,
        "commit": commit_seconds,
        "cpu": own_cpu + server_cpu,
        "ok": ok and operator.get("ok", True) and ledger["ok"],
        "mark_paid": operator.get("mark_batch_paid"),
        "approve": operator.get("approve_batch"),
        "export_csv": operator.get("export_csv"),
        "export_paypal": operator.get("export_paypal"),
        "check_ledger": ledger["seconds"],
        "items": operator.get("items"),
    }


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc), 0 without one."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- data -----------------------------------------------------------------------------------------


def _generate(partners: int, lines: int) -> dict:
    """Write the program, ``partners`` partners with payout details and ``lines`` confirmed lines.

    Streams in batches of WRITE_BATCH rows (nothing big is held in memory) and returns what the
    batch must come to, computed here and not by the database: {partner id: (total, line count)}.
    """
    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import Partner, PayoutAccount, User
    from portal.services.program import get_program

    program = get_program()
    program.name, program.currency, program.timezone = "Bench program", "USD", TIMEZONE
    program.payout_schedule, program.payout_day, program.minimum_payout_minor = "monthly", 15, MINIMUM_MINOR
    program.default_landing_url = "https://shop.example/"
    unusable = "!"  # no password matches it: nobody signs in to the benchmark's database
    admin = User(email="bench-admin@example.com", name="Bench Admin", role="admin", password_hash=unusable)
    db.session.add(admin)
    db.session.commit()
    connection = db.session.connection()
    first_user = admin.id + 1

    started = time.perf_counter()
    for start in range(0, partners, WRITE_BATCH):
        ids = range(start + 1, min(partners, start + WRITE_BATCH) + 1)
        connection.execute(
            sa.insert(User),
            [
                {"id": first_user + i, "email": f"bench-{i:05d}@partners.example",
                 "name": f"Bench Partner {i}", "password_hash": unusable, "role": "partner"}
                for i in ids
            ],
        )  # fmt: skip
        connection.execute(
            sa.insert(Partner),
            [
                {"id": i, "user_id": first_user + i, "ref_code": f"bp{i:05d}", "status": "approved",
                 "channels": ["seo"], "promotion_description": "Generated for the settle benchmark.",
                 "country": "US", "status_changed_at": NOW - timedelta(days=200)}
                for i in ids
            ],
        )  # fmt: skip
        connection.execute(sa.insert(PayoutAccount), [_account(i) for i in ids])
    db.session.commit()
    print(f"generate: {partners:,} partners with payout details in {time.perf_counter() - started:.1f} s")
    connection = db.session.connection()

    # The lines are made by the database itself, a chunk of LINE_CHUNK per INSERT ... SELECT over
    # a generated series of ids (generate_series on PostgreSQL, a recursive CTE on SQLite):
    # nothing per line passes through Python, so 10M lines take a minute or two, and memory
    # stays bounded on both sides (one chunk per statement, a commit after each). Amount and
    # time slot are fixed integer hashes of the line's id (``_amount``, ``_slot``), so the
    # expected totals are computed here, independently of the database.
    dialect = db.engine.dialect.name
    # The usual bulk load: the secondary (non-unique) indexes of the two big tables are built
    # once at the end instead of row by row; the schema ends up exactly as the migrations made it.
    indexes = _drop_secondary_indexes(("conversions", "commissions"))
    foreign_keys = _drop_foreign_keys(("conversions", "commissions"))
    outbox_triggers = _pause_outbox_triggers(("conversions", "commissions"))
    started = last_report = time.perf_counter()
    for start in range(1, lines + 1, LINE_CHUNK):
        end = min(lines, start + LINE_CHUNK - 1)
        connection = db.session.connection()
        for statement in _line_statements(dialect, partners):
            connection.execute(sa.text(statement), {"first": start, "last": end})
        db.session.commit()
        now = time.perf_counter()
        if now - last_report >= 10 or end == lines:
            last_report = now
            print(
                f"generate: {end:,}/{lines:,} lines with their conversions "
                f"({end / (now - started):,.0f} lines/s, by the database)"
            )
    started = time.perf_counter()
    totals = [0] * (partners + 1)
    counts = [0] * (partners + 1)
    for i in range(1, lines + 1):
        partner_id = (i - 1) % partners + 1
        totals[partner_id] += _amount(i)
        counts[partner_id] += 1
    print(f"generate: expected totals computed in Python in {time.perf_counter() - started:.1f} s")
    _rebuild_indexes(indexes)
    _resume_outbox_triggers(outbox_triggers)
    _recount_balances()
    _restore_foreign_keys(foreign_keys)
    _advance_sequences(partners, lines, first_user)
    return {p: (totals[p], counts[p]) for p in range(1, partners + 1) if counts[p]}


# A line's amount (3.00-90.00) and its 15-minute slot in the 40 days before the cut-off: integer
# hashes of its id, computed the same way by Python (the expected totals) and by the database.
_HASH, _MOD = 2654435761, 4294967296  # Knuth's multiplicative hash
SLOTS = 40 * 24 * 4
CUTOFF_UTC = "2026-11-15 05:00:00"  # the payout date's midnight in New York


def _amount(i: int) -> int:
    return 300 + i * _HASH % _MOD % 8701


def _amount_sql(column: str) -> str:
    return f"(300 + {column} * {_HASH} % {_MOD} % 8701)"


def _slot_sql(column: str) -> str:
    return f"(({column} * 40503 + 12345) % 65521 % {SLOTS})"


def _line_statements(dialect: str, partners: int) -> list[str]:
    """The two INSERT ... SELECT statements of one chunk (ids :first to :last): the
    conversions, then their lines. Each line stores its rule (the base 10 % of a sale of
    10 × amount) as the rewards engine writes it: check-ledger recomputes every line from it.
    Times are stored as the portal's column type stores them (timestamptz; naive UTC text)."""
    if dialect == "postgresql":
        series = (
            f"SELECT i, {_amount_sql('i')} AS amount, {_slot_sql('i')} AS slot "  # noqa: S608 - fixed text
            "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i"
        )
        confirmed = f"(timestamptz '{CUTOFF_UTC}+00' - make_interval(mins => (15 * slot + 1)::int))"
        earned = f"({confirmed} - interval '30 days')"
        transaction_id = "'bench-' || lpad(i::text, 8, '0')"
        rule = (
            "json_build_object('rule', 'base', 'type', 'percent', 'rate_bp', 1000, "
            "'sale_minor', amount * 10, 'result_minor', amount)"
        )
        prefix = ""
        source = f"({series}) AS s"
    else:
        series = f"SELECT i, {_amount_sql('i')} AS amount, {_slot_sql('i')} AS slot FROM ids"  # noqa: S608
        confirmed = (
            f"(strftime('%Y-%m-%d %H:%M:%S', '{CUTOFF_UTC}', "
            "printf('-%d minutes', 15 * slot + 1)) || '.000000')"
        )
        earned = (
            f"(strftime('%Y-%m-%d %H:%M:%S', '{CUTOFF_UTC}', "
            "printf('-%d minutes', 15 * slot + 1), '-30 days') || '.000000')"
        )
        transaction_id = "printf('bench-%08d', i)"
        rule = (
            "json_object('rule', 'base', 'type', 'percent', 'rate_bp', 1000, "
            "'sale_minor', amount * 10, 'result_minor', amount)"
        )
        prefix = "WITH RECURSIVE ids(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM ids WHERE i < :last) "
        source = f"({series}) AS s"
    partner = f"((i - 1) % {partners} + 1)"
    return [
        "INSERT INTO conversions (id, transaction_id, amount_minor, currency, refunded_minor, partner_id, "  # noqa: S608
        "status, request_fingerprint, occurred_at, created_at) "
        f"{prefix}SELECT i, {transaction_id}, amount * 10, 'USD', 0, {partner}, 'pending', 'bench', "
        f"{earned}, {earned} FROM {source}",
        "INSERT INTO commissions (id, conversion_id, partner_id, kind, amount_minor, currency, status, "  # noqa: S608
        "confirm_after, confirmed_at, explanation, created_at) "
        f"{prefix}SELECT i, i, {partner}, 'base', amount, 'USD', 'confirmed', {confirmed}, {confirmed}, "
        f"{rule}, {earned} FROM {source}",
    ]


def _drop_secondary_indexes(tables: tuple[str, ...]) -> list[tuple[str, str]]:
    """Drop the non-unique indexes of ``tables``; returns (name, CREATE statement) of each."""
    from portal.extensions import db

    names = ", ".join(f"'{t}'" for t in tables)
    if db.engine.dialect.name == "postgresql":
        query = (
            f"SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "  # noqa: S608
            f"AND tablename IN ({names}) AND indexdef NOT LIKE 'CREATE UNIQUE %'"
        )
    else:
        query = (
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN ({names}) "  # noqa: S608
            "AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE %'"
        )
    indexes = [tuple(row) for row in db.session.execute(db.text(query))]
    for name, _sql in indexes:
        db.session.execute(db.text(f'DROP INDEX "{name}"'))
    db.session.commit()
    return indexes


def _pause_outbox_triggers(tables: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """The outbox's insert triggers (migration 0017) write a domain event per conversion and per
    line: history loaded in bulk is not news, and 20M events would be most of the load's time.
    The running balance's insert trigger (migration 0021) adds each confirmed line to its
    partner's row, one upsert per line: the rows are recounted once after the load instead
    (``payouts.recount_balances``, the migration's own backfill; check-ledger compares them).
    Paused for the load (PostgreSQL: disabled; SQLite: dropped and created again from its own
    text), so the schema ends up exactly as the migrations made it."""
    from portal.extensions import db

    names = ", ".join(f"'{t}'" for t in tables)
    if db.engine.dialect.name == "postgresql":
        regclasses = ", ".join(f"'{t}'::regclass" for t in tables)
        triggers = [
            (table, name, None)
            for table, name in db.session.execute(
                db.text(
                    "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal "  # noqa: S608
                    "AND (tgname LIKE 'outbox%' OR tgname LIKE 'balance%') "
                    f"AND tgrelid IN ({regclasses})"
                )
            )
        ]
        for table, name, _sql in triggers:
            db.session.execute(db.text(f'ALTER TABLE {table} DISABLE TRIGGER "{name}"'))
    else:
        triggers = [
            tuple(row)
            for row in db.session.execute(
                db.text(
                    "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger' "  # noqa: S608
                    f"AND (name LIKE 'outbox%' OR name LIKE 'balance%') AND tbl_name IN ({names})"
                )
            )
        ]
        for _table, name, _sql in triggers:
            db.session.execute(db.text(f'DROP TRIGGER "{name}"'))
    db.session.commit()
    return triggers


def _resume_outbox_triggers(triggers: list[tuple[str, str, str | None]]) -> None:
    from portal.extensions import db

    for table, name, sql in triggers:
        if sql is None:
            db.session.execute(db.text(f'ALTER TABLE {table} ENABLE TRIGGER "{name}"'))
        else:
            db.session.execute(db.text(sql))
    db.session.commit()


def _recount_balances() -> None:
    """The partners' running balances of the lines just loaded (their trigger was paused)."""
    from portal.extensions import db
    from portal.services.payouts import recount_balances

    started = time.perf_counter()
    rows = recount_balances()
    db.session.commit()
    print(f"generate: {rows:,} running balances recounted in {time.perf_counter() - started:.1f} s")


def _drop_foreign_keys(tables: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """PostgreSQL: drop the foreign keys of ``tables`` (one trigger call per row and key otherwise);
    returns (table, name, definition) of each. SQLite checks them cheaply; they stay."""
    from portal.extensions import db

    if db.engine.dialect.name != "postgresql":
        return []
    names = ", ".join(f"'{t}'::regclass" for t in tables)
    keys = [
        tuple(row)
        for row in db.session.execute(
            db.text(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "  # noqa: S608
                f"WHERE contype = 'f' AND conrelid IN ({names})"
            )
        )
    ]
    for table, name, _definition in keys:
        db.session.execute(db.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    db.session.commit()
    return keys


def _restore_foreign_keys(keys: list[tuple[str, str, str]]) -> None:
    """Add them back: PostgreSQL checks every existing row once, so the data is proven consistent."""
    from portal.extensions import db

    if not keys:
        return
    started = time.perf_counter()
    for table, name, definition in keys:
        db.session.execute(db.text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
    db.session.commit()
    print(
        f"generate: {len(keys)} foreign keys added back and checked in {time.perf_counter() - started:.1f} s"
    )


def _rebuild_indexes(indexes: list[tuple[str, str]]) -> None:
    from portal.extensions import db

    started = time.perf_counter()
    for _name, sql in indexes:
        db.session.execute(db.text(sql))
    db.session.commit()
    print(
        f"generate: {len(indexes)} secondary indexes rebuilt in {time.perf_counter() - started:.1f} s "
        f"({', '.join(name for name, _sql in indexes)})"
    )


def _account(i: int) -> dict:
    row = {"partner_id": i, "paypal_email": None, "account_holder": None, "iban": None, "bic": None}
    if i % 4:
        row.update(method="paypal", paypal_email=f"pay-{i:05d}@partners.example")
    else:
        row.update(
            method="bank",
            account_holder=f"Bench Partner {i}",
            iban="DE89370400440532013000",
            bic="COBADEFFXXX",
        )
    return row


def _advance_sequences(partners: int, lines: int, first_user: int) -> None:
    """PostgreSQL: the rows above had explicit ids; move each sequence past them."""
    from portal.extensions import db

    if db.engine.dialect.name != "postgresql":
        return
    for table in ("users", "partners", "payout_accounts", "conversions", "commissions"):
        db.session.execute(
            db.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")  # noqa: S608
        )
    db.session.commit()


def _settle_the_storage(backend: str) -> None:
    """What a running install has had time to do: PostgreSQL's autovacuum, SQLite's WAL checkpoint."""
    from portal.extensions import db

    started = time.perf_counter()
    db.session.remove()
    if backend == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in ("conversions", "commissions", "partners", "payout_accounts", "users"):
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
        what = "VACUUM (ANALYZE) of the generated tables (autovacuum's job on a live install)"
    else:
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        what = "WAL checkpoint (no ANALYZE: the portal never runs it on SQLite)"
    print(f"prepare: {what} in {time.perf_counter() - started:.1f} s")


# --- checks ---------------------------------------------------------------------------------------


def _verify(batch_id: int, cutoff: datetime, expected: dict[int, tuple[int, int]]) -> bool:
    """The batch against the generator's figures, and every item against its lines, in SQL."""
    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import Commission, PayoutItem, PayoutLine

    db.session.remove()
    started = time.perf_counter()
    problems: list[str] = []
    payable = {p: total for p, (total, _n) in expected.items() if total >= MINIMUM_MINOR}
    items = {
        partner_id: (item_id, amount, status)
        for item_id, partner_id, amount, status in db.session.execute(
            sa.select(PayoutItem.id, PayoutItem.partner_id, PayoutItem.amount_minor, PayoutItem.status).where(
                PayoutItem.batch_id == batch_id
            )
        )
    }
    if set(items) != set(payable):
        problems.append(f"items for {len(items)} partners, expected {len(payable)}")
    wrong_amounts = [p for p, total in payable.items() if p in items and items[p][1] != total]
    if wrong_amounts:
        problems.append(
            f"{len(wrong_amounts)} items differ from the generated totals, e.g. partner {wrong_amounts[0]}"
        )
    if any(status != "pending" for _id, _amount, status in items.values()):
        problems.append("items not pending although every partner has payout details")

    expected_in = sum(n for p, (_t, n) in expected.items() if p in payable)
    expected_out = sum(n for p, (_t, n) in expected.items() if p not in payable)
    in_batch = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PayoutLine)
        .join(Commission, Commission.id == PayoutLine.commission_id)
        .join(PayoutItem, PayoutItem.id == PayoutLine.payout_item_id)
        .where(PayoutItem.batch_id == batch_id, PayoutItem.partner_id == Commission.partner_id)
    )
    left_out = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Commission)
        .where(~sa.exists().where(PayoutLine.commission_id == Commission.id))
    )
    anywhere = db.session.scalar(sa.select(sa.func.count()).select_from(PayoutLine))
    # payout_lines is keyed by the line, so a line is in at most one item; these make it exactly
    # one, the right one.
    if in_batch != expected_in:
        problems.append(f"{in_batch} lines in their own partner's item, expected {expected_in}")
    if anywhere != in_batch:
        problems.append(f"{anywhere - in_batch} lines in an item of another partner or batch")
    if left_out != expected_out:
        problems.append(f"{left_out} lines in no item, expected {expected_out} (partners under the minimum)")
    lines_per_item = (
        sa.select(
            PayoutLine.payout_item_id.label("item_id"),
            sa.func.sum(Commission.amount_minor).label("total"),
        )
        .join(Commission, Commission.id == PayoutLine.commission_id)
        .group_by(PayoutLine.payout_item_id)
        .subquery()
    )
    mismatched = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PayoutItem)
        .outerjoin(lines_per_item, lines_per_item.c.item_id == PayoutItem.id)
        .where(
            PayoutItem.batch_id == batch_id,
            sa.func.coalesce(lines_per_item.c.total, 0) != PayoutItem.amount_minor,
        )
    )
    if mismatched:
        problems.append(f"{mismatched} items whose lines do not add up to them")
    late = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PayoutLine)
        .join(Commission, Commission.id == PayoutLine.commission_id)
        .where(Commission.confirm_after >= cutoff)
    )
    if late:
        problems.append(f"{late} lines confirmed after the cut-off are in the batch")
    db.session.rollback()
    seconds = time.perf_counter() - started
    if problems:
        print("check: FAILED — " + "; ".join(problems))
        return False
    print(
        f"check: ok in {seconds:.1f} s — {len(items):,} items; "
        f"{in_batch:,} lines each in their partner's item, "
        f"{left_out:,} lines of {len(expected) - len(payable)} partners under the minimum in none; "
        "every item equals the sum of its lines and the generator's total"
    )
    return True


# --- measuring ------------------------------------------------------------------------------------


class _StatementTimer:
    """Wall time of every SQL statement (cursor execute to return), grouped by statement text."""

    def __init__(self, engine):
        self.engine = engine
        self.by_statement: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.total = 0.0
        self.count = 0

    def __enter__(self):
        import sqlalchemy as sa

        sa.event.listen(self.engine, "before_cursor_execute", self._before)
        sa.event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc):
        import sqlalchemy as sa

        sa.event.remove(self.engine, "before_cursor_execute", self._before)
        sa.event.remove(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        elapsed = time.perf_counter() - conn.info["bench_started"].pop()
        key = " ".join(statement.split())
        if len(key) > 150:
            key = key[:150] + "…"
        entry = self.by_statement[key]
        entry[0] += 1
        entry[1] += elapsed
        self.total += elapsed
        self.count += 1

    def print_top(self, n: int) -> None:
        ranked = sorted(self.by_statement.items(), key=lambda kv: kv[1][1], reverse=True)[:n]
        for statement, (count, seconds) in ranked:
            print(f"  {seconds:7.2f} s  {count:>5}x  {statement}")


def _check_ledger() -> dict:
    """``check_ledger()`` on the settled (and, with the operator flow, paid) books: every invariant,
    timed; any violation fails the run."""
    from portal.extensions import db
    from portal.services.ledger import check_ledger, summary

    db.session.remove()
    started = time.perf_counter()
    violations = check_ledger()
    seconds = time.perf_counter() - started
    db.session.rollback()
    for violation in violations[:20]:
        print(f"check-ledger: {violation}")
    print(f"check-ledger: {summary(violations)} in {seconds:.2f} s" + (" — FAILED" if violations else ""))
    return {"ok": not violations, "seconds": seconds}


def _operator_flow(batch_id: int) -> dict:
    """What the operator does next, timed: approve, download the payment files, mark all paid.

    The files are parsed back and must come to the batch's total; afterwards every item must
    be paid and the batch closed."""
    import csv
    import io
    from decimal import Decimal

    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import PayoutBatch, PayoutItem, User
    from portal.services import payouts

    db.session.remove()
    manager = db.session.scalars(sa.select(User).where(User.role == "admin")).one()
    batch = db.session.get(PayoutBatch, batch_id)
    items, total = db.session.execute(
        sa.select(sa.func.count(), sa.func.sum(PayoutItem.amount_minor)).where(
            PayoutItem.batch_id == batch_id
        )
    ).one()
    steps = [
        ("approve_batch", lambda: payouts.approve_batch(batch, manager)),
        ("export_csv", lambda: payouts.export_csv(batch)),
        ("export_paypal", lambda: payouts.export_paypal(batch)),
        # Paid today: the batch row was created now (the service bounds the date by it), not on NOW.
        (
            "mark_batch_paid",
            lambda: payouts.mark_batch_paid(batch, manager, "BENCH-TRANSFER-1", datetime.now(UTC).date()),
        ),
    ]
    seconds: dict[str, float] = {}
    outputs: dict[str, object] = {}
    for name, step in steps:
        with _StatementTimer(db.engine) as statements:
            started = time.perf_counter()
            outputs[name] = step()
            db.session.commit()
            seconds[name] = time.perf_counter() - started
        print(
            f"operator: {name} + commit {seconds[name]:.2f} s "
            f"({statements.count} SQL statements, {statements.total:.2f} s)"
            + (f" — {items:,} items" if name == "mark_batch_paid" else "")
        )
    problems = []
    in_csv = sum(Decimal(row["amount"]) for row in csv.DictReader(io.StringIO(outputs["export_csv"])))
    in_paypal = sum(Decimal(row[1]) for row in csv.reader(io.StringIO(outputs["export_paypal"])))
    paypal_total = db.session.scalar(
        sa.select(sa.func.sum(PayoutItem.amount_minor)).where(
            PayoutItem.batch_id == batch_id, PayoutItem.method == "paypal"
        )
    )
    if in_csv * 100 != total or in_paypal * 100 != paypal_total:
        problems.append(f"payment files add up to {in_csv} (CSV) and {in_paypal} (PayPal)")
    unpaid = db.session.scalar(
        sa.select(sa.func.count()).where(PayoutItem.batch_id == batch_id, PayoutItem.status != "paid")
    )
    status = db.session.get(PayoutBatch, batch_id).status
    if unpaid or status != "closed" or outputs["mark_batch_paid"] != items:
        problems.append(f"after mark_batch_paid: batch {status}, {unpaid} items not paid")
    print(
        "operator: "
        + ("FAILED — " + "; ".join(problems) if problems else f"ok — payment files parse back to the "
           f"batch total ({in_csv} USD, PayPal {in_paypal}); batch {status}, every item paid")
    )  # fmt: skip
    return {"ok": not problems, **seconds, "items": items}


def _profile_again(program, admin, batch_id: int) -> None:
    """Undo the batch inside a transaction, settle again under cProfile, print, roll back."""
    import cProfile
    import pstats

    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import AuditEvent, PayoutBatch, PayoutItem, PayoutLine
    from portal.services import payouts
    from portal.services.ledger import without_ledger_triggers

    program = db.session.merge(program)
    admin = db.session.merge(admin)
    item_ids = sa.select(PayoutItem.id).where(PayoutItem.batch_id == batch_id)
    db.session.execute(sa.delete(PayoutLine).where(PayoutLine.payout_item_id.in_(item_ids)))
    # Payout items are never deleted (a trigger): past it for this rolled-back experiment only.
    with without_ledger_triggers(db.session.connection()):
        db.session.execute(sa.delete(PayoutItem).where(PayoutItem.batch_id == batch_id))
    db.session.execute(sa.delete(AuditEvent).where(AuditEvent.subject_type == "payout_batch"))
    db.session.execute(sa.delete(PayoutBatch).where(PayoutBatch.id == batch_id))
    db.session.flush()
    profiler = cProfile.Profile()
    profiler.enable()
    payouts.settle(program, AS_OF, now=NOW, actor=admin)
    db.session.flush()
    profiler.disable()
    db.session.rollback()
    print("profile (cumulative, top 25; cProfile slows the Python parts):")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
