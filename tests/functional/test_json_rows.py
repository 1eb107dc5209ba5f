"""Rows that go in as one JSON document (``portal.database.insert_from_json``, PostgreSQL's
form for the sale writer's conversions and commission lines and for the rollups) come back
exactly as given: text with quotes, backslashes, new lines and other scripts, times with
their offsets and microseconds, days, NULLs and nested JSON, in the order given."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum

import pytest
import sqlalchemy as sa

from portal.database import insert_from_json, json_rows
from portal.models import Commission, CommissionKind, CommissionStatus, Conversion, ConversionStatus
from tests.factories import PartnerFactory, ProgramFactory

pytestmark = [pytest.mark.postgres_only, pytest.mark.money]

_COLUMNS = tuple(column.key for column in Conversion.__table__.columns if column.key != "id")
_LINE_COLUMNS = tuple(column.key for column in Commission.__table__.columns if column.key != "id")
AWKWARD = 'quote " and \' backslash \\ new\nline tab\t 中文 ☃ 𝄞 {"not": "json"} ,;'


def _sale(transaction_id: str, partner_id: int | None, **overrides) -> dict:
    values = dict.fromkeys(_COLUMNS)
    values.update(
        transaction_id=transaction_id,
        amount_minor=4990,
        currency="USD",
        refunded_minor=0,
        partner_id=partner_id,
        status=ConversionStatus.PENDING,  # an enum: stored as its value
        request_fingerprint="f" * 64,
        occurred_at=datetime(2026, 12, 1, 23, 59, 59, 999_999, tzinfo=UTC),
        created_at=datetime(2026, 12, 2, 0, 0, 0, 1, tzinfo=UTC),
    )
    values.update(overrides)
    return values


def test_conversions_and_lines_come_back_exactly_and_in_order(db):
    ProgramFactory()
    partner = PartnerFactory()
    db.session.flush()
    plus_eight = timezone(timedelta(hours=8))
    rows = [
        _sale("json-1", partner.id, attribution_note=AWKWARD, customer_id="c-1"),
        _sale("json-2", None, rejection_note="", occurred_at=datetime(2026, 12, 2, 7, 30, tzinfo=plus_eight)),
        _sale(
            "json-3",
            partner.id,
            original_amount_minor=10**12,  # bigint
            original_currency="EUR",
            fx_rate="1.0842",
            fx_rate_day=date(2026, 11, 30),
        ),
    ]
    insert = insert_from_json(
        Conversion.__table__, _COLUMNS, "ON CONFLICT (transaction_id) DO NOTHING RETURNING id, transaction_id"
    )
    stored = db.session.execute(insert, {"rows": json_rows(rows)}).all()
    # In the order given: the sequence hands out the ids in that order.
    assert [transaction_id for _id, transaction_id in sorted(stored)] == ["json-1", "json-2", "json-3"]
    # A transaction id taken before is not inserted again (and not returned).
    again = db.session.execute(insert, {"rows": json_rows([rows[0], _sale("json-4", None)])}).all()
    assert [transaction_id for _id, transaction_id in again] == ["json-4"]

    db.session.expire_all()
    for values in rows:
        conversion = db.session.scalars(
            sa.select(Conversion).where(Conversion.transaction_id == values["transaction_id"])
        ).one()
        for name in _COLUMNS:
            assert getattr(conversion, name) == values[name], name
    # The +08:00 time kept its instant.
    second = db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == "json-2")).one()
    assert second.occurred_at == datetime(2026, 12, 1, 23, 30, tzinfo=UTC)

    conversion_id = min(conversion_id for conversion_id, _tid in stored)
    lines = [
        {
            "conversion_id": conversion_id,
            "partner_id": partner.id,
            "amount_minor": amount,
            "currency": "USD",
            "kind": CommissionKind.BASE,
            "status": CommissionStatus.PENDING,
            "confirm_after": datetime(2027, 1, 1, tzinfo=UTC),
            "note": AWKWARD,
            "explanation": {"rule": AWKWARD, "steps": [1, 2.5, None, {"nested": True}]},
            "created_at": datetime(2026, 12, 2, tzinfo=UTC),
        }
        for amount in (499, 1, 0)
    ]
    columns = tuple(name for name in _LINE_COLUMNS if name in lines[0])
    ids = db.session.execute(
        insert_from_json(Commission.__table__, columns, "RETURNING id"), {"rows": json_rows(lines)}
    ).scalars()
    db.session.expire_all()
    read = [db.session.get(Commission, line_id) for line_id in sorted(ids)]
    assert [line.amount_minor for line in read] == [499, 1, 0]
    assert all(line.explanation == lines[0]["explanation"] and line.note == AWKWARD for line in read)


class _Colour(Enum):
    RED = "red"


def test_json_rows_writes_what_postgresql_reads():
    text = json_rows(
        [
            {
                "enum": _Colour.RED,
                "day": date(2026, 2, 28),
                "at": datetime(2026, 2, 28, 1, 2, 3, 4, tzinfo=UTC),
                "decimal": Decimal("1.10"),
                "none": None,
                "text": "中文",
            }
        ]
    )
    assert text == (
        '[{"enum":"red","day":"2026-02-28","at":"2026-02-28T01:02:03.000004+00:00",'
        '"decimal":"1.10","none":null,"text":"中文"}]'
    )
    with pytest.raises(TypeError, match="no JSON form for object"):
        json_rows([{"what": object()}])
