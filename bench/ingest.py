"""Conversion ingest: the portal's ``POST /api/v1/conversions`` against a bare Flask 201, loaded by wrk.

Both apps run under the same gunicorn flags on 127.0.0.1 (two gthread workers × 8 threads
by default; the portal with its rate limiter on, API_RATE_LIMIT=off). ``wrk`` (installed if missing when run
as root with apt) loads each in turn, A B B A in halves of --seconds after a warm-up; every
request is a new transaction id (bench/wrk_ingest.lua: prefix, wrk thread, counter), a
random amount, attributed by a random partner's ``ref``. The portal runs as the README
recommends in production: its outbox dispatcher a process of its own
(OUTBOX_DISPATCH_MODE=process, live events over Redis: REDIS_URL, default
redis://127.0.0.1:6379/6). The instance has two tiers, the monthly ladder and a running
bonus campaign, so the rewards engine does its whole work. It reports req/s and p50 / p99
(``wrk --latency``); the bench prints the ratio, the CPU the client used, and a warning
when the bare app is not above 2,000 req/s.

Then the portal is stopped and: every transaction id it answered 201 for must be a stored
conversion; every accepted sale has its commission lines, equal to what a replay of every
partner's sales from scratch gives (tiers from the raw conversions, then the rules); and every
rollup equals a recount from the raw rows.

    python bench/ingest.py [--seconds 10] [--quick] [--pg-url postgresql+psycopg://…/bench]
"""

from __future__ import annotations

import os
import sys
import time

from _common import (
    GunicornSettings,
    database_label,
    dispatcher_process_env,
    load_line,
    machine_line,
    parse_args,
    prepare_instance,
    scheduling_line,
    start_bare,
    start_portal,
)
from _wrk import (
    INGEST_LUA,
    WrkResult,
    abba,
    catch_up,
    catch_up_lines,
    ensure_wrk,
    run_wrk,
    sanity_warning,
    verdict,
)

TARGET = 0.15
P99_TARGET_MS = 250.0


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    wrk = ensure_wrk()
    settings = GunicornSettings(workers=args.workers, threads=args.threads)
    database = database_label(args)
    began = time.monotonic()
    print(f"== conversion ingest: portal POST /api/v1/conversions ({database}) vs bare Flask JSON 201")
    print(machine_line())
    print(load_line())
    print(f"gunicorn, both apps: {settings.describe()}")
    print("  (the portal also gets -c gunicorn.conf.py for its hooks; the flags override it)")
    print(
        f"client: {wrk} -t{args.client_threads} -c{args.concurrency} --latency -s bench/wrk_ingest.lua, "
        f"{args.seconds:g} s per app (A B B A halves), warm-up {args.warmup:g} s each"
    )

    instance = prepare_instance(args.partners, args.links, keep=args.keep, pg_url=args.pg_url)
    refs = instance.refs
    print(
        f"data: {len(refs)} approved partners; two tiers, the ladder and a running bonus campaign; "
        "each request a new transaction id, a random amount, attributed by a random partner's ref; "
        "the rate limiter on, the API's own budget off (API_RATE_LIMIT=off, README: Rate limits)"
    )
    print(scheduling_line(instance))
    dispatcher = dispatcher_process_env(f"bench-ingest-{os.getpid()}")
    print(
        "outbox: OUTBOX_DISPATCH_MODE=process (the production set-up, README: Events and webhooks): "
        f"the dispatcher runs as a process of the portal's master, its CPU counted with the "
        f"server's; live events over Redis at {dispatcher['REDIS_URL']}"
    )
    run_prefix = f"bench-{int(time.time())}"

    servers = []
    try:
        # As a brand reporting many sales a second runs it: failed authentications and every
        # page still limited, no budget for a valid key (it would be spent in moments).
        limits = {"RATELIMIT_ENABLED": "true", "API_RATE_LIMIT": "off"}
        portal = start_portal(instance, settings, **limits, **dispatcher)
        servers.append(portal)
        bare = start_bare(instance, settings)
        servers.append(bare)
        runs_started = [0]

        def measure(server, seed, record):
            def run(seconds):
                runs_started[0] += 1
                return run_wrk(
                    INGEST_LUA,
                    server.port,
                    seconds=seconds,
                    connections=args.concurrency,
                    threads=args.client_threads,
                    lines=refs,
                    server=server,
                    record_ids=record,
                    seed=seed,
                    # Unique across runs too: each run's ids start at 1 in every wrk thread.
                    env={"WRK_PREFIX": f"{run_prefix}-{runs_started[0]}", "WRK_API_KEY": instance.api_key},
                )

            return run

        measure(bare, 1, False)(args.warmup)
        warm = measure(portal, 2, True)(args.warmup)  # per-process caches, each partner's first sale
        # The portal's catch-up (what its runs left its background threads) happens before
        # the bare app runs again, never during: after its warm-up, and after its two runs.
        warm_settled = catch_up(portal)
        settled = []
        bare_run, portal_run, runs = abba(
            measure(bare, 3, False),
            measure(portal, 4, True),
            args.seconds,
            settle_b=lambda: settled.append(catch_up(portal)),
        )
        served = WrkResult().add(warm).add(portal_run)
        exit_code = portal.stop()
        servers.remove(portal)
        check = instance.check("conversions", served.ids)
    except BaseException:
        instance.keep = True
        print(f"!! failed; the instance and the servers' logs are in {instance.path}", file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.stop()

    print()
    for (name, result), label in zip(runs, ("A bare", "B portal", "B portal", "A bare"), strict=True):
        print(result.line(label) + f"   [{name}]")
    print(warm.line("warm-up") + "   <- the portal's: every worker's caches, many partners' first sale")
    print(bare_run.line("bare"))
    print(portal_run.line("portal"))
    print(bare_run.cpu_line("bare"))
    print(portal_run.cpu_line("portal"))
    ratio = portal_run.rps / bare_run.rps if bare_run.rps else 0.0
    if bare_run.server_cpu and portal_run.server_cpu:
        cpu_ratio = (bare_run.server_cpu / bare_run.requests) / (portal_run.server_cpu / portal_run.requests)
        print(f"server CPU per request, bare/portal: {cpu_ratio:.2f}   (less sensitive to other load)")
    print(portal_run.thread_line("portal"))
    print(*catch_up_lines(settled[0], portal_run, warm_settled, warm), sep="\n")
    if args.pg_url:
        print(portal_run.database_line("portal"))
        print(bare_run.database_line("bare"))
    print(f"ratio conversions/bare: {ratio:.2f}   ({verdict(ratio, TARGET)}, on {database})")
    p99_ok = portal_run.p99_ms <= P99_TARGET_MS
    print(
        f"p99: bare {bare_run.p99_ms:.2f} ms, portal {portal_run.p99_ms:.2f} ms at {args.concurrency} "
        f"connections (the worse of each app's two runs; target ≤ {P99_TARGET_MS:.0f} ms: "
        f"{'met' if p99_ok else 'MISSED'})"
    )
    warning = sanity_warning(bare_run)
    if warning:
        print(warning)
    print(load_line().replace("before the run", "after the run"))

    ok = _report(check, served, exit_code)
    print(f"(total run time {time.monotonic() - began:.0f} s)")
    instance.cleanup()
    return 0 if ok else 1


def _report(check: dict, served: WrkResult, exit_code: int) -> bool:
    ok = True
    answered = served.statuses[201]
    print(
        f"conversions: the portal answered {answered} 201s (warm-up included), wrk recorded "
        f"{check['answered']} transaction ids, the database holds {check['stored']}; "
        f"missing {check['missing']}"
        + (f" e.g. {check['missing_e.g.']}" if check["missing"] else "")
        + f"; stored but not seen by wrk (in flight when a run ended) {check['stored_unanswered']}"
    )
    if check["missing"] or check["answered"] != answered or not answered:
        print("FAIL: every 201 the portal answered must be a stored conversion")
        ok = False
    else:
        print("  every 201 is a stored conversion -> PASS")
    if served.requests != answered or served.socket_errors:
        others = {s: n for s, n in served.statuses.items() if s != 201}
        print(
            f"FAIL: {served.requests - answered} answers were not 201 {others}; "
            f"{served.socket_errors} socket errors"
        )
        for status, body in served.samples.items():
            print(f"  e.g. {status}: {body[:240]!r}")
        ok = False
    print(
        f"  {check['by_ref']} of the {check['stored']} conversions attributed by ref, "
        f"{check['lines']} commission lines, {check['tier_changes']} tier upgrades"
    )
    if check["by_ref"] != check["stored"]:
        print("FAIL: every conversion should have been attributed to its partner by ref")
        ok = False
    if check["without_lines"]:
        print(f"FAIL: {check['without_lines']} accepted sales have no commission line")
        ok = False
    unexplained = check["mismatches"] - (
        check["mismatches_between_overlapping_sales"] if check["dialect"] == "postgresql" else 0
    )
    if check["mismatches"]:
        print(
            f"  replay: {check['mismatches']} of {check['replayed']} sales earn other lines than a "
            f"replay from scratch gives, {check['mismatches_between_overlapping_sales']} of them beside "
            f"another sale of the same partner received within a second; "
            f"e.g. {check['mismatches_e.g.'][:2]}"
        )
        if check["dialect"] == "postgresql" and not unexplained:
            print(
                "  (PostgreSQL, read committed: a sale does not see another of the same partner still "
                "in flight, so a tier can be reached one sale later than a one-at-a-time replay says; "
                "the month close catches up) -> PASS"
            )
    if unexplained:
        print("FAIL: commissions differ from a replay of every partner's sales from scratch")
        ok = False
    elif not check["mismatches"]:
        print(f"  replay from scratch: all {check['replayed']} sales earn exactly their stored lines -> PASS")
    if check["rollup_differences"]:
        print(f"FAIL: rollups differ from a recount: {check['rollup_differences']}")
        ok = False
    else:
        print(f"  rollups ({check['rollup_rows']} rows, tier counters included) equal a recount -> PASS")
    if check["lowest_position"] != check["newest_event"] or check["upgrades"] != check["upgrade_messages"]:
        print(
            f"FAIL: the outbox dispatcher left events behind: positions from {check['lowest_position']} "
            f"of {check['newest_event']} events, {check['upgrade_messages']} messages for "
            f"{check['upgrades']} tier upgrades"
        )
        ok = False
    else:
        print(
            f"  outbox: all {check['newest_event']} events handed on, a message for each of the "
            f"{check['upgrades']} tier upgrades -> PASS"
        )
    print(f"  gunicorn exited {exit_code} after SIGTERM")
    return ok


if __name__ == "__main__":
    sys.exit(main())
