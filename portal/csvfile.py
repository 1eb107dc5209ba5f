"""The one CSV writer of every export: no cell a spreadsheet would run as a formula.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or the
full-width ``＝ ＋ － ＠``, which some spreadsheets read the same) is a formula to Excel,
LibreOffice or Google Sheets: ``=HYPERLINK("http://x")`` in a partner's name would run on
the operator's machine. As OWASP recommends ("CSV Injection"), such a cell gets a single
quote in front, which spreadsheets show as text and do not run.

One exception, on purpose: a cell that is a plain decimal number — ``-12.50``, ``-3``,
an ``int`` or ``Decimal`` the portal itself wrote — is left as it is. A spreadsheet reads
it as the number it is (nothing in it can call a function), and the money columns of the
exports (a clawback of ``-12.50``) stay numbers an accountant can add up. Only that exact
shape is exempt: ``-1+1``, ``-2,5``, ``-1e3`` or ``- 1`` get the quote like any other text.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def is_number(text: str) -> bool:
    """A plain decimal number as the portal writes money and counts (``-12.50``)."""
    return bool(_NUMBER.match(text))


def neutralise(value: Any) -> Any:
    """The cell as it is safe to write: text that a spreadsheet would run gets a ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, Decimal)):
        return value
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not is_number(text):
        return "'" + text
    return text


def write_rows(out, rows: Iterable[Iterable[Any]]) -> None:
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([neutralise(cell) for cell in row])


def to_csv(headers: Iterable[Any] | None, rows: Iterable[Iterable[Any]]) -> str:
    """The file's text: ``headers`` (None for a file without a header row), then ``rows``."""
    out = io.StringIO()
    if headers is not None:
        write_rows(out, [headers])
    write_rows(out, rows)
    return out.getvalue()
