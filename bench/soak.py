"""Soak: minutes of mixed load on the portal under gunicorn — clicks, sales, partner pages and
100 open websockets with an announcement every 30 s — then error rates, p50 / p99 per kind,
announcements delivered, the workers' memory growth, and every answered click and sale stored.

The portal runs as in production (PORTAL_ENV=production, rate limits on, buffered clicks,
gunicorn.conf.py with its hooks) on a free 127.0.0.1 port, on SQLite or the PostgreSQL
database given with ``--pg-url`` (its schema is dropped and re-created), with Redis from
REDIS_URL when set: then two workers share live events through it; without Redis one worker
(live events cannot cross workers without it). Each worker gets enough threads for every
websocket (gthread holds one thread per open socket) plus the HTTP load.

Load, bounded and on 127.0.0.1 only:
- clicks: wrk (bench/wrk_redirect.lua) on 4 connections, each waiting 25 ms between
  requests (at most 160/s); every click id answered is recorded;
- sales: wrk (bench/wrk_ingest.lua) on 1 connection waiting 100 ms (at most 10/s, under the
  API's 1,200 per minute per key), each a new transaction id;
- partner pages: 2 Python threads, signed-in partners, dashboard / earnings / links in turn,
  at most 3 pages/s each;
- 100 partner websockets (bench/fanout.py's selector-based Engine.IO client) stay connected;
  an operator publishes an announcement to all partners every 30 s and each delivery is counted.

The workers' RSS (VmRSS of /proc/<pid>/status, summed) is read at 1 minute (a quarter of the
run when it is shorter) and at the end. Then the portal is stopped gracefully and every click
id and transaction id it answered must be stored (bench/_checks.py, as bench/redirect.py and
bench/ingest.py check). Exit status 1 on any error, loss, dropped socket or missed delivery.

    python bench/soak.py [--minutes 5] [--quick] [--pg-url postgresql+psycopg://…/bench]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

from _common import (
    FORBIDDEN_PG_DATABASES,
    HOST,
    PYTHON,
    ROOT,
    GunicornSettings,
    _run,
    load_line,
    machine_line,
    prepare_instance,
    start_portal,
)
from _wrk import INGEST_LUA, REDIRECT_LUA, WrkResult, ensure_wrk, run_wrk
from fanout import Fleet

SOCKETS = 100
ANNOUNCE_EVERY = 30.0  # seconds; the first one 15 s in
DELIVERY_TIMEOUT = 20.0
CLICK_CONNECTIONS, CLICK_DELAY_MS = 4, 25
SALE_CONNECTIONS, SALE_DELAY_MS = 1, 100
PAGE_THREADS, PAGE_INTERVAL = 2, 1 / 3
PAGES = ("/partner/", "/partner/earnings", "/partner/links")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=None, help="length of the load (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 minute")
    parser.add_argument("--partners", type=int, default=200, help=f"generated partners (at least {SOCKETS})")
    parser.add_argument("--links", type=int, default=5, help="links per partner (default 5)")
    parser.add_argument(
        "--workers", type=int, default=None, help="gunicorn workers (default 2 with Redis, else 1)"
    )
    parser.add_argument("--pg-url", default=None, help="a throw-away PostgreSQL database (schema dropped)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance folder")
    args = parser.parse_args()
    if args.minutes is None:
        args.minutes = 1.0 if args.quick else 5.0
    if not 0.5 <= args.minutes <= 60:
        parser.error("--minutes must be in [0.5, 60]")
    args.partners = max(args.partners, SOCKETS)
    if args.pg_url:
        from sqlalchemy.engine import make_url

        if make_url(args.pg_url).database in FORBIDDEN_PG_DATABASES:
            parser.error("refusing to drop the schema of that database; give a throw-away one")
    return args


# --- signed-in sessions (run as a child with the instance's environment) ----------------------


def _cookies(count: int) -> dict:
    """Session cookies of the admin and of the first ``count`` partners, as a browser has after signing in."""
    sys.path.insert(0, str(ROOT))
    import sqlalchemy as sa

    from portal import create_app
    from portal.extensions import db
    from portal.models import Partner, User

    app = create_app()
    with app.app_context():
        serializer = app.session_interface.get_signing_serializer(app)
        admin = db.session.scalar(
            sa.select(User.session_token).where(User.email == "bench-admin@example.com")
        )
        partners = db.session.scalars(
            sa.select(User.session_token)
            .join(Partner, Partner.user_id == User.id)
            .order_by(Partner.id)
            .limit(count)
        ).all()

        def sign(token: str) -> str:
            return serializer.dumps({"_user_id": token, "_fresh": True})

        return {"admin": sign(admin), "partners": [sign(token) for token in partners]}


# --- the load ------------------------------------------------------------------------------


def paced_script(base: Path, delay_ms: int, workdir: Path) -> Path:
    """``base`` with wrk's delay() added: each connection waits ``delay_ms`` between requests."""
    script = workdir / f"paced-{base.name}"
    script.write_text(f"dofile({json.dumps(str(base))})\nfunction delay()\n  return {delay_ms}\nend\n")
    return script


class Kind:
    """Latencies and outcomes of one kind of request made from Python."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.statuses: dict[int, int] = {}
        self.connection_errors = 0

    def add(self, status: int | None, ms: float) -> None:
        with self.lock:
            if status is None:
                self.connection_errors += 1
            else:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.latencies_ms.append(ms)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def browse(port: int, cookies: list[str], deadline: float, kind: Kind, offset: int) -> None:
    """Partner pages, one every PAGE_INTERVAL at most, over one keep-alive connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    n = offset
    while time.monotonic() < deadline:
        started = time.monotonic()
        cookie, path = cookies[n % len(cookies)], PAGES[n % len(PAGES)]
        n += 1
        try:
            connection.request("GET", path, headers={"Cookie": f"session={cookie}", "Accept": "text/html"})
            response = connection.getresponse()
            response.read()
            kind.add(response.status, (time.monotonic() - started) * 1000)
        except (OSError, http.client.HTTPException):
            kind.add(None, 0.0)
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=30)
        time.sleep(max(0.0, PAGE_INTERVAL - (time.monotonic() - started)))
    connection.close()


class SoakFleet(Fleet):
    """fanout.py's clients, counting each announcement (by id) per client and sockets the server closed."""

    def __init__(self, url: str, cookies: list[str]):
        super().__init__(url, cookies)
        self.deliveries: dict[int, dict[int, float]] = {}  # announcement id -> client -> when
        self.dropped = 0

    def _handle(self, index: int, text: str, now: float) -> None:
        if text.startswith('42["announcement"'):
            try:
                announcement = int(json.loads(text[2:])[1]["announcement"])
            except (ValueError, KeyError, IndexError, TypeError):
                return
            with self.lock:
                self.deliveries.setdefault(announcement, {}).setdefault(index, now)
        else:
            super()._handle(index, text, now)

    def _drop(self, index: int) -> None:
        sock, _ws = self.conns[index]
        self.selector.unregister(sock)
        self.dropped += 1

    def _loop(self) -> None:
        from wsproto.events import CloseConnection, Ping, TextMessage

        while not self._stop:
            for key, _ in self.selector.select(timeout=0.5):
                now = time.perf_counter()
                index = key.data
                sock, ws = self.conns[index]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(index)
                    continue
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, TextMessage):
                        self._handle(index, event.data, now)
                    elif isinstance(event, Ping):
                        sock.sendall(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self._drop(index)
                        break

    def newest(self) -> tuple[int | None, int]:
        with self.lock:
            if not self.deliveries:
                return None, 0
            newest = max(self.deliveries)
            return newest, len(self.deliveries[newest])


def publish(port: int, cookie: str, title: str) -> float:
    """An operator publishes an announcement to every partner, as fanout.py does, but keeping the
    session cookie by hand: production marks it Secure, so a cookie jar would not send it back
    over plain HTTP (and the CSRF token lives in it). Returns when "publish" was pressed."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        connection.request("GET", "/admin/announcements/new", headers={"Cookie": f"session={cookie}"})
        response = connection.getresponse()
        page = response.read().decode(errors="replace")
        renewed = re.search(r"session=([^;]+)", response.getheader("Set-Cookie") or "")
        cookie = renewed.group(1) if renewed else cookie
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        if response.status != 200 or token is None:
            raise RuntimeError(f"the announcement form answered {response.status}")
        form = {"csrf_token": token.group(1), "title": title, "body": "Soak test", "audience_kind": "all"}
        started = time.perf_counter()
        connection.request(
            "POST",
            "/admin/announcements/new",
            body=urlencode({**form, "when": "now"}),
            headers={"Cookie": f"session={cookie}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        if response.status != 302:
            raise RuntimeError(f"publishing answered {response.status}: {body[:200]}")
        return started
    finally:
        connection.close()


def announce(port: int, admin: str, fleet: SoakFleet, deadline: float, began: float, log: list) -> None:
    """An announcement every ANNOUNCE_EVERY seconds; each waits until every client has it (bounded)."""
    number = 0
    while True:
        at = began + ANNOUNCE_EVERY / 2 + number * ANNOUNCE_EVERY
        if at > deadline - 5:
            return
        time.sleep(max(0.0, at - time.monotonic()))
        number += 1
        before, _ = fleet.newest()
        try:
            started = publish(port, admin, f"Soak announcement {number}")
        except Exception as error:  # noqa: BLE001 - counted and reported, the soak goes on
            log.append({"number": number, "error": str(error)[:200]})
            continue
        wait_until = time.monotonic() + DELIVERY_TIMEOUT
        newest, count = fleet.newest()
        while (newest == before or count < len(fleet.cookies)) and time.monotonic() < wait_until:
            time.sleep(0.05)
            newest, count = fleet.newest()
        log.append({"number": number, "id": newest if newest != before else None, "started": started})


def workers_rss_kib(server) -> tuple[int, list[int]]:
    """The summed VmRSS (KiB) of the gunicorn master's children, and their pids."""
    pids = server._children()
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total, pids


def sample_memory(server, began: float, first_at: float, deadline: float, samples: list) -> None:
    """RSS every 10 s, and at ``first_at`` exactly."""
    marks = sorted({first_at, *range(10, int(deadline - began), 10)})
    for mark in marks:
        time.sleep(max(0.0, began + mark - time.monotonic()))
        if time.monotonic() >= deadline:
            return
        samples.append((mark, *workers_rss_kib(server)))


# --- the run -----------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    ensure_wrk()
    redis_url = os.environ.get("REDIS_URL")
    workers = args.workers or (2 if redis_url else 1)
    seconds = args.minutes * 60
    first_mark = 60.0 if seconds >= 120 else seconds / 4
    settings = GunicornSettings(workers=workers, threads=SOCKETS + 32)
    print(f"== soak: {args.minutes:g} min of clicks, sales, partner pages and {SOCKETS} websockets")
    print(machine_line())
    print(load_line())
    print(
        f"portal: PORTAL_ENV=production, {'PostgreSQL' if args.pg_url else 'SQLite'}, "
        f"{'Redis ' + redis_url if redis_url else 'no Redis (REDIS_URL unset)'}, rate limits on, "
        f"buffered clicks; gunicorn -c gunicorn.conf.py {settings.describe()}"
    )
    if workers > 1 and not redis_url:
        print("!! several workers without Redis: announcements reach only the publishing worker's sockets")
    print(
        f"load: clicks wrk -c{CLICK_CONNECTIONS} delay {CLICK_DELAY_MS} ms "
        f"(<= {CLICK_CONNECTIONS * 1000 // CLICK_DELAY_MS}/s); "
        f"sales wrk -c{SALE_CONNECTIONS} delay {SALE_DELAY_MS} ms "
        f"(<= {SALE_CONNECTIONS * 1000 // SALE_DELAY_MS}/s); "
        f"pages {PAGE_THREADS} threads (<= {PAGE_THREADS / PAGE_INTERVAL:.0f}/s) over {', '.join(PAGES)}; "
        f"{SOCKETS} websockets, an announcement every {ANNOUNCE_EVERY:.0f} s"
    )

    instance = prepare_instance(args.partners, args.links, keep=args.keep, pg_url=args.pg_url)
    cookie_out = _run([PYTHON, __file__, "cookies", str(SOCKETS)], instance.env, "signing sessions")
    cookies = json.loads(cookie_out.strip().splitlines()[-1])
    print(
        f"data: {len(instance.refs)} approved partners x {args.links} links; "
        f"{len(cookies['partners'])} signed in"
    )
    extra = {"SOCKETIO_CHANNEL": f"soak-{uuid.uuid4().hex}"}
    if redis_url:
        extra["REDIS_URL"] = redis_url
    portal = None
    fleet = None
    try:
        portal = start_portal(instance, settings, **extra)
        url = f"http://{HOST}:{portal.port}"
        fleet = SoakFleet(url, cookies["partners"])
        fleet.connect_all()
        print(f"{SOCKETS} websockets connected and in their rooms; load for {seconds:.0f} s")
        results: dict[str, WrkResult] = {}
        errors: list[BaseException] = []
        pages = Kind()
        published: list[dict] = []
        memory: list[tuple] = []
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            workdir = Path(tmp)

            def wrk_load(name, script, delay_ms, connections, lines, env, seed):
                try:
                    results[name] = run_wrk(
                        paced_script(script, delay_ms, workdir),
                        portal.port,
                        seconds=seconds,
                        connections=connections,
                        threads=1,
                        lines=lines,
                        record_ids=True,
                        seed=seed,
                        env=env,
                    )
                except BaseException as error:  # noqa: BLE001 - re-raised below
                    errors.append(error)

            began = time.monotonic()
            deadline = began + seconds
            sale_env = {"WRK_PREFIX": f"soak-{int(time.time())}", "WRK_API_KEY": instance.api_key}
            threads = [
                threading.Thread(
                    target=wrk_load,
                    args=("clicks", REDIRECT_LUA, CLICK_DELAY_MS, CLICK_CONNECTIONS, instance.codes, {}, 1),
                ),
                threading.Thread(
                    target=wrk_load,
                    args=("sales", INGEST_LUA, SALE_DELAY_MS, SALE_CONNECTIONS, instance.refs, sale_env, 2),
                ),
                *(
                    threading.Thread(
                        target=browse,
                        args=(portal.port, cookies["partners"], deadline, pages, i * 7),
                        daemon=True,
                    )
                    for i in range(PAGE_THREADS)
                ),
                threading.Thread(
                    target=announce,
                    args=(portal.port, cookies["admin"], fleet, deadline, began, published),
                    daemon=True,
                ),
                threading.Thread(
                    target=sample_memory, args=(portal, began, first_mark, deadline, memory), daemon=True
                ),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=seconds + 120)
            if errors:
                raise errors[0]
            end_rss = workers_rss_kib(portal)
            elapsed = time.monotonic() - began
        dropped = fleet.dropped
        deliveries = {k: dict(v) for k, v in fleet.deliveries.items()}
        fleet.close()
        fleet = None
        exit_code = portal.stop()
        portal = None
        clicks_check = instance.check("clicks", results["clicks"].ids)
        sales_check = instance.check("conversions", results["sales"].ids)
    except BaseException:
        instance.keep = True
        print(f"!! failed; the instance and the server's logs are in {instance.path}", file=sys.stderr)
        raise
    finally:
        if fleet is not None:
            fleet.close()
        if portal is not None:
            portal.stop()

    ok = report(results, pages, published, deliveries, dropped, memory, first_mark, end_rss, elapsed)
    ok = checks(clicks_check, sales_check, results, exit_code) and ok
    print(load_line().replace("before the run", "after the run"))
    print("RESULT: PASS" if ok else "RESULT: FAIL")
    if not ok:
        instance.keep = True  # the server's logs say why
    instance.cleanup()
    return 0 if ok else 1


def report(results, pages, published, deliveries, dropped, memory, first_mark, end_rss, elapsed) -> bool:
    ok = True
    print()
    print(
        f"{'kind':<8} {'requests':>9} {'per s':>7} {'errors':>7} {'rate':>8} {'p50 ms':>8} {'p99 ms':>8}"
        "  statuses"
    )
    for name in ("clicks", "sales"):
        r = results[name]
        bad = sum(n for status, n in r.statuses.items() if status >= 400) + r.socket_errors
        ok = ok and bad == 0
        statuses = dict(sorted(r.statuses.items())) | (
            {"socket errors": r.socket_errors} if r.socket_errors else {}
        )
        print(
            f"{name:<8} {r.requests:>9} {r.rps:>7.1f} {bad:>7} {bad / max(1, r.requests):>8.3%} "
            f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f}  {statuses}"
        )
        for status, body in r.samples.items():
            print(f"  e.g. {status}: {body[:200]!r}")
    answered = sum(pages.statuses.values())
    total = answered + pages.connection_errors
    bad = total - pages.statuses.get(200, 0)  # a redirect here would mean the session was lost
    ok = ok and bad == 0 and total > 0
    statuses = dict(sorted(pages.statuses.items())) | (
        {"connection errors": pages.connection_errors} if pages.connection_errors else {}
    )
    print(
        f"{'pages':<8} {total:>9} {total / elapsed:>7.1f} {bad:>7} {bad / max(1, total):>8.3%} "
        f"{percentile(pages.latencies_ms, 0.5):>8.1f} {percentile(pages.latencies_ms, 0.99):>8.1f}  "
        f"{statuses}"
        "   (anything but 200 counts as an error)"
    )

    ids = [entry.get("id") for entry in published]
    failed = [entry for entry in published if "error" in entry]
    delivered = sum(len(deliveries.get(i, {})) for i in ids if i is not None)
    expected = len(published) * SOCKETS
    latencies = [
        (at - entry["started"]) * 1000
        for entry in published
        if entry.get("id") is not None
        for at in deliveries.get(entry["id"], {}).values()
    ]
    print(
        f"announcements: {len(published)} published ({len(failed)} failed), delivered {delivered} of "
        f"{expected} expected ({SOCKETS} sockets each); delivery p50 {percentile(latencies, 0.5):.0f} ms, "
        f"p99 {percentile(latencies, 0.99):.0f} ms from pressing publish; "
        f"sockets closed by the server: {dropped}"
    )
    for entry in failed:
        print(f"  publishing #{entry['number']} failed: {entry['error']}")
    ok = ok and expected > 0 and delivered == expected and not dropped

    first = next((m for m in memory if m[0] == first_mark), None)
    end_kib, end_pids = end_rss
    if first is None:
        print("!! no memory sample at the first mark")
        ok = False
    else:
        _mark, first_kib, first_pids = first
        growth = (end_kib - first_kib) / first_kib if first_kib else 0.0
        print(
            f"workers' RSS (VmRSS summed over {len(end_pids)}): "
            f"{first_kib / 1024:.1f} MiB at {first_mark:.0f} s, "
            f"{end_kib / 1024:.1f} MiB at the end ({elapsed:.0f} s): {growth:+.1%}"
        )
        if sorted(first_pids) != sorted(end_pids):
            print(f"!! the workers changed during the run (pids {first_pids} -> {end_pids}): one restarted")
            ok = False
        steps = ", ".join([f"{m[0]:.0f}s {m[1] / 1024:.1f}" for m in memory] + [f"end {end_kib / 1024:.1f}"])
        print(f"  every 10 s (MiB): {steps}")
    return ok


def checks(clicks: dict, sales: dict, results: dict, exit_code: int) -> bool:
    ok = True
    for name, check, status in (("clicks", clicks, 302), ("sales", sales, 201)):
        answered = results[name].statuses.get(status, 0)
        good = not check["missing"] and check["answered"] == answered and answered > 0
        ok = ok and good
        print(
            f"{name}: answered {answered} {status}s, recorded {check['answered']} ids, "
            f"stored {check['stored']}; "
            f"missing {check['missing']}"
            + (f" e.g. {check['missing_e.g.']}" if check["missing"] else "")
            + f" -> {'PASS' if good else 'FAIL'}"
        )
        if check["rollup_differences"]:
            print(f"  FAIL: rollups differ from a recount: {check['rollup_differences']}")
            ok = False
    unexplained = sales["mismatches"] - (
        sales["mismatches_between_overlapping_sales"] if sales["dialect"] == "postgresql" else 0
    )
    print(
        f"  sales: {sales['lines']} commission lines, {sales['without_lines']} accepted sales without one; "
        f"{sales['mismatches']} of {sales['replayed']} differ from a replay from scratch "
        f"({unexplained} not explained by a concurrent sale of the same partner)"
        + ("" if clicks["rollup_differences"] or sales["rollup_differences"] else "; rollups equal a recount")
    )
    if unexplained or sales["without_lines"]:
        ok = False
    print(f"gunicorn exited {exit_code} after SIGTERM")
    return ok and exit_code == 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["cookies"]:
        print(json.dumps(_cookies(int(sys.argv[2]))))
    else:
        sys.exit(main())
