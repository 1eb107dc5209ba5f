"""``portal.views.committing``: the one way a view commits, rolls back and shows a refusal."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import get_flashed_messages
from flask_wtf import FlaskForm
from wtforms import StringField

from portal import views
from portal.errors import DomainError, InvalidTransition
from portal.models import Tag
from portal.views import committing


class _TagForm(FlaskForm):
    class Meta:
        csrf = False

    name = StringField()


def _tags(db) -> list[str]:
    return list(db.session.scalars(sa.select(Tag.name).order_by(Tag.name)))


def _write(db, name: str) -> None:
    db.session.add(Tag(name=name))
    db.session.flush()


@pytest.fixture
def request_ctx(app, db):
    with app.test_request_context("/", method="POST"):
        yield


def test_a_block_that_succeeds_commits_once(db, request_ctx):
    with committing() as done:
        _write(db, "kept")
    assert done and done.refusal is None
    db.session.rollback()  # nothing left to roll back: the block was committed
    assert _tags(db) == ["kept"]
    assert get_flashed_messages() == []


def test_a_refusal_rolls_back_and_lands_beside_its_field(db, request_ctx):
    form = _TagForm(formdata=None)
    with committing(form) as done:
        _write(db, "dropped")
        raise DomainError("That name is taken.", field="name")
    assert not done
    assert done.refusal.message == "That name is taken."
    assert form.name.errors == ["That name is taken."]
    assert _tags(db) == []
    assert get_flashed_messages() == []  # a form shows it; no flash on top


def test_a_refusal_without_a_field_goes_above_the_form(db, request_ctx):
    form = _TagForm(formdata=None)
    with committing(form) as done:
        raise InvalidTransition("Already approved.")
    assert not done
    assert form.form_errors == ["Already approved."]


def test_a_refusal_without_a_form_is_flashed(db, request_ctx):
    with committing() as done:
        _write(db, "dropped")
        raise InvalidTransition("Already paid.")
    assert not done
    assert get_flashed_messages(with_categories=True) == [("error", "Already paid.")]
    assert _tags(db) == []


def test_a_view_may_word_the_flash_itself(db, request_ctx):
    with committing(flash_refusal=False) as done:
        raise DomainError("no")
    assert done.refusal.message == "no"
    assert get_flashed_messages() == []


def test_a_form_refusal_may_be_flashed_too(db, request_ctx):
    form = _TagForm(formdata=None)
    with committing(form, flash_refusal=True):
        raise DomainError("Confirm first.")
    assert form.form_errors == ["Confirm first."]
    assert get_flashed_messages() == ["Confirm first."]


def test_a_refusal_that_must_leave_a_trace_is_committed(db, request_ctx):
    """A wrong two-factor code counts like one at sign-in: the count survives the refusal."""
    form = _TagForm(formdata=None)
    with committing(form, keep_refused=True) as done:
        _write(db, "counted")
        raise DomainError("That code is not right.", field="name")
    assert not done
    db.session.rollback()
    assert _tags(db) == ["counted"]
    assert form.name.errors == ["That code is not right."]


def test_any_other_error_rolls_back_and_propagates(db, request_ctx):
    with pytest.raises(RuntimeError), committing():
        _write(db, "dropped")
        raise RuntimeError("storage down")
    assert _tags(db) == []


def test_every_block_takes_the_write_lock_before_it_runs(db, request_ctx, monkeypatch):
    """Every block writes: it becomes a writer first (on SQLite a transaction that only read
    the signed-in user would otherwise fail at once when another writer committed meanwhile)."""
    order = []
    monkeypatch.setattr(views, "begin_write", lambda session: order.append("begin_write"))
    with committing(write=True):
        order.append("block")
    with committing():
        order.append("other block")
    assert order == ["begin_write", "block", "begin_write", "other block"]
