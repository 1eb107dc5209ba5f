"""No 500 from input: each hostile input of the security review answers 400, 404 or 422 with a message."""

from __future__ import annotations

import pytest

from portal.models import PartnerStatus, Role
from portal.services.api_keys import create_api_key
from tests.factories import PartnerFactory

HUGE = "99999999999999999999"


def page_text(response) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def api_headers(db) -> dict[str, str]:
    _key, plain = create_api_key("bad input", None)
    db.session.commit()
    return {"Authorization": f"Bearer {plain}"}


def test_json_nested_a_thousand_deep_is_a_bad_request(client, db, program, api_headers):
    body = "[" * 1000 + "]" * 1000
    for path in ("/api/v1/conversions", "/api/v1/signups"):
        response = client.post(path, data=body, content_type="application/json", headers=api_headers)
        assert response.status_code == 400, path
        assert response.get_json()["error"]["message"] == "The body is not valid JSON."
    nested_object = '{"a":' * 5000 + "1" + "}" * 5000
    response = client.post(
        "/api/v1/conversions", data=nested_object, content_type="application/json", headers=api_headers
    )
    assert response.status_code == 400


@pytest.mark.postgres
def test_a_nul_in_a_transaction_id_in_the_path_is_a_bad_request(client, db, program, api_headers):
    for path in ("/api/v1/conversions/t-1%00x", "/api/v1/conversions/%00"):
        response = client.get(path, headers=api_headers)
        assert response.status_code == 400, path
        assert "NUL" in response.get_json()["error"]["message"]
    refund = client.post("/api/v1/conversions/t%00/refund", json={}, headers=api_headers)
    assert refund.status_code == 400


@pytest.mark.postgres
@pytest.mark.parametrize("code", ["abc%00", "%00", "a%00b/c"])
def test_a_nul_in_a_click_code_is_a_bad_request(client, db, program, code):
    response = client.get(f"/go/{code}")
    assert response.status_code == 400
    assert "The address contains a NUL character" in page_text(response)


@pytest.mark.parametrize("path", ["/go/", "/go/abc%0a", "/go/%0d%0a"])
def test_the_click_redirect_without_a_usable_code_answers_404(client, db, program, login_as, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "Page not found" in page_text(response)
    # a signed-in visitor's session cookie is left as it is
    login_as(Role.PARTNER)
    response = client.get(path)
    assert response.status_code == 404
    assert "Set-Cookie" not in response.headers
    assert client.get("/partner/").status_code == 200


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("manager", "/admin/partners?page=" + HUGE),
        ("manager", "/admin/applications?page=" + HUGE),
        ("manager", "/admin/conversions?page=" + HUGE),
        ("manager", "/admin/announcements?page=" + HUGE),
        ("manager", "/admin/creatives?page=" + HUGE),
        ("manager", "/admin/payouts?page=" + HUGE),
        ("partner", "/partner/conversions?page=" + HUGE),
        ("partner", "/partner/creatives?page=" + HUGE),
    ],
)
def test_an_absurd_page_number_answers_404(client, db, program, login_as, role, path):
    login_as(role)
    response = client.get(path)
    assert response.status_code == 404
    assert f"There is no page {HUGE}." in page_text(response)
    login_as(role)
    assert client.get(path.replace(HUGE, "2")).status_code == 200  # an ordinary page past the end is fine


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("manager", "/admin/partners?q=ab%00cd"),
        ("manager", "/admin/conversions?q=%00"),
        ("partner", "/partner/conversions?status=%00"),
        ("partner", "/partner/creatives?q=x%00"),
    ],
)
def test_a_nul_in_search_text_is_a_bad_request(client, db, program, login_as, role, path):
    login_as(role)
    response = client.get(path)
    assert response.status_code == 400
    assert "NUL character" in page_text(response)


@pytest.mark.postgres
def test_a_nul_in_message_and_announcement_text_is_a_bad_request(client, db, program, login_as):
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    db.session.commit()
    login_as(Role.ADMIN)
    message = client.post(f"/admin/partners/{partner.id}/messages", data={"subject": "Hi\x00", "body": "x"})
    assert message.status_code == 400
    assert "The form contains a NUL character" in page_text(message)
    announcement = client.post(
        "/admin/announcements/new", data={"title": "News", "body": "Big\x00news", "audience_kind": "all"}
    )
    assert announcement.status_code == 400


def test_a_banner_id_beyond_any_id_is_not_found(client, db, program):
    assert client.get(f"/media/banners/{HUGE}").status_code == 404
    assert client.get(f"/media/banners/{2**31}").status_code == 404
    assert client.get(f"/partner/conversions/{HUGE}").status_code in (302, 404)  # anonymous: sign in first


def test_an_id_beyond_any_id_is_not_found_when_signed_in(client, db, program, login_as):
    login_as(Role.ADMIN)
    for path in (f"/admin/partners/{HUGE}", f"/admin/payouts/{HUGE}", f"/admin/inbox/{2**40}"):
        assert client.get(path).status_code == 404, path


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("role", "query"),
    [
        ("partner", "/partner/?range=custom&start=0001-01-01&end=9999-12-31"),
        ("partner", "/partner/?range=custom&start=9999-12-31&end=9999-12-31"),
        ("partner", "/partner/?range=custom&start=0001-01-01&end=0001-01-01"),
        ("manager", "/admin/?range=custom&start=0001-01-01&end=9999-12-31"),
        ("manager", "/admin/?range=custom&start=9999-12-31&end=9999-12-31"),
        ("partner", "/partner/creatives/stats?from=0001-01-01&to=9999-12-31"),
        ("partner", "/partner/creatives/stats?from=9999-12-31&to=9999-12-31"),
        ("manager", "/admin/creatives/stats?from=0001-01-01&to=0001-01-01"),
        ("manager", "/admin/stats/daily.csv?range=custom&start=0001-01-01&end=9999-12-31"),
        ("partner", "/partner/stats/daily.csv?range=custom&start=9999-12-31&end=9999-12-31"),
    ],
)
def test_extreme_dates_on_stats_pages_are_refused_not_crashed(client, db, program, login_as, role, query):
    login_as(role)
    response = client.get(query)
    assert response.status_code in (200, 400, 422), response.status_code
    if response.status_code == 200 and response.mimetype == "text/html":
        assert "between" in page_text(response) or "at most" in page_text(response)


@pytest.mark.parametrize("next_url", ["/partner/%0d%0aSet-Cookie:%20x=1", "%0d%0a/evil", "/ok%0a"])
def test_a_next_with_cr_lf_on_login_is_ignored(client, db, program, next_url):
    from tests.factories import PASSWORD, UserFactory

    UserFactory(email="ops@example.org", role=Role.MANAGER)
    db.session.commit()
    response = client.post(f"/login?next={next_url}", data={"email": "ops@example.org", "password": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    assert "Set-Cookie: x" not in str(response.headers)
