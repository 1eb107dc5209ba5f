"""The SQL statements an action sends, for tests that hold a path to a number of statements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

_HARNESS = ("SAVEPOINT", "RELEASE", "ROLLBACK TO")


def statements_during(engine: sa.Engine, action: Callable[[], Any]) -> tuple[list[str], Any]:
    """(every statement ``action`` sent on ``engine``, whitespace folded, the test harness's
    savepoints left out; what ``action`` returned)."""
    seen: list[str] = []

    def listen(_conn, _cursor, statement, _parameters, _context, _executemany):
        if not statement.lstrip().upper().startswith(_HARNESS):
            seen.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        result = action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    return seen, result


def reads_of(statements: list[str], table: str) -> list[int]:
    """Positions of the SELECTs that read ``table``."""
    return [
        index
        for index, sql in enumerate(statements)
        if sql.startswith("SELECT") and f" FROM {table} " in f"{sql} "
    ]
