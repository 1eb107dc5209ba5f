"""Input the portal refuses before any view sees it, so that no request can answer 500.

- ``<int:...>`` path parts larger than a database id do not match (404), instead of
  overflowing the database integer in the look-up.
- JSON nested deeper than Python's parser can follow is a malformed body (400).
- A NUL character in the path, the query string or a submitted form is refused (400):
  PostgreSQL cannot store or compare text containing one.
- A ``?page=`` beyond any list's last page answers 404 instead of overflowing OFFSET.
- Days typed into a period (``day_arg``, ``RangeForm``) must lie in ``FIRST_DAY``..``LAST_DAY``:
  date arithmetic near year 1 or 9999 overflows.
"""

from __future__ import annotations

from datetime import date
from typing import NoReturn

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask_babel import gettext as _
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import IntegerConverter

# Ids are PostgreSQL INTEGER columns.
MAX_ID = 2**31 - 1
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2099, 12, 31)
# Far beyond any list (25-50 rows a page), far below what OFFSET can hold.
MAX_PAGE = 10**9


def refuse(status: int, message: str) -> NoReturn:
    """Answer 400 or 404 with ``message`` on the error page (or in the API's JSON error)."""
    error = (NotFound if status == 404 else BadRequest)(message)
    error.says_why = True
    raise error


def day_allowed(day: date) -> bool:
    return FIRST_DAY <= day <= LAST_DAY


def day_range_message() -> str:
    return _(
        "Choose a day between %(first)s and %(last)s.", first=FIRST_DAY.isoformat(), last=LAST_DAY.isoformat()
    )


class IdConverter(IntegerConverter):
    """``<int:...>`` that never names a number no id column can hold."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):  # noqa: A002 - werkzeug's names
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


class GuardedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that a body nested too deeply is malformed (get_json answers 400)."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc


def _has_nul(values) -> bool:
    return any("\x00" in key or any("\x00" in value for value in items) for key, items in values.lists())


def refuse_unusable_input():
    if "\x00" in request.path or _has_nul(request.args):
        refuse(400, _("The address contains a NUL character, which the portal does not accept."))
    view = current_app.view_functions.get(request.endpoint or "")
    # Multipart bodies are left to their views: upload views raise the size limit first.
    if (
        request.method == "POST"
        and request.mimetype == "application/x-www-form-urlencoded"
        and not getattr(view, "accepts_uploads", False)
        and _has_nul(request.form)
    ):
        refuse(400, _("The form contains a NUL character, which the portal does not accept."))
    page = request.args.get("page", type=int)
    if page is not None and page > MAX_PAGE:
        refuse(404, _("There is no page %(page)s.", page=page))


def init_app(app: Flask) -> None:
    """Call before the blueprints are registered: their routes pick up the converter then."""
    app.url_map.converters["int"] = IdConverter
    app.json = GuardedJSONProvider(app)
    app.before_request(refuse_unusable_input)
