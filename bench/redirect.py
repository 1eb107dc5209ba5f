"""Click redirect throughput: the portal's ``GET /go/<code>`` against a bare Flask 302, loaded by wrk.

Both apps run under the same gunicorn flags on 127.0.0.1 (two gthread workers × 8 threads
by default). ``wrk`` (a native client, so that the server and not the client is measured;
installed if missing when run as root with apt) loads each in turn, A B B A in halves of
--seconds after a warm-up, with a code drawn at random per request (bench/wrk_redirect.lua).
It reports req/s and p50 / p99 (``wrk --latency``); the bench prints the ratio, the CPU the
client used, and a warning when the bare app is not above 2,000 req/s (then the client or
the machine is the limit); on PostgreSQL also the CPU this machine's postgres processes used
in the portal's runs (they share the cores with both apps). Then the portal is stopped
gracefully and every click id it answered with must be a row in ``clicks`` (buffered writes
flushed by gunicorn's worker_exit hook), and every rollup must equal a recount from the raw
rows.

    python bench/redirect.py [--seconds 10] [--quick] [--pg-url postgresql+psycopg://…/bench]
"""

from __future__ import annotations

import sys
import time

from _common import (
    GunicornSettings,
    database_label,
    load_line,
    machine_line,
    parse_args,
    prepare_instance,
    scheduling_line,
    start_bare,
    start_portal,
)
from _wrk import (
    REDIRECT_LUA,
    WrkResult,
    abba,
    catch_up,
    catch_up_lines,
    ensure_wrk,
    run_wrk,
    sanity_warning,
    verdict,
)

TARGET = 0.70


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    wrk = ensure_wrk()
    settings = GunicornSettings(workers=args.workers, threads=args.threads)
    database = database_label(args)
    began = time.monotonic()
    print(
        f"== click redirect: portal GET /go/<code> (CLICK_WRITE_MODE=buffered, {database}) vs bare Flask 302"
    )
    print(machine_line())
    print(load_line())
    print(f"gunicorn, both apps: {settings.describe()}")
    print("  (the portal also gets -c gunicorn.conf.py for its hooks; the flags override it)")
    print(
        f"client: {wrk} -t{args.client_threads} -c{args.concurrency} --latency -s bench/wrk_redirect.lua, "
        f"{args.seconds:g} s per app (A B B A halves), warm-up {args.warmup:g} s each"
    )

    instance = prepare_instance(args.partners, args.links, keep=args.keep, pg_url=args.pg_url)
    codes = instance.codes
    print(
        f"data: {len(instance.refs)} approved partners x {args.links} links = {len(codes)} codes, "
        "one drawn at random per request"
    )
    print(scheduling_line(instance))

    servers = []
    try:
        portal = start_portal(instance, settings, CLICK_WRITE_MODE="buffered")
        servers.append(portal)
        bare = start_bare(instance, settings)
        servers.append(bare)

        def measure(server, seed, record):
            def run(seconds):
                return run_wrk(
                    REDIRECT_LUA,
                    server.port,
                    seconds=seconds,
                    connections=args.concurrency,
                    threads=args.client_threads,
                    lines=codes,
                    server=server,
                    record_ids=record,
                    seed=seed,
                )

            return run

        measure(bare, 1, False)(args.warmup)
        # The portal caches each code's look-up per worker: the warm-up fills the caches
        # (and its clicks count in the end check like the others).
        warm = measure(portal, 2, True)(args.warmup)
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
        check = instance.check("clicks", served.ids)
        flagged = instance.query("SELECT count(*) FROM clicks WHERE flagged IS NOT NULL")[0][0]
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
    print(f"ratio tracked/bare: {ratio:.2f}   ({verdict(ratio, TARGET)}, on {database})")
    print(
        f"p99: bare {bare_run.p99_ms:.2f} ms, portal {portal_run.p99_ms:.2f} ms "
        "(the worse of each app's two runs)"
    )
    warning = sanity_warning(bare_run)
    if warning:
        print(warning)
    print(load_line().replace("before the run", "after the run"))

    ok = _report(check, served, exit_code, flagged)
    print(f"(total run time {time.monotonic() - began:.0f} s)")
    instance.cleanup()
    return 0 if ok else 1


def _report(check: dict, served: WrkResult, exit_code: int, flagged: int) -> bool:
    ok = True
    answered = served.statuses[302]
    print(
        f"clicks: the portal answered {answered} 302s (warm-up included), wrk recorded {check['answered']} "
        f"click ids, the database holds {check['stored']} clicks; missing {check['missing']}"
        + (f" e.g. {check['missing_e.g.']}" if check["missing"] else "")
        + f"; stored but not seen by wrk (in flight when a run ended) {check['stored_unanswered']}"
    )
    if check["missing"] or check["answered"] != answered or not answered:
        print("FAIL: every 302 the portal answered must be a stored click")
        ok = False
    else:
        print("  every 302 is a stored click -> PASS")
    if served.requests != answered or served.socket_errors:
        others = {s: n for s, n in served.statuses.items() if s != 302}
        print(
            f"FAIL: {served.requests - answered} answers were not 302 {others}; "
            f"{served.socket_errors} socket errors"
        )
        for status, body in served.samples.items():
            print(f"  e.g. {status}: {body[:240]!r}")
        ok = False
    if check["rollup_differences"]:
        print(f"FAIL: rollups differ from a recount: {check['rollup_differences']}")
        ok = False
    else:
        print(f"  rollups ({check['rollup_rows']} rows) equal a recount from the raw rows -> PASS")
    print(
        f"  {flagged} of the clicks flagged by the click-flood rule (every request comes from one address); "
        f"gunicorn exited {exit_code} after SIGTERM"
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
