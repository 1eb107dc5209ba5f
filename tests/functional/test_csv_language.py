"""CSV files: titles in the reader's language for the tables people read, the importer's
own header for the payment files machines read."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import PayoutBatch, Role
from portal.services import payouts
from portal.services.payouts import PayoutDetails, save_payout_account
from tests.factories import PartnerFactory, earn

ZH = "zh_Hans_CN"
BOM = b"\xef\xbb\xbf"
NOW = datetime(2026, 10, 20, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def header_of(body: bytes) -> list[str]:
    assert body.startswith(BOM), "a file for people starts with the UTF-8 byte order mark"
    return next(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def rows_of(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.mark.parametrize(
    ("locale", "title"),
    [
        (ZH, ["明细编号", "获得时间（UTC）", "订单", "类型", "金额", "币种", "状态", "确认日期", "原因",
              "结算日", "付款日期", "付款参考号"]),
        ("en", ["Line", "Earned at (UTC)", "Order", "Kind", "Amount", "Currency", "Status", "Confirms on",
                "Reason", "Payout date", "Paid on", "Reference"]),
    ],
)  # fmt: skip
def test_the_earnings_file_has_titles_in_the_partners_language(client, db, program, login_as, locale, title):
    partner = login_as(Role.PARTNER, user__locale=locale).partner
    earn(partner, 1200, at=datetime(2026, 9, 1, tzinfo=UTC))
    db.session.commit()
    # The account's language, whatever the browser asks for.
    body = client.get("/partner/earnings.csv", headers={"Accept-Language": "fr"}).data
    assert header_of(body) == title
    [_, line] = rows_of(body)
    # The cells keep the codes pages and API share: a filter on them works in any language.
    assert (line[3], line[4], line[5], line[6]) == ("base", "12.00", "USD", "confirmed")


def test_the_dashboard_tables_follow_the_readers_language(client, db, program, login_as):
    login_as(Role.PARTNER, user__locale=ZH)
    daily = client.get("/partner/stats/daily.csv?range=7d")
    assert daily.content_type == "text/csv; charset=utf-8"
    assert header_of(daily.data)[:4] == ["开始日期", "结束日期", "点击", "独立点击"]
    assert header_of(client.get("/partner/stats/link.csv?range=7d").data)[:3] == ["链接", "链接代码", "点击"]
    assert header_of(client.get("/partner/stats/activity.csv").data)[0] == "时间（UTC）"
    # A visitor's browser decides for someone who never chose.
    login_as(Role.ADMIN)
    chinese = client.get("/admin/stats/at_risk.csv", headers={"Accept-Language": "zh-CN"}).data
    assert header_of(chinese)[:3] == ["推广伙伴", "电子邮箱", "推广伙伴代码"]
    english = client.get("/admin/stats/top_partners.csv", headers={"Accept-Language": "en"}).data
    assert header_of(english)[:4] == ["Partner", "E-mail", "Partner code", "Clicks"]


def _approved_batch(db, program) -> PayoutBatch:
    program.minimum_payout_minor = 1000
    program.payout_day = 1
    partner = PartnerFactory(ref_code="payme", user__locale=ZH)
    details = PayoutDetails(method="paypal", paypal_email="payme@example.org")
    save_payout_account(partner, details, partner.user)
    earn(partner, 2500, at=datetime(2026, 9, 1, tzinfo=UTC))
    db.session.flush()
    batch, _ = payouts.settle(program, date(2026, 10, 20))
    db.session.commit()
    return batch


def test_the_payment_files_are_the_same_in_every_language(client, db, program, login_as):
    batch = _approved_batch(db, program)
    login_as(Role.MANAGER, locale=ZH)
    client.post(f"/admin/payouts/{batch.id}/approve")
    assert db.session.scalar(sa.select(PayoutBatch.status).where(PayoutBatch.id == batch.id)) == "approved"
    files = {}
    for reader, accept in ((ZH, "zh-CN"), ("en", "en")):
        login_as(Role.MANAGER, locale=reader)
        for kind in ("csv", "paypal"):
            url = f"/admin/payouts/{batch.id}/export.{kind}"
            response = client.get(url, headers={"Accept-Language": accept})
            assert response.status_code == 200
            assert not response.data.startswith(BOM), "an importer reads the first column's name as is"
            files[reader, kind] = response.data
    assert files[ZH, "csv"] == files["en", "csv"]
    assert files[ZH, "paypal"] == files["en", "paypal"]
    header = next(csv.reader(io.StringIO(files[ZH, "csv"].decode())))
    assert header == [
        "item_id", "partner_ref", "partner_name", "method", "destination", "amount", "currency", "note"
    ]  # fmt: skip
    # PayPal's bulk file has no header row: its first line is the first payment.
    [paypal] = list(csv.reader(io.StringIO(files[ZH, "paypal"].decode())))
    assert paypal[:3] == ["payme@example.org", "25.00", "USD"]
