"""Answers that depend on the reader's language say so: ``Vary`` for caches, ``Content-Language``."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("accept", "language", "word"), [("zh-CN", "zh-CN", "登录"), ("en", "en", "Sign in")]
)
def test_a_page_names_its_language_and_varies_on_the_readers(client, program, accept, language, word):
    response = client.get("/login", headers={"Accept-Language": accept})
    assert word in response.get_data(as_text=True)
    assert response.headers["Content-Language"] == language
    assert {"Accept-Language", "Cookie"} <= set(response.vary)


def test_the_api_and_its_spec_vary_on_the_language_too(client, program):
    spec = client.get("/api/v1/openapi.json", headers={"Accept-Language": "zh-CN"})
    assert spec.headers["Content-Language"] == "zh-CN" and "Accept-Language" in spec.vary
    refused = client.get("/api/v1/conversions/x", headers={"Accept-Language": "zh-CN"})
    assert refused.status_code == 401
    assert refused.headers["Content-Language"] == "zh-CN" and "Accept-Language" in refused.vary


def test_a_vary_the_response_set_itself_is_kept(app):
    from flask import Response

    from portal.i18n import say_language

    with app.test_request_context("/"):
        response = say_language(Response("x", headers={"Vary": "Origin"}))
        assert set(response.vary) == {"Origin", "Accept-Language", "Cookie"}
        fresh = say_language(Response("x"))
        assert fresh.headers.getlist("Vary") == ["Accept-Language, Cookie"]
