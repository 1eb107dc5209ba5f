"""Dashboards cost the same whatever the history behind them.

Generates a program of 1,000 partners with 2,000,000 clicks and 100,000 conversions
over 365 days (streamed to the database in chunks, never held in memory; signups,
refunds, rejections, commission lines and monthly payouts included), counts the
rollups with ``flask portal rebuild-rollups``' own code, then renders the partner
dashboard (of the busiest partner) and the operator dashboard many times and prints
the 95th-percentile render time — and the same for a program of 10,000 clicks
(500 conversions, same partners and days). The two sizes are measured in alternating
rounds, so a busy machine slows both alike.

    python bench/dashboard.py                                   # SQLite files in a temp dir
    python bench/dashboard.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/portal_bench
    python bench/dashboard.py --clicks 200000 --conversions 10000   # a quicker look
    python bench/dashboard.py --database-url sqlite --database-url postgresql+psycopg://...  # both, one run
    python bench/dashboard.py ... --keep      # then --reuse: measure the kept data again (no generation)

On PostgreSQL each size gets its own schema (``bench_dashboard_small`` and
``_large``) in the given database, dropped at the end unless ``--keep``.
Target: large p95 / small p95 ≤ 1.5 for both pages (on every database given). Exit status 1 if
missed. Each render's CPU time in this process is printed beside it: the wall clock is what the
target is about, the CPU time is what stays readable when other work shares the machine.

Before measuring, the bench freezes the loaded apps out of the garbage collector's full rounds,
as every worker does after start-up (portal/heap.py: that was the operator dashboard's tail).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from bisect import bisect
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from config import TestingConfig  # noqa: E402
from portal import create_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import (  # noqa: E402
    Click,
    Commission,
    Conversion,
    DailyStat,
    Link,
    Partner,
    PartnerDailyStat,
    PayoutAccount,
    PayoutBatch,
    PayoutItem,
    Program,
    Signup,
    User,
)

TARGET_RATIO = 1.5
CHUNK = 20_000
CHANNELS = ("seo", "social", "ads", "email", "video", "other")
CREATIVES = 40
TIMEZONE = "Europe/Berlin"


# --- databases -----------------------------------------------------------------------------


@dataclass
class Database:
    label: str
    url: str
    engine_options: dict
    schema: str | None = None


def prepare_database(base_url: str | None, label: str, workdir: Path, fresh: bool) -> Database:
    if base_url is None:
        path = workdir / f"bench-dashboard-{label}.db"
        if fresh:
            # "-writer": the writer gate's lock file (portal.database.WriterGate).
            for suffix in ("", "-wal", "-shm", "-writer"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return Database(label, f"sqlite:///{path}", {})
    schema = f"bench_dashboard_{label}"
    if fresh:
        from _common import ensure_database

        ensure_database(base_url)
        engine = sa.create_engine(base_url)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        engine.dispose()
    return Database(label, base_url, {"connect_args": {"options": f"-csearch_path={schema}"}}, schema)


def drop_database(base_url: str | None, database: Database) -> None:
    if database.schema is None:
        # "-writer": the writer gate's lock file (portal.database.WriterGate).
        for suffix in ("", "-wal", "-shm", "-writer"):
            Path(database.url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        return
    engine = sa.create_engine(base_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {database.schema} CASCADE")
    engine.dispose()


def make_app(database: Database):
    return create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database.url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, **database.engine_options},
    )


def migrate(app) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))


# --- the program ---------------------------------------------------------------------------


@dataclass
class Shape:
    partners: int
    clicks: int
    conversions: int
    days: int


@dataclass
class Placement:
    """Where a partner's clicks come from: a link (or the ref code), a creative, a sub-ID."""

    link_id: int | None
    code: str
    channel: str
    campaign: str | None
    sub_id: str | None
    creative_id: int | None


@dataclass
class PartnerPlan:
    id: int
    ref_code: str
    weight: float  # share of the program's traffic (Zipf)
    growth: float  # -0.9 … +1.5 over the year
    stops_on: int | None  # day index after which the partner sends nothing (churned)
    placements: list[Placement]


def _insert(connection, model, rows: list[dict]) -> None:
    if rows:
        connection.execute(sa.insert(model), rows)


def seed_program(app, shape: Shape, rng: random.Random, now: datetime) -> tuple[list[PartnerPlan], int]:
    """Program, one manager, partners with links and payout details. Returns the plans and the manager."""
    password = generate_password_hash("bench-password")
    start = now - timedelta(days=shape.days)
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(
            sa.insert(Program),
            [
                {
                    "name": "Bench Outdoor",
                    "currency": "USD",
                    "timezone": TIMEZONE,
                    "allowed_domains": ["shop.example"],
                    "default_landing_url": "https://shop.example/",
                    "created_at": start,
                    "updated_at": start,
                }
            ],
        )
        manager_id = connection.execute(
            sa.insert(User).returning(User.id),
            {
                "email": "manager@bench.example",
                "name": "Bench Manager",
                "password_hash": password,
                "role": "manager",
                "session_token": "bench-manager",
                "created_at": start,
            },
        ).scalar_one()
        users = [
            {
                "email": f"partner{n}@bench.example",
                "name": f"Partner {n:04d}",
                "password_hash": password,
                "role": "partner",
                "session_token": f"bench-partner-{n}",
                "created_at": start,
            }
            for n in range(shape.partners)
        ]
        _insert(connection, User, users)
        user_ids = dict(
            connection.execute(sa.select(User.email, User.id).where(User.role == "partner")).all()
        )
        partners = [
            {
                "user_id": user_ids[f"partner{n}@bench.example"],
                "ref_code": f"bench{n:04d}",
                "status": "approved",
                "channels": ["seo"],
                "promotion_description": "Benchmark partner",
                "country": "DE",
                "applied_at": start,
                "status_changed_at": start,
            }
            for n in range(shape.partners)
        ]
        _insert(connection, Partner, partners)
        partner_ids = dict(connection.execute(sa.select(Partner.ref_code, Partner.id)).all())
        _insert(
            connection,
            PayoutAccount,
            [
                {
                    "partner_id": pid,
                    "method": "paypal",
                    "paypal_email": f"{code}@bench.example",
                    "updated_at": start,
                }
                for code, pid in partner_ids.items()
            ],
        )
        # Links: 2-5 per partner, one channel each, some with a campaign and a sub-ID.
        links = []
        for n in range(shape.partners):
            for k in range(rng.randint(2, 5)):
                links.append(
                    {
                        "partner_id": partner_ids[f"bench{n:04d}"],
                        "code": f"b{n:04d}l{k}",
                        "label": f"Link {k}",
                        "channel": rng.choice(CHANNELS),
                        "campaign": rng.choice([None, None, "spring", "summer", "black-friday"]),
                        "sub_id": rng.choice([None, None, "sidebar", "footer"]),
                        "created_at": start,
                    }
                )
        _insert(connection, Link, links)
        by_partner: dict[int, list] = {}
        for link in connection.execute(
            sa.select(Link.id, Link.partner_id, Link.code, Link.channel, Link.campaign, Link.sub_id)
        ):
            by_partner.setdefault(link.partner_id, []).append(link)

    raw = [1 / (rank + 1) ** 0.8 for rank in range(shape.partners)]
    total = sum(raw)
    plans = []
    for n in range(shape.partners):
        pid = partner_ids[f"bench{n:04d}"]
        placements = [Placement(None, f"bench{n:04d}", "other", None, None, None)]
        for link in by_partner[pid]:
            for _ in range(rng.randint(1, 2)):
                placements.append(
                    Placement(
                        link.id,
                        link.code,
                        link.channel,
                        link.campaign,
                        rng.choice([link.sub_id, link.sub_id, "newsletter-42", "story"]),
                        rng.choice([None, None, rng.randint(1, CREATIVES)]),
                    )
                )
        stops = rng.randint(shape.days - 90, shape.days - 22) if rng.random() < 0.08 else None
        plans.append(
            PartnerPlan(pid, f"bench{n:04d}", raw[n] / total, rng.uniform(-0.9, 1.5), stops, placements)
        )
    return plans, manager_id


def _day_weights(plans: list[PartnerPlan], day: int, days: int) -> list[float]:
    progress = day / max(days - 1, 1)
    return [
        0.0
        if plan.stops_on is not None and day > plan.stops_on
        else plan.weight * (1 + plan.growth * progress)
        for plan in plans
    ]


def stream_events(app, plans: list[PartnerPlan], shape: Shape, rng: random.Random, now: datetime) -> dict:
    """Clicks, signups, conversions and commission lines, day by day, in chunks."""
    start = now - timedelta(days=shape.days)
    conversion_share = shape.conversions / shape.clicks
    counts = {"clicks": 0, "signups": 0, "conversions": 0, "commissions": 0}
    clicks, signups, conversions, commissions = [], [], [], []
    ids = {"signup": 0, "conversion": 0, "commission": 0}
    carry = 0.0
    conversion_carry = 0.0

    def flush(connection, final=False):
        # All together, parents first: a conversion's click and a line's conversion are in.
        if final or len(clicks) >= CHUNK or len(commissions) >= CHUNK:
            for rows, model in ((clicks, Click), (signups, Signup), (conversions, Conversion),
                                (commissions, Commission)):  # fmt: skip
                _insert(connection, model, rows)
                rows.clear()

    with app.app_context(), db.engine.begin() as connection:
        for day in range(shape.days):
            # A little weekly rhythm; the day totals add up to the requested clicks.
            wanted = shape.clicks / shape.days * (1.15 if (day % 7) in (5, 6) else 0.94) + carry
            today = int(wanted)
            carry = wanted - today
            if day == shape.days - 1:
                today = shape.clicks - counts["clicks"]
            cumulative = list(accumulate(_day_weights(plans, day, shape.days)))
            total = cumulative[-1]
            wanted_conversions = today * conversion_share + conversion_carry
            convert = int(wanted_conversions)
            conversion_carry = wanted_conversions - convert
            if day == shape.days - 1:
                convert = shape.conversions - counts["conversions"]
            converting = set(rng.sample(range(today), min(convert, today))) if today else set()
            for n in range(today):
                plan = plans[bisect(cumulative, rng.random() * total)]
                place = rng.choice(plan.placements)
                created = start + timedelta(days=day, seconds=rng.randint(0, 86_399))
                counts["clicks"] += 1
                click_id = f"{counts['clicks']:032x}"
                bot = rng.random() < 0.03
                clicks.append(
                    {
                        "id": click_id,
                        "partner_id": plan.id,
                        "link_id": place.link_id,
                        "code": place.code,
                        "channel": place.channel,
                        "campaign": place.campaign,
                        "sub_id": place.sub_id,
                        "creative_id": place.creative_id,
                        "destination_url": "https://shop.example/",
                        "ip_hash": f"{rng.getrandbits(128):032x}",
                        "user_agent": "Mozilla/5.0 (bench)",
                        "referrer": None,
                        "is_bot": bot,
                        "is_unique": not bot and rng.random() < 0.8,
                        "flagged": None,
                        "created_at": created,
                    }
                )
                if n in converting:
                    _sale(plan, click_id, created, now, rng, ids, counts, signups, conversions, commissions)
            flush(connection)
        flush(connection, final=True)
        if connection.dialect.name == "postgresql":
            for table in ("signups", "conversions", "commissions"):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608 - fixed names
                )
    return counts


def _sale(plan, click_id, clicked, now, rng, ids, counts, signups, conversions, commissions) -> None:
    signed_up = min(clicked + timedelta(minutes=rng.randint(1, 120)), now)
    bought = min(signed_up + timedelta(minutes=rng.randint(1, 2 * 24 * 60)), now)
    ids["signup"] += 1
    customer = f"cus-{ids['signup']}"
    signups.append(
        {
            "id": ids["signup"],
            "customer_id": customer,
            "partner_id": plan.id,
            "click_id": click_id,
            "attribution_method": "click_id",
            "request_fingerprint": "bench",
            "occurred_at": signed_up,
            "created_at": signed_up,
        }
    )
    counts["signups"] += 1
    ids["conversion"] += 1
    amount = rng.choice([2990, 4990, 8900, 12900, 24900])
    roll = rng.random()
    status, reason, refunded = "pending", None, 0
    if roll < 0.04:
        status, reason, refunded = "rejected", "refund", amount
    elif roll < 0.06:
        refunded = amount // 3
    elif roll < 0.07:
        status, reason = "rejected", "fraud_risk"
    elif roll < 0.075:
        status = "review"
    conversion_id = ids["conversion"]
    conversions.append(
        {
            "id": conversion_id,
            "transaction_id": f"order-{conversion_id}",
            "amount_minor": amount,
            "currency": "USD",
            "refunded_minor": refunded,
            "customer_id": customer,
            "partner_id": plan.id,
            "click_id": click_id,
            "signup_id": ids["signup"],
            "attribution_method": "click_id",
            "status": status,
            "rejection_reason": reason,
            "request_fingerprint": "bench",
            "occurred_at": bought,
            "created_at": bought,
        }
    )
    counts["conversions"] += 1
    if status == "review" or reason == "fraud_risk":
        return
    earned = amount // 10
    ids["commission"] += 1
    base_id = ids["commission"]
    confirm_after = bought + timedelta(days=30)
    commissions.append(
        {
            "id": base_id,
            "conversion_id": conversion_id,
            "partner_id": plan.id,
            "kind": "base",
            "amount_minor": earned,
            "currency": "USD",
            "status": "pending",
            "confirm_after": confirm_after,
            "explanation": {"rule": "base"},
            "reverses_id": None,
            "reason_code": None,
            "created_at": bought,
        }
    )
    counts["commissions"] += 1
    if refunded:
        ids["commission"] += 1
        taken = earned if refunded == amount else earned // 3
        commissions.append(
            {
                "id": ids["commission"],
                "conversion_id": conversion_id,
                "partner_id": plan.id,
                "kind": "reversal",
                "amount_minor": -taken,
                "currency": "USD",
                "status": "pending",
                "confirm_after": confirm_after,
                "reverses_id": base_id,
                "reason_code": "refund",
                "explanation": {"rule": "refund"},
                "created_at": bought,
            }
        )
        counts["commissions"] += 1


def pay_monthly(app, manager_id: int, now: datetime, days: int) -> int:
    """Settle every monthly payout date of the year with the product's own code; all paid but the last."""
    from portal.services import payouts
    from portal.services.program import get_program

    start = (now - timedelta(days=days)).date()
    dates = []
    cursor = date(start.year, start.month, 15)
    while cursor <= now.date():
        if cursor > start:
            dates.append(cursor)
        cursor = date(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 15)
    with app.app_context():
        manager = db.session.get(User, manager_id)
        for index, payout_date in enumerate(dates):
            moment = datetime(payout_date.year, payout_date.month, payout_date.day, 6, tzinfo=UTC)
            batch, _created = payouts.settle(get_program(), payout_date, now=moment, actor=manager)
            db.session.flush()
            if batch is not None and index < len(dates) - 1:
                db.session.execute(
                    sa.update(PayoutItem)
                    .where(PayoutItem.batch_id == batch.id, PayoutItem.status == "pending")
                    .values(status="paid", reference=f"BENCH-{batch.id}", paid_on=payout_date)
                )
                db.session.execute(
                    sa.update(PayoutBatch)
                    .where(PayoutBatch.id == batch.id)
                    .values(status="closed", closed_at=moment)
                )
            db.session.commit()
        payouts.confirm_due_commissions(now)
        db.session.commit()
    return len(dates)


def reuse(database: Database) -> dict:
    """A database an earlier ``--keep`` run generated: measure it again as it is."""
    app = make_app(database)
    with app.app_context():
        counts = {
            name: db.session.scalar(sa.select(sa.func.count()).select_from(model))
            for name, model in (("clicks", Click), ("signups", Signup), ("conversions", Conversion),
                                ("commissions", Commission), ("payouts", PayoutBatch),
                                ("partner_day_rows", PartnerDailyStat))
        }  # fmt: skip
        counts["rollup_rows"] = db.session.scalar(sa.select(sa.func.count()).select_from(DailyStat))
        busiest = _busiest(db.session)
        db.engine.dispose()
    timings = {"generate": 0.0, "payouts": 0.0, "rebuild": 0.0}
    return {
        "app": app,
        "counts": counts,
        "timings": timings,
        "partner_token": busiest[1],
        "busiest_clicks": busiest[2],
    }


def _busiest(session):
    return session.execute(
        sa.select(Partner.id, User.session_token, sa.func.count(Click.id))
        .join(User, User.id == Partner.user_id)
        .join(Click, Click.partner_id == Partner.id)
        .group_by(Partner.id, User.session_token)
        .order_by(sa.func.count(Click.id).desc())
        .limit(1)
    ).one()


def build(database: Database, shape: Shape, seed: int, now: datetime) -> dict:
    rng = random.Random(seed)
    app = make_app(database)
    migrate(app)
    timings = {}
    started = time.perf_counter()
    plans, manager_id = seed_program(app, shape, rng, now)
    counts = stream_events(app, plans, shape, rng, now)
    timings["generate"] = time.perf_counter() - started
    started = time.perf_counter()
    counts["payouts"] = pay_monthly(app, manager_id, now, shape.days)
    timings["payouts"] = time.perf_counter() - started
    started = time.perf_counter()
    with app.app_context():
        from portal.database import begin_write
        from portal.services import rollups

        begin_write(db.session())
        summary = rollups.rebuild(db.session())
        db.session.commit()
        counts["rollup_rows"] = summary.rows
        counts["partner_day_rows"] = db.session.scalar(
            sa.select(sa.func.count()).select_from(PartnerDailyStat)
        )
        busiest = _busiest(db.session)
        db.session.commit()
        # What autovacuum (PostgreSQL) or a periodic ANALYZE would have done by now: old row
        # versions of the confirmed and paid lines cleared, plans from real statistics.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(
                "VACUUM ANALYZE" if connection.dialect.name == "postgresql" else "ANALYZE"
            )
        db.engine.dispose()
    timings["rebuild"] = time.perf_counter() - started
    return {
        "app": app,
        "counts": counts,
        "timings": timings,
        "partner_token": busiest[1],
        "busiest_clicks": busiest[2],
    }


# --- measuring -----------------------------------------------------------------------------


class StatementCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, *args, **kwargs):
        self.count += 1


@contextmanager
def counting(engine):
    counter = StatementCounter()
    sa.event.listen(engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        sa.event.remove(engine, "before_cursor_execute", counter)


def signed_in_client(app, token: str):
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = token
        session["_fresh"] = True
    return client


def render_ms(client, path: str) -> float:
    return render(client, path)[0]


def render(client, path: str) -> tuple[float, float]:
    """Wall-clock and CPU milliseconds of one render (CPU of this process: robust to other load
    on the machine; on PostgreSQL the server's share is not in it)."""
    cpu = time.process_time()
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    cpu = (time.process_time() - cpu) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{path} answered {response.status_code}")
    return elapsed, cpu


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        action="append",
        help="'sqlite' (files in a temp dir) or a PostgreSQL URL (one schema per size); repeat it to "
        "measure both in one run; default: SQLite",
    )
    parser.add_argument("--partners", type=int, default=1_000)
    parser.add_argument("--clicks", type=int, default=2_000_000)
    parser.add_argument("--conversions", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--small-clicks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100, help="renders per page and size")
    parser.add_argument(
        "--keep", action="store_true", help="keep the generated databases (SQLite: bench/results/)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="measure the databases a --keep run left, as they are"
    )
    args = parser.parse_args()
    urls = [None if url in (None, "sqlite") else url for url in (args.database_url or [None])]

    now = datetime.now(UTC).replace(microsecond=0)
    small_conversions = max(1, round(args.conversions * args.small_clicks / args.clicks))
    shapes = {
        "small": Shape(args.partners, args.small_clicks, small_conversions, args.days),
        "large": Shape(args.partners, args.clicks, args.conversions, args.days),
    }
    if args.keep or args.reuse:
        workdir = ROOT / "bench" / "results"
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    engines = {url: "PostgreSQL" if url else "SQLite" for url in urls}
    databases = {
        (url, label): prepare_database(url, label, workdir, not args.reuse)
        for url in urls
        for label in shapes
    }
    print(
        f"dashboard bench on {' and '.join(engines.values())}: {args.partners:,} partners over "
        f"{args.days} days ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {_load()})"
    )
    built = {}
    try:
        for (url, label), database in databases.items():
            shape = shapes[label]
            if args.reuse:
                built[url, label] = reuse(database)
            else:
                built[url, label] = build(database, shape, seed=2026, now=now)
            c, t = built[url, label]["counts"], built[url, label]["timings"]
            print(
                f"  {engines[url]} {label}: {c['clicks']:,} clicks, {c['signups']:,} signups, "
                f"{c['conversions']:,} conversions, {c['commissions']:,} commission lines, "
                f"{c['payouts']} payout dates; generated in {t['generate']:.0f} s, "
                f"settled in {t['payouts']:.0f} s, rollups rebuilt in {t['rebuild']:.0f} s "
                f"({c['rollup_rows']:,} rows, {c['partner_day_rows']:,} partner-days); busiest partner "
                f"{built[url, label]['busiest_clicks']:,} clicks"
            )
        # What every worker does once the app is loaded (gunicorn.conf.py, portal/heap.py): the
        # loaded apps out of the garbage collector's full rounds. Before warming up, as there.
        from portal.heap import freeze_startup_heap

        freeze_startup_heap()
        pages = {"partner": "/partner/", "operator": "/admin/"}
        clients = {
            (url, label, page): signed_in_client(
                built[url, label]["app"],
                built[url, label]["partner_token"] if page == "partner" else "bench-manager",
            )
            for url, label in built
            for page in pages
        }
        statements = {}
        for (url, label, page), client in clients.items():  # warm up: templates, caches, connections
            app = built[url, label]["app"]
            with app.app_context():
                engine = db.engine
            for _ in range(3):
                render_ms(client, pages[page])
            with counting(engine) as counter:
                render_ms(client, pages[page])
            statements[url, label, page] = counter.count
        samples: dict[tuple, list[float]] = {key: [] for key in clients}
        cpu: dict[tuple, list[float]] = {key: [] for key in clients}
        for _ in range(args.requests):
            for key, client in clients.items():
                wall, used = render(client, pages[key[2]])
                samples[key].append(wall)
                cpu[key].append(used)
        print(
            f"  render time of the default view (last 30 days), {args.requests} renders each, p95 "
            f"(load now {_load()}):"
        )
        ok = True
        for url in urls:
            for page in pages:
                small, large = p95(samples[url, "small", page]), p95(samples[url, "large", page])
                ratio = large / small
                ok = ok and ratio <= TARGET_RATIO
                print(
                    f"    {engines[url]:10s} {page:8s} dashboard: {args.small_clicks:>9,} clicks "
                    f"{small:7.1f} ms   {args.clicks:>9,} clicks {large:7.1f} ms   ratio {ratio:4.2f}   "
                    f"(SQL statements {statements[url, 'small', page]} / {statements[url, 'large', page]}; "
                    f"median {statistics.median(samples[url, 'small', page]):.1f} / "
                    f"{statistics.median(samples[url, 'large', page]):.1f} ms; CPU of this process p95 "
                    f"{p95(cpu[url, 'small', page]):.1f} / {p95(cpu[url, 'large', page]):.1f} ms, "
                    f"ratio {p95(cpu[url, 'large', page]) / p95(cpu[url, 'small', page]):.2f})"
                )
        print(f"  target: ratio ≤ {TARGET_RATIO} on every database — {'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    finally:
        for entry in built.values():
            with entry["app"].app_context():
                db.engine.dispose()
        if args.keep or args.reuse:
            print(f"  kept: {', '.join(d.schema or d.url for d in databases.values())}")
        else:
            for (url, _label), database in databases.items():
                drop_database(url, database)
            if None in urls:
                workdir.rmdir()


def _load() -> str:
    import os

    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
