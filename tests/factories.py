"""factory_boy factories; they add to the test's session and flush."""

from __future__ import annotations

import factory
from factory.alchemy import SQLAlchemyModelFactory
from werkzeug.security import generate_password_hash

from portal.extensions import db
from portal.models import Partner, PartnerStatus, Program, Role, User

PASSWORD = "correct horse battery"
# Hashing is slow on purpose; the factories share one hash of PASSWORD.
_PASSWORD_HASH = generate_password_hash(PASSWORD)


class _Base(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "flush"


class UserFactory(_Base):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.org")
    name = factory.Faker("name")
    role = Role.MANAGER
    password_hash = _PASSWORD_HASH
    active = True


class PartnerFactory(_Base):
    class Meta:
        model = Partner

    user = factory.SubFactory(UserFactory, role=Role.PARTNER)
    ref_code = factory.Sequence(lambda n: f"ref{n:05d}")
    status = PartnerStatus.APPROVED
    website = factory.Sequence(lambda n: f"https://site{n}.example")
    channels = factory.LazyFunction(lambda: ["seo"])
    promotion_description = "A gear review blog with a loyal audience of hikers."
    country = "US"


class ProgramFactory(_Base):
    class Meta:
        model = Program

    name = "Test Outdoor"
    currency = "USD"
    timezone = "Europe/Berlin"
    allowed_domains = factory.LazyFunction(lambda: ["shop.example"])
    default_landing_url = "https://shop.example/"
