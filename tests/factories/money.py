"""Money on the books: conversions, commission lines, payout batches and their items.

Rows written directly, for tests that need a ledger in a given state; a test of how money
gets there goes through the services (see ``stats.sale``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import factory

from portal.models import Commission, Conversion, Partner, PayoutBatch, PayoutItem
from portal.models.types import utcnow
from tests.factories._base import ModelFactory
from tests.factories.accounts import PartnerFactory


class ConversionFactory(ModelFactory):
    class Meta:
        model = Conversion

    partner = factory.SubFactory(PartnerFactory)
    transaction_id = factory.Sequence(lambda n: f"tx-{n}")
    amount_minor = 10_000
    currency = "USD"
    request_fingerprint = "f"
    occurred_at = factory.LazyFunction(lambda: utcnow() - timedelta(days=40))


class CommissionFactory(ModelFactory):
    """A commission line of its conversion's partner; confirmed unless ``status`` says otherwise."""

    class Meta:
        model = Commission
        exclude = ("at",)

    at = factory.LazyFunction(lambda: utcnow() - timedelta(days=40))
    conversion = factory.SubFactory(
        ConversionFactory,
        occurred_at=factory.SelfAttribute("..at"),
        amount_minor=factory.LazyAttribute(lambda c: c.factory_parent.amount_minor * 10),
        currency=factory.SelfAttribute("..currency"),
    )
    partner = factory.SelfAttribute("conversion.partner")
    kind = "base"
    amount_minor = 1_000
    currency = "USD"
    status = "confirmed"
    confirm_after = factory.LazyAttribute(
        lambda c: c.at if c.status == "confirmed" else c.at + timedelta(days=30)
    )
    confirmed_at = factory.LazyAttribute(lambda c: c.at if c.status == "confirmed" else None)


class PayoutBatchFactory(ModelFactory):
    class Meta:
        model = PayoutBatch

    currency = "USD"
    period_end = factory.LazyFunction(lambda: utcnow().date())
    cutoff_at = factory.LazyFunction(utcnow)


class PayoutItemFactory(ModelFactory):
    class Meta:
        model = PayoutItem

    batch = factory.SubFactory(PayoutBatchFactory, currency=factory.SelfAttribute("..currency"))
    partner = factory.SubFactory(PartnerFactory)
    amount_minor = 5_000
    currency = "USD"


def earn(
    partner: Partner,
    amount_minor: int,
    *,
    confirmed: bool = True,
    at: datetime | None = None,
    transaction_id: str | None = None,
) -> Commission:
    """A conversion (ten times the amount) and its base line, confirmed (by default) at ``at``."""
    conversion = {"conversion__partner": partner}
    if transaction_id is not None:
        conversion["conversion__transaction_id"] = transaction_id
    return CommissionFactory(
        partner=partner,
        amount_minor=amount_minor,
        status="confirmed" if confirmed else "pending",
        at=at or utcnow() - timedelta(days=40),
        **conversion,
    )
