"""Click redirect throughput: the portal's ``GET /go/<code>`` against a bare Flask 302, same run.

Both apps run under the same gunicorn flags on 127.0.0.1; one client process loads
each in turn (A B B A, after a warm-up) with random codes drawn from the generated
links. Then the portal is stopped gracefully and every 302 it served must be a row in
``clicks`` (buffered writes flushed by gunicorn's worker_exit hook).

    python bench/redirect.py [--seconds 10] [--quick]
"""

from __future__ import annotations

import sys
import time

from _common import (
    BROWSER_UA,
    GunicornSettings,
    LoadResult,
    abba,
    check_counts,
    each_once,
    load_line,
    machine_line,
    noise_warning,
    parse_args,
    portal_constant,
    prepare_instance,
    run_load,
    start_bare,
    start_canned,
    start_portal,
    verdict,
)

TARGET = 0.70
CACHE_SECONDS = portal_constant("config", "DEFAULT_TRACKING_CACHE_SECONDS", 300.0)
CHECK_SECONDS = portal_constant("config", "DEFAULT_TRACKING_CACHE_CHECK_SECONDS", 2.0)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    settings = GunicornSettings(workers=args.workers, threads=args.threads)
    began = time.monotonic()
    print("== click redirect: portal GET /go/<code> (CLICK_WRITE_MODE=buffered, SQLite) vs bare Flask 302")
    print(machine_line())
    print(load_line())
    print(f"gunicorn, both apps: {settings.describe()}")
    print("  (the portal also gets -c gunicorn.conf.py for its worker_exit hook; the flags override it)")
    print(
        f"client: 1 process, {args.concurrency} threads x 1 keep-alive http.client connection, "
        f"{args.seconds:g} s per app (A B B A halves), warm-up {args.warmup:g} s each "
        "(the portal's after every code once)"
    )

    instance = prepare_instance(args.partners, args.links, keep=args.keep)
    codes = instance.codes
    print(
        f"data: {len(instance.refs)} approved partners x {args.links} links = {len(codes)} codes, "
        "one drawn at random per request"
    )
    headers = {"User-Agent": BROWSER_UA, "Accept": "text/html"}

    def follow(rng):
        return "GET", "/go/" + rng.choice(codes), None, headers

    servers = []
    try:
        portal = start_portal(instance, settings, CLICK_WRITE_MODE="buffered")
        servers.append(portal)
        bare = start_bare(instance, settings)
        servers.append(bare)
        canned = start_canned(instance, status=302)
        servers.append(canned)

        def measure(server, seed):
            return lambda seconds: run_load(
                server.port, follow, concurrency=args.concurrency, seconds=seconds, seed=seed, server=server
            )

        measure(bare, 1)(args.warmup)
        ceiling = measure(canned, 3)(max(1.0, args.seconds / 4))
        # The portal caches each code's look-up for up to CACHE_SECONDS in each worker (and
        # drops them all when a change is committed anywhere; nothing changes here). Its
        # warm-up asks for every code once (each a cache miss: measured as the cold figure),
        # then random codes; the A B B A run follows at once and measures the redirect with
        # warm caches (each worker still reads the change counter every CHECK_SECONDS).
        once = each_once(codes * args.workers, lambda code: ("GET", "/go/" + code, None, headers))
        cold = run_load(portal.port, once, concurrency=args.concurrency, seconds=120, server=portal)
        warm = measure(portal, 2)(args.warmup)
        bare_run, portal_run = abba(measure(bare, 4), measure(portal, 5), args.seconds)

        served: LoadResult = LoadResult().add(cold).add(warm).add(portal_run)
        exit_code = portal.stop()
        servers.remove(portal)
        rows = instance.count("clicks")
        flagged = instance.query("SELECT count(*) FROM clicks WHERE flagged IS NOT NULL")[0][0]
    except BaseException:
        instance.keep = True
        print(f"!! failed; the instance and the servers' logs are in {instance.path}", file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.stop()

    ratio = portal_run.rps / bare_run.rps if bare_run.rps else 0.0
    print()
    print(ceiling.line("ceiling") + "   <- canned 302s from a raw asyncio server: the client's limit")
    print(bare_run.line("bare"))
    print(portal_run.line("portal"))
    print(cold.line("cold") + "   <- the portal's warm-up: every code once, each a look-up cache miss")
    print(bare_run.cpu_line("bare"))
    print(portal_run.cpu_line("portal"))
    print(cold.cpu_line("cold"))
    print(
        f"the bare app used {bare_run.rps / ceiling.rps:.0%} of the client's ceiling"
        if ceiling.rps
        else "no ceiling measured"
    )
    if bare_run.server_cpu and portal_run.server_cpu and cold.server_cpu:
        warm_cpu = portal_run.server_cpu / portal_run.requests
        cpu_ratio = (bare_run.server_cpu / bare_run.requests) / warm_cpu
        print(f"server CPU per request, bare/portal: {cpu_ratio:.2f}   (less sensitive to other load)")
        refreshes = len(codes) * args.workers / CACHE_SECONDS
        extra = max(0.0, cold.server_cpu / cold.requests - warm_cpu)
        print(
            f"not in the window: each worker re-reads every code every {CACHE_SECONDS:g} s, here "
            f"{refreshes:.1f} look-ups/s; at the cold figure's {extra * 1e6:.0f} us extra each (an upper "
            f"bound: it includes a new worker's first requests) that is at most {refreshes * extra:.1%} "
            f"of a core (the change counter, read every {CHECK_SECONDS:g} s, is in the window)"
        )
    print(f"ratio tracked/bare: {ratio:.2f}   ({verdict(ratio, TARGET)}, on SQLite)")
    warning = noise_warning(bare_run, portal_run)
    if warning:
        print(warning)
    print(f"p99: bare {bare_run.percentile(99):.2f} ms, portal {portal_run.percentile(99):.2f} ms")

    ok = check_counts(instance, served, 302, rows, "clicks")
    print(
        f"  {flagged} of the clicks flagged by the click-flood rule (every request comes from one address); "
        f"gunicorn exited {exit_code} after SIGTERM"
    )
    print(f"(total run time {time.monotonic() - began:.0f} s)")
    instance.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
