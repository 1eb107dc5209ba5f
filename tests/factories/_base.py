"""The factory_boy base every model factory here shares: the test's session, flushed."""

from __future__ import annotations

from factory.alchemy import SQLAlchemyModelFactory

from portal.extensions import db


class ModelFactory(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "flush"
