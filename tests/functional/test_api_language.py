"""The tracking API speaks the client's language (Accept-Language) in every ``message``, in
the field errors beside it and in the OpenAPI texts; codes, field names and the spec's
machine parts stay the same in every language."""

from __future__ import annotations

import re

import pytest

from config import TestingConfig
from portal import create_app
from portal.services.api_keys import create_api_key

ZH = {"Accept-Language": "zh-CN"}
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Latin words a Chinese text may carry: names of formats and standards, codes, field names.
_ALLOWED = {
    "API",
    "JSON",
    "ASCII",
    "ISO",
    "ID",
    "Cookie",
    "Content",
    "Type",
    "application",
    "json",
    "Authorization",
    "Bearer",
    "key",
    "USD",
    "JPY",
    "KWD",
    "UTC",
    "held",
    "null",
    "refund_id",
    "confirm_after",
    "rejection_reason",
    "out_of_window",
    "occurred_at",
    "fields",
    "conflict",
    "DELETE",
    "T",
    "Z",
}


def chinese(text: str) -> bool:
    """Written in Chinese: has Chinese characters and no English word but the allowed ones."""
    words = set(re.findall(r"[A-Za-z_]+", text))
    return bool(_CJK.search(text)) and words <= _ALLOWED


@pytest.fixture
def headers(db, program):
    _key, plain = create_api_key("i18n", None)
    db.session.commit()
    return {"Authorization": f"Bearer {plain}", **ZH}


def test_a_422_answers_in_chinese_down_to_each_field(client, headers):
    body = {"transaction_id": "has space", "amount": 12.5, "currency": "usd", "occurred_at": "soon", "x": 1}
    response = client.post("/api/v1/conversions", json=body, headers=headers)
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "validation_failed"
    assert error["message"] == "部分字段缺失或格式不正确。"
    # The field names are the API's; what is wrong with each is said in Chinese.
    assert set(error["fields"]) == {"transaction_id", "amount", "currency", "occurred_at", "x"}
    for field, messages in error["fields"].items():
        assert all(chinese(m) for m in messages), (field, messages)
    assert error["fields"]["x"] == ["未知字段"]
    # The same request in English: the same codes and fields, English words.
    english = client.post("/api/v1/conversions", json=body, headers={**headers, "Accept-Language": "en"})
    assert english.json["error"]["code"] == "validation_failed"
    assert set(english.json["error"]["fields"]) == set(error["fields"])
    assert english.json["error"]["fields"]["x"] == ["unknown field"]


JSON_TYPE = "application/json"


@pytest.mark.parametrize(
    ("send", "status", "code", "message"),
    [
        (lambda c, h: c.post("/api/v1/signups", data="{", content_type=JSON_TYPE, headers=h),
         400, "bad_request", "请求体不是有效的 JSON。"),
        (lambda c, h: c.post("/api/v1/signups", data="x", content_type="text/plain", headers=h),
         400, "bad_request", "请以“Content-Type: application/json”发送一个 JSON 对象。"),
        (lambda c, h: c.post("/api/v1/signups", json=[1], headers=h),
         400, "bad_request", "请求体必须是 JSON 对象。"),
        (lambda c, h: c.get("/api/v1/nothing-here", headers=h),
         404, "not_found", "此地址下没有内容。"),
        (lambda c, h: c.delete("/api/v1/signups", headers=h),
         405, "method_not_allowed", "此地址不接受 DELETE 方法。"),
        (lambda c, h: c.get("/api/v1/conversions/x", headers=ZH),
         401, "unauthorized", "请以“Authorization: Bearer <key>”的形式发送有效的 API 密钥。"),
        (lambda c, h: c.post("/api/v1/conversions", data="x" * 70_000, content_type=JSON_TYPE, headers=h),
         413, "too_large", None),
    ],
)  # fmt: skip
def test_every_error_message_is_in_the_clients_language(client, headers, send, status, code, message):
    response = send(client, headers)
    assert response.status_code == status
    error = response.json["error"]
    assert error["code"] == code
    assert chinese(error["message"]), error["message"]
    if message is not None:
        assert error["message"] == message


def test_a_rate_limited_client_reads_why_in_chinese(database_url, db):
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        RATELIMIT_ENABLED=True,
        API_RATE_LIMIT="1 per minute",
    )
    client = app.test_client()
    headers = {"Authorization": "Bearer ppk_abcd_nope", **ZH}
    responses = [client.get("/api/v1/conversions/x", headers=headers) for _ in range(2)]
    assert [r.status_code for r in responses] == [401, 429]
    assert responses[1].json["error"] == {
        "code": "rate_limited",
        "message": "短时间内请求过多。请稍等一分钟后重试。",
        "fields": {},
    }


def _texts(node, path=()):
    """(path, text) of every title, summary and description in the OpenAPI document."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name in ("title", "summary", "description") and isinstance(value, str):
                yield (*path, name), value
            else:
                yield from _texts(value, (*path, name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _texts(value, (*path, index))


def _without_texts(node):
    if isinstance(node, dict):
        return {
            k: _without_texts(v)
            for k, v in node.items()
            if not (k in ("title", "summary", "description") and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_without_texts(v) for v in node]
    return node


def _webhook_reference(path: tuple) -> bool:
    """The outgoing webhooks' reference (``webhooks`` and their ``Event_*`` payload schemas)
    stays English in every language: it is read by the brand's developers beside the
    Standard Webhooks specification, and its event names and payload keys are English."""
    return path[0] == "webhooks" or (path[:2] == ("components", "schemas") and path[2].startswith("Event"))


def test_the_openapi_texts_follow_the_readers_language(client, db):
    chinese_doc = client.get("/api/v1/openapi.json", headers=ZH).json
    english_doc = client.get("/api/v1/openapi.json", headers={"Accept-Language": "en"}).json
    zh_texts, en_texts = dict(_texts(chinese_doc)), dict(_texts(english_doc))
    assert zh_texts.keys() == en_texts.keys() and len(zh_texts) > 30
    untranslated = {
        path: text for path, text in zh_texts.items() if not chinese(text) and not _webhook_reference(path)
    }
    assert not untranslated
    assert chinese_doc["paths"]["/conversions"]["post"]["summary"] == "上报一笔订单（交易回传）。"
    # Paths, operation ids, schemas, enums and examples: one document for machines.
    assert _without_texts(chinese_doc) == _without_texts(english_doc)
