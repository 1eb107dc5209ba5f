"""Conversion ingest: the portal's ``POST /api/v1/conversions`` against a bare Flask JSON 201, same run.

Both apps run under the same gunicorn flags on 127.0.0.1 (the portal with
RATELIMIT_ENABLED=false); one client process loads each in turn (A B B A, after a
warm-up) with unique transaction ids attributed by ``ref`` to the generated partners.
The portal's warm-up first sends one sale for every partner (each one's first sale,
and a miss of the per-process look-up cache: measured as the cold figure), as the
redirect bench does with every code. Then the portal is stopped and every 201 it
answered must be a row in ``conversions``.

    python bench/ingest.py [--seconds 10] [--quick]
"""

from __future__ import annotations

import json
import random
import sys
import time

from _common import (
    GunicornSettings,
    LoadResult,
    abba,
    check_counts,
    each_once,
    load_line,
    machine_line,
    noise_warning,
    parse_args,
    prepare_instance,
    run_load,
    start_bare,
    start_canned,
    start_portal,
    unique_ids,
    verdict,
)

TARGET = 0.15
PATH = "/api/v1/conversions"


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    settings = GunicornSettings(workers=args.workers, threads=args.threads)
    began = time.monotonic()
    print("== conversion ingest: portal POST /api/v1/conversions (SQLite) vs bare Flask JSON 201")
    print(machine_line())
    print(load_line())
    print(f"gunicorn, both apps: {settings.describe()}")
    print("  (the portal also gets -c gunicorn.conf.py for its worker_exit hook; the flags override it)")
    print(
        f"client: 1 process, {args.concurrency} threads x 1 keep-alive http.client connection, "
        f"{args.seconds:g} s per app (A B B A halves), warm-up {args.warmup:g} s each"
    )

    instance = prepare_instance(args.partners, args.links, keep=args.keep)
    refs = instance.refs
    print(
        f"data: {len(refs)} approved partners; each request a new transaction id, a random amount, "
        "attributed by a random partner's ref; RATELIMIT_ENABLED=false"
    )
    headers = {
        "Authorization": f"Bearer {instance.api_key}",
        "Content-Type": "application/json",
        "User-Agent": "bench-ingest",
    }
    next_id = unique_ids(f"bench-{int(time.time())}")

    def sale(rng, ref):
        cents = rng.randint(500, 50_000)
        body = {
            "transaction_id": next_id(),
            "amount": f"{cents // 100}.{cents % 100:02d}",
            "currency": "USD",
            "ref": ref,
        }
        return "POST", PATH, json.dumps(body).encode(), headers

    def convert(rng):
        return sale(rng, rng.choice(refs))

    servers = []
    try:
        portal = start_portal(instance, settings, RATELIMIT_ENABLED="false")
        servers.append(portal)
        bare = start_bare(instance, settings)
        servers.append(bare)
        canned = start_canned(instance, status=201)
        servers.append(canned)

        def measure(server, seed):
            return lambda seconds: run_load(
                server.port, convert, concurrency=args.concurrency, seconds=seconds, seed=seed, server=server
            )

        first = random.Random(9)
        once = each_once(refs * args.workers, lambda ref: sale(first, ref))
        cold = run_load(portal.port, once, concurrency=args.concurrency, seconds=120, server=portal)
        warm_portal = measure(portal, 2)(args.warmup)
        measure(bare, 1)(args.warmup)
        ceiling = measure(canned, 3)(max(1.0, args.seconds / 4))
        bare_run, portal_run = abba(measure(bare, 4), measure(portal, 5), args.seconds)

        served: LoadResult = LoadResult().add(cold).add(warm_portal).add(portal_run)
        exit_code = portal.stop()
        servers.remove(portal)
        rows = instance.count("conversions")
        by_ref = instance.query(
            "SELECT count(*) FROM conversions WHERE attribution_method = 'ref' AND partner_id IS NOT NULL"
        )[0][0]
        lines = instance.count("commissions")
    except BaseException:
        instance.keep = True
        print(f"!! failed; the instance and the servers' logs are in {instance.path}", file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.stop()

    ratio = portal_run.rps / bare_run.rps if bare_run.rps else 0.0
    print()
    print(ceiling.line("ceiling") + "   <- canned 201s from a raw asyncio server: the client's limit")
    print(bare_run.line("bare"))
    print(portal_run.line("portal"))
    print(cold.line("cold") + "   <- the portal's warm-up: every partner's first sale, each a cache miss")
    print(bare_run.cpu_line("bare"))
    print(portal_run.cpu_line("portal"))
    print(cold.cpu_line("cold"))
    print(
        f"the bare app used {bare_run.rps / ceiling.rps:.0%} of the client's ceiling"
        if ceiling.rps
        else "no ceiling measured"
    )
    if bare_run.server_cpu and portal_run.server_cpu:
        cpu_ratio = (bare_run.server_cpu / bare_run.requests) / (portal_run.server_cpu / portal_run.requests)
        print(f"server CPU per request, bare/portal: {cpu_ratio:.2f}   (less sensitive to other load)")
    print(f"ratio conversions/bare: {ratio:.2f}   ({verdict(ratio, TARGET)}, on SQLite)")
    warning = noise_warning(bare_run, portal_run)
    if warning:
        print(warning)
    print(f"p99: bare {bare_run.percentile(99):.2f} ms, portal {portal_run.percentile(99):.2f} ms")

    ok = check_counts(instance, served, 201, rows, "conversions")
    print(f"  {by_ref} of the {rows} conversions attributed by ref, {lines} commission lines")
    if by_ref != rows:
        print("FAIL: every conversion should have been attributed to its partner by ref")
        ok = False
    print(f"  gunicorn exited {exit_code} after SIGTERM")
    print(f"(total run time {time.monotonic() - began:.0f} s)")
    instance.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
