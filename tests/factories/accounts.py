"""People and the program: users, partners, the program row."""

from __future__ import annotations

import factory
from werkzeug.security import generate_password_hash

from portal.models import Partner, PartnerStatus, Program, Role, User
from tests.factories._base import ModelFactory

PASSWORD = "correct horse battery"
# Hashing is slow on purpose; the factories share one hash of PASSWORD.
_PASSWORD_HASH = generate_password_hash(PASSWORD)


class UserFactory(ModelFactory):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.org")
    name = factory.Faker("name")
    role = Role.MANAGER
    password_hash = _PASSWORD_HASH
    active = True


class PartnerFactory(ModelFactory):
    class Meta:
        model = Partner

    user = factory.SubFactory(UserFactory, role=Role.PARTNER)
    ref_code = factory.Sequence(lambda n: f"ref{n:05d}")
    status = PartnerStatus.APPROVED
    website = factory.Sequence(lambda n: f"https://site{n}.example")
    channels = factory.LazyFunction(lambda: ["seo"])
    promotion_description = "A gear review blog with a loyal audience of hikers."
    country = "US"


class ProgramFactory(ModelFactory):
    class Meta:
        model = Program

    name = "Test Outdoor"
    currency = "USD"
    timezone = "Europe/Berlin"
    allowed_domains = factory.LazyFunction(lambda: ["shop.example"])
    default_landing_url = "https://shop.example/"
