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

Two kinds of file, two rules for the header row. A file people read (the dashboards'
tables, a partner's earnings) has column titles in the reader's language and starts with a
UTF-8 byte order mark: without it Excel opens UTF-8 as the system's code page and 中文
titles or names turn to mojibake. A file a machine reads (the payout batch's payment file,
PayPal's bulk file) keeps the header (or no header) its importer expects, in every
language, and no mark.
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


# U+FEFF, which UTF-8 writes as EF BB BF: how spreadsheets know a CSV file is UTF-8.
BYTE_ORDER_MARK = "\ufeff"


def to_csv(headers: Iterable[Any] | None, rows: Iterable[Iterable[Any]], *, for_people: bool = False) -> str:
    """The file's text: ``headers`` (None for a file without a header row), then ``rows``.

    ``for_people``: a file opened in a spreadsheet, which starts with the byte order mark.
    """
    out = io.StringIO()
    if for_people:
        out.write(BYTE_ORDER_MARK)
    if headers is not None:
        write_rows(out, [headers])
    write_rows(out, rows)
    return out.getvalue()
