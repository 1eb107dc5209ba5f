"""Commit → webhook received: how long a sale takes to reach the brand's receiver.

A seeded instance (SQLite, or ``--pg-url``) behind gunicorn as production runs it (the outbox
dispatcher on its background thread after each commit), one endpoint added with the CLI
(``flask portal add-webhook``) for ``conversion.created``, and a receiver on 127.0.0.1 that
verifies every request with the ``standardwebhooks`` package. N sales (default 200) are posted
to the conversion API one after another (``--rate`` a second, default 10; 0: back to back, which
measures a backlog); for each, the time from the API's answer (the sale had committed by then)
to the webhook's arrival, and from the request's start (an upper bound: the commit happens in
between). Prints p50 / p95 / max and checks each sale arrived once.

    .venv/bin/python bench/webhooks.py [--sales 200] [--pg-url URL] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import (
    FORBIDDEN_PG_DATABASES,
    HOST,
    PYTHON,
    ROOT,
    GunicornSettings,
    database_label,
    machine_line,
    prepare_instance,
    start_portal,
)
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ARRIVAL_TIMEOUT = 60.0


class Receiver:
    """Records when each verified ``conversion.created`` arrives, by transaction id."""

    def __init__(self):
        self.secret = ""
        self.arrived: dict[str, float] = {}
        self.seen: Counter[str] = Counter()
        self.rejected = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                at = time.monotonic()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                except WebhookVerificationError:  # a bad signature or timestamp: counted, answered 400
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(400)
                else:
                    transaction_id = payload["data"]["transaction_id"]
                    with receiver.lock:
                        receiver.seen[transaction_id] += 1
                        receiver.arrived.setdefault(transaction_id, at)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def add_endpoint(instance, url: str) -> str:
    """``flask portal add-webhook``: the secret is the last line it prints."""
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "flask",
            "--app",
            "wsgi",
            "portal",
            "add-webhook",
            url,
            "--events",
            "conversion.created",
        ],
        cwd=ROOT,
        env=instance.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=200, help="sales posted (default 200)")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="sales per second (default 10; 0: back to back, a backlog)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (default 8)")
    parser.add_argument(
        "--pg-url", default=None, help="a throw-away PostgreSQL database (its schema is dropped)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance folder")
    args = parser.parse_args()
    if not 1 <= args.sales <= 100_000:
        parser.error("--sales must be in [1, 100000]")
    if args.pg_url:
        from sqlalchemy.engine import make_url

        if make_url(args.pg_url).database in FORBIDDEN_PG_DATABASES:
            parser.error("refusing to drop that database's schema; use a throw-away one")

    print(machine_line())
    instance = prepare_instance(20, 1, keep=args.keep, pg_url=args.pg_url)
    # Production refuses loopback receivers; this one is ours, on 127.0.0.1.
    instance.env["WEBHOOK_ALLOW_NETWORKS"] = "loopback"
    receiver = Receiver()
    server = None
    try:
        receiver.secret = add_endpoint(instance, receiver.url)
        settings = GunicornSettings(workers=args.workers, threads=args.threads)
        server = start_portal(instance, settings, OUTBOX_DISPATCH_MODE="background")
        pace = f"{args.rate:g} a second" if args.rate else "back to back"
        print(
            f"{database_label(args)}, gunicorn {settings.describe()}, "
            f"{args.sales} sales one after another, {pace}"
        )
        sent: dict[str, tuple[float, float]] = {}
        connection = http.client.HTTPConnection(HOST, server.port, timeout=30)
        headers = {"Authorization": f"Bearer {instance.api_key}", "Content-Type": "application/json"}
        began = time.monotonic()
        for i in range(args.sales):
            if args.rate:
                time.sleep(max(0.0, began + i / args.rate - time.monotonic()))
            transaction_id = f"wh-{i:06d}"
            body = {
                "transaction_id": transaction_id,
                "amount": "80.00",
                "currency": "USD",
                "ref": instance.refs[i % len(instance.refs)],
            }
            started = time.monotonic()
            connection.request("POST", "/api/v1/conversions", body=json.dumps(body), headers=headers)
            response = connection.getresponse()
            response.read()
            answered = time.monotonic()
            if response.status != 201:
                raise RuntimeError(f"sale {transaction_id}: HTTP {response.status}")
            sent[transaction_id] = (started, answered)
        connection.close()
        elapsed = time.monotonic() - began
        print(f"posted in {elapsed:.1f} s ({args.sales / elapsed:.1f} sales/s)")
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while time.monotonic() < deadline:
            with receiver.lock:
                if len(receiver.arrived) >= len(sent):
                    break
            time.sleep(0.05)
        with receiver.lock:
            arrived, seen, rejected = dict(receiver.arrived), Counter(receiver.seen), receiver.rejected
        missing = [t for t in sent if t not in arrived]
        twice = [t for t, n in seen.items() if n > 1]
        after_answer = [(arrived[t] - sent[t][1]) * 1000 for t in sent if t in arrived]
        after_start = [(arrived[t] - sent[t][0]) * 1000 for t in sent if t in arrived]
        print(f"received {len(arrived)}/{len(sent)} verified, {len(twice)} twice, {rejected} bad signatures")
        if after_answer:
            for label, values in (
                ("after the API's answer", after_answer),
                ("after the request began", after_start),
            ):
                print(
                    f"  commit → webhook received, {label}: p50 {statistics.median(values):.1f} ms, "
                    f"p95 {percentile(values, 95):.1f} ms, max {max(values):.1f} ms"
                )
        if missing or twice or rejected:
            print(f"FAILED: missing {missing[:5]}, twice {twice[:5]}, rejected {rejected}")
            sys.exit(1)
    finally:
        if server is not None:
            server.stop()
        receiver.close()
        instance.cleanup()


if __name__ == "__main__":
    main()
