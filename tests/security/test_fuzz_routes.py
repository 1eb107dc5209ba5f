"""Fuzz every GET route: generated path values and query strings, as anonymous, partner and admin.

Routes come from ``app.url_map`` (a new route is fuzzed without a change here). First a
sweep: every route as every role, once with the review's hostile values in its path (an id
past any integer, a newline) and once with them in its query (days in year 1 and 9999,
control characters). Then a derandomized Hypothesis run draws routes, roles, path values
of each converter's kind and hostile ones, and query strings. Any 5xx fails. About 600
requests, well under a minute.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import AnyConverter, IntegerConverter, PathConverter

from portal.models import PartnerStatus, Role
from portal.services import inbox
from portal.services.links import create_link
from tests.factories import PartnerFactory, UserFactory

EXAMPLES = 150
ROLES = ("anonymous", "partner", "admin")
# Query parameters the portal's pages read, so generated values reach their parsers.
KNOWN_PARAMS = (
    "page", "per_page", "q", "status", "tag", "kind", "range", "start", "end", "from", "to",
    "next", "creative", "sub", "sort", "unattributed", "language", "size", "download",
)  # fmt: skip
_PLACEHOLDER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

HUGE = "99999999999999999999"
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\r\n",
            "abc\n",
            HUGE,
            "-1",
            "0",
            "1e308",
            "NaN",
            "0001-01-01",
            "9999-12-31",
            "2026-02-30",
            "../../etc/passwd",
            "%00",
            "%",
            "\\",
            "//evil.example",
            "javascript:alert(1)",
            "<script>alert(1)</script>",
            "' OR 1=1 --",
            "x" * 5000,
            "😀",
        ]
    ),
)
ids = st.one_of(st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=10**25))
queries = st.lists(
    st.tuples(st.one_of(st.sampled_from(KNOWN_PARAMS), st.text(min_size=1, max_size=10)), hostile_text),
    max_size=4,
)

# The sweep's hostile query. No ?page= here: its guard answers 404 before any view runs,
# which would hide what the other values reach (absurd pages: test_bad_input.py).
SWEEP_QUERY = urlencode(
    {
        "range": "custom",
        "start": "0001-01-01",
        "end": "9999-12-31",
        "from": "0001-01-01",
        "to": "9999-12-31",
        "q": "a\nb",
        "status": "\r\n",
        "next": "/\r\nx",
    }
)


def value_strategy(converter) -> st.SearchStrategy[str]:
    if isinstance(converter, AnyConverter):
        return st.one_of(st.sampled_from(sorted(converter.items)), hostile_text)
    if isinstance(converter, IntegerConverter):
        return st.one_of(ids.map(str), hostile_text)
    if isinstance(converter, PathConverter):
        return st.one_of(hostile_text, st.lists(hostile_text, min_size=1, max_size=3).map("/".join))
    return hostile_text


def sweep_values(rule, hostile: bool) -> dict[str, str]:
    """One value per placeholder: the first choice of an ``any(...)``, else hostile or ordinary."""
    values = {}
    for name, converter in rule._converters.items():
        if isinstance(converter, AnyConverter):
            values[name] = sorted(converter.items)[0]
        elif not hostile:
            values[name] = "1"
        elif isinstance(converter, IntegerConverter):
            values[name] = HUGE
        else:
            values[name] = "a\nb"
    return values


def build_path(rule, values: dict[str, str]) -> str:
    safe = {name: "/" if isinstance(conv, PathConverter) else "" for name, conv in rule._converters.items()}
    return _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)] or "x", safe=safe[m.group(1)]), rule.rule)


def test_no_get_route_answers_5xx(app, client, db, program):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    admin = UserFactory(role=Role.ADMIN)
    create_link(partner, program, label="Fuzzed", channel="seo")
    inbox.start_thread(partner, admin, "Hello", "A thread to find")
    db.session.commit()
    clients = {"anonymous": client}
    for role, user in (("partner", partner.user), ("admin", admin)):
        clients[role] = app.test_client()
        with clients[role].session_transaction() as session:
            session["_user_id"] = user.get_id()
            session["_fresh"] = True
    rules = sorted(
        (rule for rule in app.url_map.iter_rules() if "GET" in rule.methods and rule.endpoint != "static"),
        key=lambda rule: rule.rule,
    )
    assert len(rules) > 50

    def fetch(role: str, url: str) -> None:
        response = clients[role].get(url)
        assert response.status_code < 500, f"{role} GET {url} answered {response.status_code}"

    for rule in rules:
        for role in ROLES:
            fetch(role, build_path(rule, sweep_values(rule, hostile=True)))
            fetch(role, f"{build_path(rule, sweep_values(rule, hostile=False))}?{SWEEP_QUERY}")

    seen: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def request_one(data):
        rule = data.draw(st.sampled_from(rules), label="rule")
        role = data.draw(st.sampled_from(ROLES), label="role")
        values = {
            name: data.draw(value_strategy(conv), label=name) for name, conv in rule._converters.items()
        }
        url = build_path(rule, values)
        query = data.draw(queries, label="query")
        if query:
            url += "?" + urlencode(query)
        seen.add(rule.endpoint)
        fetch(role, url)

    request_one()
    # the random part spreads over the routes (the sweep above has already visited each)
    assert len(seen) >= len(rules) // 3, len(seen)
