"""Group commit of the conversion API (portal/salewriter.py): the sales of concurrent requests
written many to a transaction earn, count and answer exactly as sales written one by one.

Runs on committed data (SQLite and PostgreSQL): the writer's thread has its own session and
connection, as in production. The batches here are made by hand (``SaleWriter.write``), so
their make-up is known; tests/functional/test_concurrency.py sends parallel requests through
the writer's own thread.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.blueprints.api.routes import _conversion_answer
from portal.blueprints.api.schemas import read_conversion
from portal.errors import DomainError
from portal.extensions import db as _db
from portal.models import (
    ApiKey,
    Commission,
    Conversion,
    DailyStat,
    OutboxConsumer,
    OutboxEvent,
    OutboxReceipt,
    Partner,
    PartnerTier,
    Program,
    Tier,
    TierChange,
    User,
)
from portal.salewriter import Outcome, Sale
from portal.services import commissions, outbox, rollups, tracking
from portal.services.api_keys import create_api_key
from portal.services.ledger import check_ledger, without_ledger_triggers
from portal.services.program import cached_program
from tests.factories import PartnerFactory, ProgramFactory

pytestmark = pytest.mark.postgres

REFS = ("alpha", "bravo", "charlie")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def world(database_url):
    """Three partners, a tier reached at the second sale, a key; committed, removed afterwards."""
    app = create_app(
        TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, SALE_WRITE_MODE="batched", SALE_WRITERS=1
    )
    with app.app_context():
        # The tests' dispatch is inline, in the writer's thread after its commit: it would
        # hand on every event that earlier tests of this worker committed and left (hundreds;
        # seconds of the writer's time, and a request waiting 5 s for it answered 503).
        _empty_outbox()
        ProgramFactory(fraud_duplicate_order=False)
        partners = [PartnerFactory(ref_code=ref) for ref in REFS]
        _db.session.add(
            Tier(
                name="Two sales",
                rank=1,
                rate_percent_bp=2000,
                threshold_metric="conversions",
                threshold_value=2,
            )
        )
        _key, plain = create_api_key("writer", None)
        _db.session.commit()
        ids = [(p.id, p.user_id) for p in partners]
    yield app, plain
    with app.app_context():
        from portal.models import MessageTemplate, OutboundEmail

        with without_ledger_triggers(_db.session.connection()):
            for grain in rollups.GRAINS:
                _db.session.execute(sa.delete(grain.table))
            _db.session.execute(sa.delete(Commission))
            _db.session.execute(sa.delete(Conversion))
            for model in (OutboundEmail, TierChange, PartnerTier, Tier, MessageTemplate, ApiKey):
                _db.session.execute(sa.delete(model))
            _empty_outbox(commit=False)  # committed after the block
            for partner_id, user_id in ids:
                _db.session.execute(sa.delete(Partner).where(Partner.id == partner_id))
                _db.session.execute(sa.delete(User).where(User.id == user_id))
            _db.session.execute(sa.delete(Program))
        _db.session.commit()
        _db.engine.dispose()


def _sales(app, bodies: list[dict]) -> list[Sale]:
    with app.test_request_context():
        program = cached_program()
        return [
            Sale(
                data=read_conversion(body, program),
                raw=body,
                received_at=datetime.now(UTC),
                answer=_conversion_answer,
            )
            for body in bodies
        ]


def _empty_outbox(*, commit: bool = True) -> None:
    """No event left, and every consumer back at the start (their rows made again on use)."""
    for model in (OutboxReceipt, OutboxEvent, OutboxConsumer):
        _db.session.execute(sa.delete(model))
    if commit:
        _db.session.commit()


def _write_all(app, sales: list[Sale]) -> int:
    """Write ``sales`` as the writer's thread does, batch after batch; returns how many batches."""
    writer = app.extensions["sale_writer"]
    batches = 0
    while sales:
        sales = writer.run_batch(sales)
        batches += 1
    return batches


def _body(tx: str, ref: str, amount: str = "100.00") -> dict:
    return {"transaction_id": tx, "amount": amount, "currency": "USD", "ref": ref}


def _rollups_equal_a_recount(app) -> bool:
    """The four rollup tables as kept, against what ``rebuild`` recounts from the raw rows."""

    def read() -> list[set]:
        return [set(_db.session.execute(sa.select(grain.table)).all()) for grain in rollups.GRAINS]

    with app.app_context():
        kept = read()
        rollups.rebuild(_db.session)
        recounted = read()
        _db.session.rollback()
    return kept == recounted


def _kinds_by_partner(app) -> dict[str, list[str]]:
    with app.app_context():
        rows = _db.session.execute(
            sa.select(Partner.ref_code, Commission.kind)
            .join(Conversion, Conversion.partner_id == Partner.id)
            .join(Commission, Commission.conversion_id == Conversion.id)
            .order_by(Conversion.id)
        ).all()
    kinds: dict[str, list[str]] = {}
    for ref, kind in rows:
        kinds.setdefault(ref, []).append(kind)
    return kinds


def test_a_batch_earns_exactly_what_the_same_sales_earn_one_by_one(world):
    app, _plain = world
    # Three sales of each partner, interleaved: a partner's second and third sale wait for the
    # next batch (each must read the counters its earlier sales left: the tier at the second).
    bodies = [_body(f"b-{i}-{ref}", ref, f"{50 + i}.00") for i in range(3) for ref in REFS]
    sales = _sales(app, bodies)
    assert _write_all(app, sales) == 3
    assert [sale.outcome for sale in sales] == [Outcome.WRITTEN] * 9
    assert all(sale.created for sale in sales)
    assert _kinds_by_partner(app) == {ref: ["base", "tier", "tier"] for ref in REFS}
    with app.app_context():
        # One transaction a batch: the three partners' first sales were written together.
        if _db.engine.dialect.name == "postgresql":
            xmin = sa.text("count(DISTINCT xmin::text)")
            assert _db.session.scalar(sa.select(xmin).select_from(Conversion)) == 3
        # The answers carry each sale's own commission, the rollups equal a recount, the ledger holds.
        for sale in sales:
            answer = sale.payload["conversion"]
            stored = _db.session.scalars(
                sa.select(Conversion).where(Conversion.transaction_id == answer["transaction_id"])
            ).one()
            assert answer["amount"] == f"{stored.amount_minor / 100:.2f}"
            lines = sum(line.amount_minor for line in stored.commissions)
            assert answer["commission"]["amount"] == f"{lines / 100:.2f}"
        per_partner = sa.select(sa.func.sum(DailyStat.conversions)).group_by(DailyStat.partner_id)
        assert _db.session.scalars(per_partner).all() == [3, 3, 3]
        assert check_ledger() == []
    assert _rollups_equal_a_recount(app)


@pytest.mark.parametrize("count", [3, 12])  # one statement with RETURNING (PostgreSQL: as one JSON document)
def test_lines_inserted_together_get_each_its_own_id(world, count):
    """A batch's lines go in by one INSERT, and each line object of the session is given the
    id of its own row: the ids come back in the order the rows were given."""
    app, _plain = world
    _write_all(app, _sales(app, [_body(f"ids-{ref}", ref) for ref in REFS]))
    with app.app_context():
        conversions = _db.session.scalars(sa.select(Conversion).order_by(Conversion.id)).all()
        pending = commissions.PendingLines()
        amounts = iter(range(1001, 1001 + count))
        for n in range(count):
            conversion = conversions[n % len(conversions)]
            model = conversion.commissions[0]
            row = {key: getattr(model, key) for key in commissions._LINE_COLUMNS}
            pending.add(conversion, [{**row, "amount_minor": next(amounts)}])
        pending.insert()
        given = {
            line.id: (line.conversion_id, line.amount_minor)
            for conversion in conversions
            for line in conversion.commissions
            if line.amount_minor > 1000
        }
        _db.session.expire_all()
        rows = _db.session.execute(
            sa.select(Commission.id, Commission.conversion_id, Commission.amount_minor).where(
                Commission.amount_minor > 1000
            )
        ).all()
        assert len(given) == count
        assert {line_id: (conversion_id, amount) for line_id, conversion_id, amount in rows} == given
        _db.session.rollback()


def test_a_batch_reads_each_partners_counters_as_that_partners_own_probe_does(world):
    """``rewards.read_probes`` (one SELECT for the batch) against ``TierProbe.fetch`` (one
    partner at a time): equal for partners with and without history and a tier, and for
    probes of different days in one call (a sale that says it happened two days ago)."""
    from datetime import timedelta

    from portal.services import rewards

    app, _plain = world
    # alpha: two sales (a tier), bravo: one, charlie: none.
    _write_all(app, _sales(app, [_body("h-1", "alpha", "30.00"), _body("h-2", "bravo", "45.00")]))
    _write_all(app, _sales(app, [_body("h-3", "alpha", "12.50")]))
    with app.app_context():
        program = cached_program()
        ids = dict(_db.session.execute(sa.select(Partner.ref_code, Partner.id)).all())
        now = datetime.now(UTC)
        probes = [
            rewards.tier_probe(program, ids["alpha"], now),
            rewards.tier_probe(program, ids["bravo"], now - timedelta(days=2)),
            rewards.tier_probe(program, ids["charlie"], now),
        ]
        together = rewards.read_probes(probes)
        alone = {probe.params["probe_partner_id"]: probe.fetch() for probe in probes}
        assert together == alone
        assert together[ids["alpha"]].tier_id is not None
        assert max(together[ids["alpha"]].metrics.values()) == 2  # its two sales
        assert together[ids["charlie"]].tier_id is None
        with pytest.raises(ValueError, match="one probe per partner"):
            rewards.read_probes([probes[0], rewards.tier_probe(program, ids["alpha"], now)])
        _db.session.rollback()


def test_the_same_transaction_id_twice_in_one_batch_is_stored_once(world):
    app, plain = world
    # Sales that attribute to nobody share a batch (no partner to take turns for).
    same = _body("dup-1", "nobody-at-all")
    other_details = {**same, "amount": "7.00"}
    sales = _sales(app, [same, same, other_details])
    _write_all(app, sales)
    # The third is refused (409) by its own request, which decides it again.
    assert [sale.outcome for sale in sales] == [Outcome.WRITTEN, Outcome.WRITTEN, Outcome.ALONE]
    assert [sale.created for sale in sales[:2]] == [True, False]
    assert sales[0].payload == sales[1].payload
    with app.app_context():
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 1
    response = app.test_client().post(
        "/api/v1/conversions",
        json=other_details,
        headers={"Authorization": f"Bearer {plain}", "Accept-Language": "zh-CN"},
    )
    assert response.status_code == 409
    assert "transaction_id" in response.json["error"]["fields"]
    assert _CJK.search(response.json["error"]["message"])  # in the client's language


@pytest.mark.parametrize("others", [2, 9])  # three and ten rows (PostgreSQL: as one JSON document)
def test_a_retry_in_a_batch_is_answered_from_the_stored_sale_and_the_rest_are_written(world, others):
    app, _plain = world
    first = _sales(app, [_body("again-1", "alpha", "61.00")])
    _write_all(app, first)
    bodies = [_body("again-1", "alpha", "61.00")] + [
        _body(f"new-{i}", "nobody-at-all") for i in range(others)
    ]
    sales = _sales(app, bodies)
    assert _write_all(app, sales) == 1
    assert [sale.outcome for sale in sales] == [Outcome.WRITTEN] * len(bodies)
    assert [sale.created for sale in sales] == [False] + [True] * others
    assert sales[0].payload == first[0].payload  # the retry's answer is the first one's
    with app.app_context():
        stored = dict(_db.session.execute(sa.select(Conversion.transaction_id, Conversion.id)).all())
        assert sorted(stored) == sorted({body["transaction_id"] for body in bodies})
        for sale in sales[1:]:
            assert sale.payload["conversion"]["transaction_id"] in stored
        assert check_ledger() == []
    assert _rollups_equal_a_recount(app)


def _failing_earnings(monkeypatch, transaction_id: str) -> None:
    """The lines of the sale with ``transaction_id`` fail (after the batch's INSERT stored it)."""
    real = tracking._earn_stored

    def failing(program, conversion, *args):
        if conversion.transaction_id == transaction_id:
            raise RuntimeError("the database went away")
        return real(program, conversion, *args)

    monkeypatch.setattr(tracking, "_earn_stored", failing)


def test_sales_that_arrive_while_a_batch_waits_for_its_turn_join_it(world):
    """The writer takes its turn (SQLite: the writer gate and the write lock), then every sale
    queued meanwhile joins the batch: one transaction, not one more turn each. A second sale of
    a partner already in the batch still waits for the next batch."""
    app, _plain = world
    writer = app.extensions["sale_writer"]
    taken = _sales(app, [_body("turn-1", "alpha", "10.00")])
    arrived = _sales(
        app,
        [_body("turn-2", "bravo", "20.00"), _body("turn-3", "alpha", "30.00"), _body("turn-4", "charlie")],
    )
    writer._queue.extend(arrived)
    later = writer.run_batch(list(taken))
    assert not writer._queue
    assert [sale.data.transaction_id for sale in later] == ["turn-3"]  # alpha's second sale
    assert [sale.outcome for sale in (taken[0], arrived[0], arrived[2])] == [Outcome.WRITTEN] * 3
    assert not arrived[1].done.is_set()
    assert writer.run_batch(later) == []
    assert arrived[1].outcome == Outcome.WRITTEN
    with app.app_context():
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 4
        assert check_ledger() == []
    assert _rollups_equal_a_recount(app)


def test_a_batch_that_fails_answers_the_sales_that_joined_it_too(world, monkeypatch):
    app, _plain = world
    writer = app.extensions["sale_writer"]
    _failing_earnings(monkeypatch, "joined-boom")
    taken = _sales(app, [_body("joined-1", "alpha")])
    arrived = _sales(app, [_body("joined-boom", "bravo")])
    writer._queue.extend(arrived)
    assert writer.run_batch(list(taken)) == []
    # Both were in the failed batch: each is answered (written alone by its request), none waits.
    assert [sale.outcome for sale in taken + arrived] == [Outcome.ALONE, Outcome.ALONE]
    assert all(sale.done.is_set() for sale in taken + arrived)
    with app.app_context():
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0


def test_a_batch_that_fails_leaves_nothing_and_each_sale_is_written_alone(world, monkeypatch):
    app, plain = world
    real = tracking._earn_stored
    # After the batch's INSERT stored all three, the second one's lines fail.
    _failing_earnings(monkeypatch, "boom")
    sales = _sales(app, [_body("fine-1", "alpha"), _body("boom", "bravo"), _body("fine-2", "charlie")])
    _write_all(app, sales)
    assert [sale.outcome for sale in sales] == [Outcome.ALONE] * 3
    with app.app_context():
        # Nothing of the batch was kept: not the sales before the failure either.
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Commission)) == 0
    assert _rollups_equal_a_recount(app)

    # Through the API: the request whose batch failed writes its sale itself.
    monkeypatch.setattr(tracking, "_earn_stored", real)
    from portal.salewriter import SaleWriter

    original = SaleWriter.write
    failures = []

    def fail_once(self, sales):
        if not failures:
            failures.append(sales)
            raise RuntimeError("the batch's connection broke")
        return original(self, sales)

    monkeypatch.setattr(SaleWriter, "write", fail_once)
    response = app.test_client().post(
        "/api/v1/conversions", json=_body("api-1", "alpha"), headers={"Authorization": f"Bearer {plain}"}
    )
    assert response.status_code == 201, response.json
    assert len(failures) == 1
    assert response.json["conversion"]["commission"] is not None
    with app.app_context():
        stored = _db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == "api-1")).one()
        assert len(stored.commissions) == 1
    assert _rollups_equal_a_recount(app)


def test_a_sale_refused_while_it_is_decided_is_answered_alone_and_the_others_are_written(world, monkeypatch):
    app, plain = world
    real = tracking.prepare_conversion

    def refusing(program, data, raw, **kwargs):
        if data.transaction_id == "refused":
            raise DomainError("This sale is more than the program's maximum sale.", "amount")
        return real(program, data, raw, **kwargs)

    monkeypatch.setattr(tracking, "prepare_conversion", refusing)
    sales = _sales(app, [_body("kept-1", "alpha"), _body("refused", "bravo"), _body("kept-2", "charlie")])
    _write_all(app, sales)
    # The refused one wrote nothing and goes back to its request, which decides it again.
    assert [sale.outcome for sale in sales] == [Outcome.WRITTEN, Outcome.ALONE, Outcome.WRITTEN]
    # And through the API, a 422 naming the field.
    response = app.test_client().post(
        "/api/v1/conversions", json=_body("refused", "bravo"), headers={"Authorization": f"Bearer {plain}"}
    )
    assert response.status_code == 422
    refusal = "This sale is more than the program's maximum sale."
    assert response.json["error"]["fields"] == {"amount": [refusal]}


def test_a_request_whose_batch_takes_too_long_is_answered_503_and_its_retry_from_the_stored_sale(
    world, monkeypatch
):
    app, plain = world
    app.extensions["sale_writer"].timeout = 0.2
    from portal.salewriter import SaleWriter

    original = SaleWriter.write
    released = threading.Event()

    def slow(self, sales):
        released.wait(5)
        return original(self, sales)

    monkeypatch.setattr(SaleWriter, "write", slow)
    headers = {"Authorization": f"Bearer {plain}"}
    body = _body("slow-1", "alpha")
    response = app.test_client().post("/api/v1/conversions", json=body, headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "15"
    assert response.json["error"]["code"] == "unavailable"
    released.set()
    # Generous waits from here: the test process's garbage collector has paused it for 5-12 s
    # on CI's hosts (a full collection over the apps of a thousand tests), and a retry that
    # waited out a 5 s timeout for it answered 503.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with app.app_context():
            if _db.session.scalar(sa.select(Conversion.id).where(Conversion.transaction_id == "slow-1")):
                break
        time.sleep(0.05)
    app.extensions["sale_writer"].timeout = 30
    retry = app.test_client().post("/api/v1/conversions", json=body, headers=headers)
    assert retry.status_code == 200
    assert retry.json["conversion"]["transaction_id"] == "slow-1"


def test_in_a_database_outage_each_request_answers_503_at_once_and_the_writer_logs_nothing(
    world, monkeypatch, caplog
):
    app, plain = world

    def unreachable(*_args, **_kwargs):
        raise sa.exc.InterfaceError("SELECT 1", {}, ConnectionError("connection refused"))

    monkeypatch.setattr(tracking, "prepare_conversion", unreachable)
    sales = _sales(app, [_body("down-1", "alpha"), _body("down-2", "bravo")])
    _write_all(app, sales)
    assert [sale.outcome for sale in sales] == [Outcome.FAILED] * 2
    assert all(isinstance(sale.error, sa.exc.InterfaceError) for sale in sales)

    response = app.test_client().post(
        "/api/v1/conversions", json=_body("down-3", "alpha"), headers={"Authorization": f"Bearer {plain}"}
    )
    assert response.status_code == 503
    assert response.json["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"]
    assert not [record for record in caplog.records if record.name == "portal.salewriter"]


def test_a_sale_written_by_the_writer_keeps_the_keys_note_of_use(world):
    """The request's own transaction held the key's once-a-minute ``last_used_at``; it used to
    be rolled back before the sale was handed over, so a merchant who only reported sales
    showed as never using its key."""
    app, plain = world
    with app.app_context():
        assert _db.session.scalar(sa.select(ApiKey.last_used_at)) is None
    response = app.test_client().post(
        "/api/v1/conversions", json=_body("used-1", "alpha"), headers={"Authorization": f"Bearer {plain}"}
    )
    assert response.status_code == 201
    with app.app_context():
        assert _db.session.scalar(sa.select(ApiKey.last_used_at)) is not None


def test_a_request_whose_look_ups_are_cached_leaves_the_database_to_the_writer(world):
    """Once the key's use of the minute is noted and its look-ups are cached, a conversion
    request's own thread opens no session, sends no statement and checks out no connection:
    every statement of its sale is the writer's."""
    app, plain = world
    with app.app_context():
        engine = _db.engine
    request_thread = threading.get_ident()
    sessions: list[bool] = []

    # Registered after Flask-SQLAlchemy's: runs before it removes the session, in either path
    # (the WSGI-level one, portal/blueprints/api/lean.py, runs no request hooks); the
    # requests' own app contexts only, not the writer's.
    @app.teardown_appcontext
    def note_session(_error):
        if threading.get_ident() == request_thread:
            sessions.append(_db.session.registry.has())

    client = app.test_client()
    headers = {"Authorization": f"Bearer {plain}"}
    assert (
        client.post("/api/v1/conversions", json=_body("warm-1", "alpha"), headers=headers).status_code == 201
    )
    assert sessions == [True]  # the first request notes the key's use: its own transaction
    statements: list[int] = []
    checkouts: list[int] = []

    def statement(*_args):
        statements.append(threading.get_ident())

    def checkout(*_args):
        checkouts.append(threading.get_ident())

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine.pool, "checkout", checkout)
    try:
        response = client.post("/api/v1/conversions", json=_body("warm-2", "bravo"), headers=headers)
    finally:
        sa.event.remove(engine, "before_cursor_execute", statement)
        sa.event.remove(engine.pool, "checkout", checkout)
    assert response.status_code == 201
    assert sessions == [True, False]
    assert statements and request_thread not in statements  # the writer's statements only
    assert request_thread not in checkouts


def test_a_dispatch_tells_each_page_once_per_kind_of_change(world, monkeypatch):
    """The live consumer writes nothing, yet its batch runs in a transaction of its own, so
    that a pass tells each partner's pages and the operators' once per kind of change
    (``realtime.notify_once``). A pass that found every event it could take already read (a
    backlog of at least its limit: after an outage) handled them outside one, after the
    messages consumer's commit, and sent one notice per event: over Redis, to every worker."""
    from portal import realtime

    app, _plain = world
    _write_all(app, _sales(app, [_body(f"live-{ref}", ref) for ref in REFS]))
    limit = 6  # fewer than the three sales' events: the pass takes a full window
    with app.app_context():
        events = _db.session.execute(
            sa.select(OutboxEvent.type, OutboxEvent.partner_id).order_by(OutboxEvent.id)
        ).all()
        assert len(events) > limit
        first = _db.session.scalar(sa.select(sa.func.min(OutboxEvent.id)))
        _db.session.execute(sa.delete(OutboxReceipt))
        _db.session.execute(sa.update(OutboxConsumer).values(position=first - 1))
        _db.session.commit()
        told_for = {"conversion.created": "conversion", "commission.created": "earnings"}
        expected = {(told_for[kind], f"partner:{partner_id}") for kind, partner_id in events[:limit]}
        expected.add(("conversion", "operators"))
        emitted: list[tuple[str, object]] = []
        monkeypatch.setattr(
            realtime.socketio, "emit", lambda name, _payload, to=None, **_: emitted.append((name, to))
        )
        report = outbox.dispatch(limit=limit, send=False)
    assert report.handled["live"] == limit
    # (The partners' first sales also send them a message: its own notices, left aside.)
    told = [(name, to) for name, to in emitted if name in ("conversion", "earnings")]
    assert sorted(told, key=str) == sorted(expected, key=str)  # each once
