"""The process heap after start-up: out of the garbage collector's way.

CPython's cyclic collector runs a full (generation-2) collection every so often, and a full
collection walks every container object the process holds: the modules, SQLAlchemy's
mappers and compiled statements, Jinja's templates, the message catalogues — some 200,000
objects once the app is loaded, which never become garbage. Which request pays for it is
an accident of allocation order; the one that allocates most (the operator dashboard: a
row, a figure and a trend for every partner) met it most often, and on this 2-core machine
it cost ~100 ms of CPU each time: the dashboard's p95 was three times its median
(issue #20, bench/dashboard.py).

``freeze_startup_heap`` moves everything alive after start-up into the permanent
generation (``gc.freeze``), which no collection visits; full collections then cost what the
requests allocate (a few ms) instead of what the process has loaded. Reference counting
frees everything as before; only cycles among the frozen objects are no longer collected,
and there are none worth collecting in what start-up built. Every gunicorn worker calls it
once the app is loaded (gunicorn.conf.py), and so does the development server.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what start-up left as garbage, then freeze the rest; returns the frozen count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
