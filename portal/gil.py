"""How long a thread may keep the GIL while another thread of the process waits for it.

Python makes a thread that wants the GIL wait until the one holding it blocks or has held
it for the *switch interval* (5 ms by default). A gunicorn worker runs many request threads
and, for the conversion API, one sale writer (portal/salewriter.py) that gives the GIL up at
every database statement: a round trip to PostgreSQL, every step of a SQLite statement.
Under load it then waits for the GIL after almost each of them, for as long as a request
thread keeps computing — up to the whole interval — and a batch that holds SQLite's write
lock (or its partners' locks on PostgreSQL) holds it that much longer for everyone. The
sale writer is the path every sale takes in turn, so those waits set the API's throughput.

``GIL_SWITCH_INTERVAL_MS`` (0.5 ms by default) shortens the interval in every gunicorn
worker and the development server. Under ``bench/ingest.py``'s load (wrk, 16 connections,
two workers × 8 threads) it carried 20-25 % more sales a second than Python's 5 ms on both
databases, with a lower p50 and p99; the bench gives the bare app the same interval.
``0`` keeps Python's own.
"""

from __future__ import annotations

import sys


def apply_switch_interval(milliseconds: float) -> float:
    """Set this process's switch interval (``0``: leave Python's); returns the one in force, in ms."""
    if milliseconds > 0:
        sys.setswitchinterval(milliseconds / 1000)
    return sys.getswitchinterval() * 1000
