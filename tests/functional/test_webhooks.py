"""Outgoing webhooks end to end: a real HTTP receiver on 127.0.0.1 that checks every request
with the reference implementation (the ``standardwebhooks`` package), the retries, the switch-off
after three days of failures, and two dispatchers at once (real threads on PostgreSQL)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
import time_machine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import (
    AuditEvent,
    DeliveryStatus,
    OutboxEvent,
    PartnerStatus,
    Role,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from portal.services import accounts, events, outbox, payouts, webhooks
from portal.services.api_keys import create_api_key
from portal.services.payouts import PayoutDetails, save_payout_account
from tests.conftest import (
    free_port,
    migrate_database,
    own_postgres_database,
)
from tests.factories import PartnerFactory, UserFactory, earn

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Receiver:
    """A threaded HTTP server that verifies each request's signature and answers from a script."""

    def __init__(self, answers=()):
        self.answers = list(answers)  # status codes to answer, in order; then 200
        self.secret: str | None = None
        self.received: list[dict] = []  # verified requests: headers and parsed body
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {key.lower(): value for key, value in self.headers.items()}
                with receiver.lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    try:
                        payload = Webhook(receiver.secret).verify(body, headers)
                    except WebhookVerificationError as error:  # a bad signature, a stale timestamp
                        receiver.rejected.append(repr(error))
                        status = 400
                    else:
                        receiver.received.append({"headers": headers, "body": payload, "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/portal"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def of_type(self, event_type: str) -> list[dict]:
        return [r for r in self.received if r["body"]["type"] == event_type]


def endpoint_for(receiver: Receiver, types: list[str] | None) -> WebhookEndpoint:
    endpoint, secret = webhooks.create_endpoint(receiver.url, types, None)
    assert secret.startswith("whsec_")
    receiver.secret = secret
    _db.session.commit()
    return endpoint


def test_a_sale_a_refund_a_paid_batch_and_an_approval_each_arrive_once_signed(client, db, program, login_as):
    types = ["conversion.created", "conversion.refunded", "payout.paid", "partner.approved"]
    with Receiver() as receiver, time_machine.travel(NOW, tick=True):
        endpoint = endpoint_for(receiver, types)
        _key, plain = create_api_key("shop", None)
        partner = PartnerFactory()
        db.session.commit()
        api = {"Authorization": f"Bearer {plain}"}

        # Through the API: the dispatcher runs after each request's commit (inline in tests).
        sale = {"transaction_id": "W-1", "amount": "100.00", "currency": "USD", "ref": partner.ref_code}
        assert client.post("/api/v1/conversions", json=sale, headers=api).status_code == 201
        refund = {"amount": "20.00", "refund_id": "R-1"}
        assert client.post("/api/v1/conversions/W-1/refund", json=refund, headers=api).status_code == 200
        # An operator approves an application in the console.
        applicant = PartnerFactory(status=PartnerStatus.APPLIED)
        login_as(Role.MANAGER)
        assert client.post(f"/admin/partners/{applicant.id}/approve").status_code == 302
        # A batch marked paid (the service the console calls), then what cron's run-triggers does.
        manager = UserFactory(role=Role.MANAGER)
        program.payout_schedule, program.payout_day, program.minimum_payout_minor = "monthly", 15, 5000
        payee = PartnerFactory()
        save_payout_account(
            payee, PayoutDetails(method="paypal", paypal_email="payee@example.org"), payee.user
        )
        earn(payee, 6000, at=datetime(2026, 11, 10, tzinfo=UTC))
        batch, _ = payouts.settle(program, date(2026, 11, 20))
        payouts.approve_batch(batch, manager)
        payouts.mark_batch_paid(batch, manager, "PP-77", NOW.date())
        db.session.commit()
        outbox.dispatch()
        outbox.dispatch()  # a second pass sends nothing again

    assert receiver.rejected == []
    # The payee's earnings were put on the books as a conversion too (its own conversion.created).
    expected = {**dict.fromkeys(types, 1), "conversion.created": 2}
    assert Counter(r["body"]["type"] for r in receiver.received) == expected
    [created] = [
        r for r in receiver.of_type("conversion.created") if r["body"]["data"]["transaction_id"] == "W-1"
    ]
    assert created["body"]["data"]["transaction_id"] == "W-1"
    assert created["body"]["data"]["partner_id"] == partner.id
    [refunded] = receiver.of_type("conversion.refunded")
    assert refunded["body"]["data"]["transaction_id"] == "W-1"
    [paid] = receiver.of_type("payout.paid")
    assert (paid["body"]["data"]["partner_id"], paid["body"]["data"]["reference"]) == (payee.id, "PP-77")
    [approved] = receiver.of_type("partner.approved")
    assert approved["body"]["data"]["partner_id"] == applicant.id
    # Each payload has the keys its documented example has (README, OpenAPI: events.TYPES).
    for request in receiver.received:
        _description, example = events.TYPES[request["body"]["type"]]
        assert set(request["body"]["data"]) == set(example), request["body"]
    ids = [r["headers"]["webhook-id"] for r in receiver.received]
    assert len(set(ids)) == 5 and all(i.startswith("msg_") for i in ids)
    assert all(set(r["body"]) == {"type", "timestamp", "data"} for r in receiver.received)
    deliveries = db.session.scalars(
        sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    )
    assert sorted((d.event_type, d.status, d.attempts) for d in deliveries) == sorted(
        (t, DeliveryStatus.DELIVERED, 1) for t in [*types, "conversion.created"]
    )


def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_attempt(db, program):
    manager = UserFactory(role=Role.MANAGER)
    with Receiver(answers=[500, 500]) as receiver, time_machine.travel(NOW, tick=False) as clock:
        endpoint_for(receiver, ["partner.approved"])
        partner = PartnerFactory(status=PartnerStatus.APPLIED)
        accounts.approve_partner(partner, manager)
        db.session.commit()
        outbox.dispatch()  # attempt 1: 500
        delivery = db.session.scalars(sa.select(WebhookDelivery)).one()
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
        outbox.dispatch()  # not due yet: nothing sent
        assert len(receiver.received) == 1
        clock.shift(webhooks.retry_delay(1))
        outbox.dispatch()  # attempt 2: 500
        clock.shift(webhooks.retry_delay(2))
        outbox.dispatch()  # attempt 3: 200
        clock.shift(timedelta(days=1))
        outbox.dispatch()
    db.session.refresh(delivery)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 3)
    assert [r["status"] for r in receiver.received] == [500, 500, 200]
    assert len({r["headers"]["webhook-id"] for r in receiver.received}) == 1  # the same message, retried
    codes = db.session.scalars(
        sa.select(WebhookAttempt.status_code)
        .where(WebhookAttempt.delivery_id == delivery.id)
        .order_by(WebhookAttempt.attempt)
    ).all()
    assert codes == [500, 500, 200]


def test_a_receiver_down_for_three_days_is_switched_off_with_a_notice(client, db, program, login_as):
    manager = UserFactory(role=Role.MANAGER)
    down = f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens there
    with time_machine.travel(NOW, tick=False) as clock:
        endpoint, _secret = webhooks.create_endpoint(down, ["partner.approved"], None)
        partner = PartnerFactory(status=PartnerStatus.APPLIED)
        accounts.approve_partner(partner, manager)
        db.session.commit()
        outbox.dispatch()
        steps = 1
        while endpoint.enabled and steps < 100:
            delivery = db.session.scalars(sa.select(WebhookDelivery)).one()
            clock.move_to(delivery.next_attempt_at)
            outbox.dispatch()
            db.session.refresh(endpoint)
            steps += 1
        switched_off_at = datetime.now(UTC)
        clock.shift(timedelta(days=1))
        outbox.dispatch()  # a disabled endpoint gets nothing more

        attempts = db.session.scalars(sa.select(WebhookAttempt).order_by(WebhookAttempt.id)).all()
        assert not endpoint.enabled and endpoint.disabled_reason == "failing"
        assert switched_off_at - NOW >= timedelta(hours=72)  # the whole window, not less
        assert switched_off_at - NOW < timedelta(hours=72 + 6)  # and not much more (one 6 h step)
        assert all(a.status_code is None and a.error for a in attempts)
        assert attempts[-1].created_at == switched_off_at
        assert db.session.scalars(sa.select(WebhookDelivery)).one().status == DeliveryStatus.FAILED
        # The operators are told: an audit entry, an event, and the console's notice.
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).where(
                    AuditEvent.action == "webhook.disabled", AuditEvent.subject_id == endpoint.id
                )
            )
            == 1
        )
        assert db.session.scalars(
            sa.select(OutboxEvent.data).where(OutboxEvent.type == "webhook.endpoint_disabled")
        ).all() == [{"endpoint_id": endpoint.id, "url": down}]
        login_as(Role.ADMIN)
        page = client.get("/admin/webhooks").get_data(as_text=True)
        assert "failed for three days and was switched off" in page
        assert down in page


def test_the_console_adds_an_endpoint_shows_its_secret_once_and_logs_a_test_event(
    client, db, program, login_as
):
    login_as(Role.ADMIN)
    with Receiver() as receiver:
        response = client.post("/admin/webhooks", data={"url": receiver.url, "event_types": ["payout.paid"]})
        assert response.status_code == 200
        page = response.get_data(as_text=True)
        endpoint = db.session.scalars(sa.select(WebhookEndpoint)).one()
        assert endpoint.secret in page  # shown this once
        assert endpoint.secret not in client.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
        receiver.secret = endpoint.secret
        assert client.post(f"/admin/webhooks/{endpoint.id}/test").status_code == 302
    [test] = receiver.received
    assert test["body"]["type"] == "webhook.test"
    log = client.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert "webhook.test" in log and "200" in log


@pytest.fixture
def race_database() -> str:
    """A PostgreSQL database of its own, migrated: the race commits for real, and what it
    commits must not reach the other tests' shared database."""
    url = own_postgres_database("outbox_race")
    migrate_database(url)
    return url


def test_two_dispatchers_at_once_never_deliver_twice(race_database):
    """Real commits on PostgreSQL, two threads each dispatching in a loop on its own connection."""
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=race_database, OUTBOX_DISPATCH_MODE="off")
    with Receiver() as receiver:
        with app.app_context():
            endpoint_for(receiver, ["partner.approved"])
            manager = UserFactory(role=Role.MANAGER)
            partners = [PartnerFactory(status=PartnerStatus.APPLIED) for _ in range(30)]
            _db.session.commit()
            for partner in partners:
                accounts.approve_partner(partner, manager)
            _db.session.commit()
            partner_ids = {p.id for p in partners}
        barrier = threading.Barrier(2)
        failures = []

        def dispatcher():
            try:
                with app.app_context():
                    barrier.wait(timeout=10)
                    for _ in range(5):
                        outbox.dispatch(limit=7)
                    _db.session.remove()
            except Exception as error:  # noqa: BLE001 - reported below, not lost in the thread
                failures.append(error)

        threads = [threading.Thread(target=dispatcher) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        with app.app_context():
            outbox.dispatch()  # whatever the two left (each stops after 5 passes)
            _db.session.remove()
    assert failures == []
    assert receiver.rejected == []
    ids = Counter(r["headers"]["webhook-id"] for r in receiver.received)
    assert set(ids.values()) == {1}
    assert {r["body"]["data"]["partner_id"] for r in receiver.received} == partner_ids
    with app.app_context():
        from portal.models import AutomaticMessageLog

        welcomes = Counter(
            _db.session.scalars(
                sa.select(AutomaticMessageLog.partner_id).where(AutomaticMessageLog.kind == "welcome")
            )
        )
        assert {pid: welcomes[pid] for pid in partner_ids} == dict.fromkeys(partner_ids, 1)
        _db.engine.dispose()
