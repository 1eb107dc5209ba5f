"""Writers released together on their own threads, for race tests against committed data."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask

from portal.database import begin_write
from portal.extensions import db as _db


def writers_at_once(
    app: Flask, jobs: Sequence[Callable[..., Any]], load: Callable[[Any], Any] | None = None
) -> tuple[list[Any], list[Exception]]:
    """Run each job on its own thread, app context and connection, released together by a
    barrier; each takes its turn as a writer (``begin_write``, as the views and jobs start a
    writing transaction), then commits, or rolls back and keeps what it raised.

    With ``load``, ``load(job)`` runs first on the job's thread, before the barrier and outside
    a writing transaction (as a view loads what it changes), and the job is called with what it
    returned; without, the job is called with nothing. Returns (results, errors), each in the
    order the threads finished.
    """
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = []
    errors: list[Exception] = []

    def worker(job):
        with app.app_context():
            try:
                args = () if load is None else (load(job),)
                barrier.wait(timeout=10)
                begin_write(_db.session())
                results.append(job(*args))
                _db.session.commit()
            except Exception as exc:  # noqa: BLE001 - sorted by the test
                _db.session.rollback()
                errors.append(exc)
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors
