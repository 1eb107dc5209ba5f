"""Test data, one way: factory_boy factories (they add to the test's session and flush).

``accounts``: users, partners, the program; ``money``: conversions, commission lines, payout
batches and items (``earn`` is the common one-liner); ``stats``: clicks and sales on given days.
Import from here: ``from tests.factories import PartnerFactory, earn, store_clicks``.
"""

from tests.factories.accounts import PASSWORD, PartnerFactory, ProgramFactory, UserFactory
from tests.factories.money import (
    CommissionFactory,
    ConversionFactory,
    PayoutBatchFactory,
    PayoutItemFactory,
    earn,
)
from tests.factories.stats import ClickRowFactory, at_noon, sale, store_clicks

__all__ = [
    "PASSWORD",
    "ClickRowFactory",
    "CommissionFactory",
    "ConversionFactory",
    "PartnerFactory",
    "PayoutBatchFactory",
    "PayoutItemFactory",
    "ProgramFactory",
    "UserFactory",
    "at_noon",
    "earn",
    "sale",
    "store_clicks",
]
