"""Fuzz every GET route as each role, and the tracking API with generated bodies.

Routes come from ``app.url_map`` (a new route is fuzzed without a change here). First a
sweep: every GET route as every role (anonymous, applicant, partner, manager, admin), once
with the review's hostile values in its path (an id past any integer, a newline) and once
with them in its query (days in year 1 and 9999, control characters). Then a derandomized
Hypothesis run draws routes, roles, path values of each converter's kind and hostile ones,
and query strings. Any 5xx fails.

The API (``/api/v1/…``, found in the URL map too) gets generated JSON bodies — objects
with its own field names and stray ones holding any JSON value, other JSON documents,
bytes that are not JSON — generated paths and query strings, all with a valid key: never a
5xx, and every error is JSON ``{"error": {"code": str, "message": str, "fields": {...}}}``.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import AnyConverter, IntegerConverter, PathConverter

from portal.models import PartnerStatus, Role
from portal.services import inbox
from portal.services.api_keys import create_api_key
from portal.services.links import create_link
from tests.factories import PartnerFactory, UserFactory

EXAMPLES = 150
API_EXAMPLES = 250
ROLES = ("anonymous", "applicant", "partner", "manager", "admin")
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
    applicant = PartnerFactory(status=PartnerStatus.APPLIED)
    manager = UserFactory(role=Role.MANAGER)
    admin = UserFactory(role=Role.ADMIN)
    create_link(partner, program, label="Fuzzed", channel="seo")
    inbox.start_thread(partner, admin, "Hello", "A thread to find")
    db.session.commit()
    clients = {"anonymous": client}
    people = {"applicant": applicant.user, "partner": partner.user, "manager": manager, "admin": admin}
    for role, user in people.items():
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


# --- the tracking API: generated bodies, paths and query strings, with a valid key ----------

API_FIELDS = (
    "transaction_id", "amount", "currency", "customer_id", "click_id", "ref", "product_id",
    "occurred_at", "email", "reason", "refund_id",
)  # fmt: skip
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
    st.sampled_from(["10.00", "0.01", "-5.00", "1e3", "٣.٠٠", "USD", "usd", "2026-11-24T10:00:00Z",
                     "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00Z", "demo", "k" + "A" * 31]),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
api_objects = st.dictionaries(
    st.one_of(st.sampled_from(API_FIELDS), st.text(max_size=12)), json_values, max_size=8
)
api_bodies = st.one_of(
    api_objects.map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=60),
    st.sampled_from([b"", b"{", b"[" * 2000 + b"]" * 2000, b'{"amount": NaN}', b"\xff\xfe{}", b"null"]),
)


def assert_api_answer(response, what: str) -> None:
    assert response.status_code < 500, f"{what} answered {response.status_code}: {response.data[:300]!r}"
    if response.status_code >= 400:
        assert response.is_json, f"{what} answered {response.status_code} without JSON"
        error = response.get_json()["error"]
        assert isinstance(error["code"], str) and error["code"], what
        assert isinstance(error["message"], str), what
        assert isinstance(error["fields"], dict), what
        assert all(isinstance(v, list) for v in error["fields"].values()), what


@pytest.mark.postgres
def test_the_api_answers_generated_bodies_paths_and_queries_without_a_5xx(
    app, client, db, program, database_backend
):
    PartnerFactory(status=PartnerStatus.APPROVED, ref_code="fuzzref")
    _key, plain = create_api_key("fuzz", None)
    db.session.commit()
    auth = {"Authorization": f"Bearer {plain}"}
    # A sale to look up and refund, so that generated refunds reach more than "unknown sale".
    sold = client.post(
        "/api/v1/conversions",
        json={
            "transaction_id": "fuzz-sale",
            "amount": "100.00",
            "currency": program.currency,
            "ref": "fuzzref",
        },
        headers=auth,
    )
    assert sold.status_code == 201, sold.data
    api_rules = sorted(
        (r for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1/")), key=lambda r: r.rule
    )
    posts = [r for r in api_rules if "POST" in r.methods]
    gets = [r for r in api_rules if "GET" in r.methods]
    # The API named in issue #13: sales, signups, refunds, the lookup and the spec.
    assert {r.rule for r in posts} >= {
        "/api/v1/conversions", "/api/v1/signups", "/api/v1/conversions/<path:transaction_id>/refund"
    }  # fmt: skip
    assert {r.rule for r in gets} >= {"/api/v1/conversions/<path:transaction_id>", "/api/v1/openapi.json"}
    transaction_ids = st.one_of(st.just("fuzz-sale"), value_strategy(PathConverter(app.url_map)))
    seen: set[tuple[str, str]] = set()

    @settings(
        max_examples=API_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def request_one(data):
        method = data.draw(st.sampled_from(["POST", "GET"]), label="method")
        rule = data.draw(st.sampled_from(posts if method == "POST" else gets), label="rule")
        values = {name: data.draw(transaction_ids, label=name) for name in rule._converters}
        url = build_path(rule, values)
        query = data.draw(queries, label="query")
        if query:
            url += "?" + urlencode(query)
        seen.add((method, rule.rule))
        if method == "GET":
            response = client.get(url, headers=auth)
        else:
            body = data.draw(api_bodies, label="body")
            content_type = data.draw(
                st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1"]),
                label="content_type",
            )
            response = client.post(url, data=body, headers={**auth, "Content-Type": content_type})
        assert_api_answer(response, f"{method} {url}")

    request_one()
    assert seen == {(m, r.rule) for m, rules in (("POST", posts), ("GET", gets)) for r in rules}, seen
    # No generated request turned the sale into something the ledger would refuse.
    from portal.services.ledger import check_ledger

    assert check_ledger() == []
