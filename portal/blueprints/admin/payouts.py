"""Operator console: payout batches (settle, approve, export, record payments)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateField, StringField
from wtforms.validators import DataRequired, Length

from portal.blueprints.admin import bp
from portal.extensions import db
from portal.forms import ConfirmForm, TextAreaField
from portal.models import BatchStatus, PayoutBatch, PayoutItem
from portal.models.types import utcnow
from portal.security import operator_required
from portal.services import payouts, schedule
from portal.services.audit import record_event
from portal.services.program import get_program
from portal.views import committing


class PaymentForm(FlaskForm):
    reference = StringField(
        _l("Payment reference"),
        validators=[DataRequired(_l("Enter the payment reference.")), Length(max=128)],
        description=_l("The transfer or PayPal batch id the partner can look up."),
    )
    paid_on = DateField(_l("Paid on"), validators=[DataRequired(_l("Enter the date it was paid."))])


class FailureForm(FlaskForm):
    reason = TextAreaField(
        _l("Why the payment failed"),
        validators=[DataRequired(_l("Say why the payment failed.")), Length(max=1000)],
    )


@bp.get("/payouts")
@operator_required
def list_batches():
    page = db.paginate(
        sa.select(PayoutBatch).order_by(PayoutBatch.created_at.desc(), PayoutBatch.id.desc()),
        per_page=25,
        error_out=False,
    )
    program = get_program()
    return render_template(
        "admin/payouts.html",
        page=page,
        program=program,
        today=schedule.local_today(program, utcnow()),
        overdue_days=payouts.overdue_days,
        summaries=payouts.batch_summaries([batch.id for batch in page.items]),
        confirm_form=ConfirmForm(formdata=None),
    )


@bp.post("/payouts/settle")
@operator_required
def run_settlement():
    if ConfirmForm().validate_on_submit():
        with committing(write=True) as done:
            batch, created = payouts.settle(get_program(), actor=current_user)
        if done and batch is None:
            flash(_("Nobody has reached the minimum payout; balances carry over."), "info")
        elif done and created:
            flash(_("Payout batch for %(date)s built.", date=batch.period_end), "success")
            return redirect(url_for("admin.show_batch", batch_id=batch.id))
        elif done:
            flash(_("The batch for %(date)s already exists; nothing changed.", date=batch.period_end), "info")
            return redirect(url_for("admin.show_batch", batch_id=batch.id))
    return redirect(url_for("admin.list_batches"))


BATCH_ITEMS_PER_PAGE = 100


def _batch_page(
    batch: PayoutBatch, payment_form=None, failure_form=None, failed_item=None, status: int = 200
):
    """The batch page. ``failed_item`` is ``(item_id, action, form)`` when one payment's own form
    was refused: its errors and typed values go back into that row only, never into the
    batch-wide form (which would then offer one partner's reference for everybody)."""
    # A batch has one item per partner (10,000 and more): the table pages, the figures above
    # it are over the whole batch.
    items = db.paginate(
        payouts.batch_items_query(batch),
        per_page=BATCH_ITEMS_PER_PAGE,
        max_per_page=BATCH_ITEMS_PER_PAGE,
        error_out=False,
    )
    # The payment date the operator most likely means: today where the program keeps its books.
    today = schedule.local_today(get_program(), utcnow())
    return (
        render_template(
            "admin/payout_batch.html",
            batch=batch,
            items=items,
            summary=payouts.batch_summary(batch),
            confirm_form=ConfirmForm(formdata=None),
            payment_form=payment_form or PaymentForm(formdata=None, paid_on=today),
            failure_form=failure_form or FailureForm(formdata=None),
            failed_item=failed_item,
            today=today,
            overdue_days=payouts.overdue_days,
        ),
        status,
    )


@bp.get("/payouts/<int:batch_id>")
@operator_required
def show_batch(batch_id: int):
    return _batch_page(db.get_or_404(PayoutBatch, batch_id))


@bp.post("/payouts/<int:batch_id>/approve")
@operator_required
def approve_batch(batch_id: int):
    batch = db.get_or_404(PayoutBatch, batch_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            payouts.approve_batch(batch, current_user)
        if done and batch.status == BatchStatus.CLOSED:
            flash(
                _(
                    "Batch approved and closed: there is nothing in it to pay. "
                    "The held balances carry over to the next payout."
                ),
                "success",
            )
        elif done:
            flash(_("Batch approved. Export the payment file or record payments."), "success")
    return redirect(url_for("admin.show_batch", batch_id=batch.id))


@bp.get("/payouts/<int:batch_id>/export.<any(csv, paypal):kind>")
@operator_required
def export_batch(batch_id: int, kind: str):
    batch = db.get_or_404(PayoutBatch, batch_id)
    with committing() as done:
        body = payouts.export_paypal(batch) if kind == "paypal" else payouts.export_csv(batch)
        record_event(current_user, "payout.batch_exported", "payout_batch", batch.id, kind=kind)
    if not done:
        return redirect(url_for("admin.show_batch", batch_id=batch.id))

    name = f"payout-{batch.period_end.isoformat()}-{batch.id}-{kind}.csv"
    return Response(
        body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _payment_action(batch_id: int, item_id: int | None, action: str):
    batch = db.get_or_404(PayoutBatch, batch_id)
    item = None
    if item_id is not None:
        item = db.session.get(PayoutItem, item_id)
        if item is None or item.batch_id != batch.id:
            abort(404)
    form = FailureForm() if action == "failed" else PaymentForm()
    if form.validate_on_submit():
        with committing(form) as done:
            if action == "failed":
                payouts.mark_item_failed(item, current_user, form.reason.data)
            elif item is None:
                payouts.mark_batch_paid(batch, current_user, form.reference.data, form.paid_on.data)
            else:
                payouts.mark_item_paid(item, current_user, form.reference.data, form.paid_on.data)
        if done:
            flash(_("Recorded."), "success")
            return redirect(url_for("admin.show_batch", batch_id=batch.id))
    forms = {"payment_form": form} if item is None else {"failed_item": (item.id, action, form)}
    if form.errors or form.form_errors:
        flash(
            _(
                "Not recorded: %(why)s",
                why=" ".join(str(e) for errs in form.errors.values() for e in errs)
                or " ".join(form.form_errors),
            ),
            "error",
        )
    return _batch_page(batch, status=422, **forms)


@bp.post("/payouts/<int:batch_id>/items/<int:item_id>/release")
@operator_required
def release_item(batch_id: int, item_id: int):
    """Release an item held because the partner's payout details changed (batch in review)."""
    batch = db.get_or_404(PayoutBatch, batch_id)
    item = db.session.get(PayoutItem, item_id)
    if item is None or item.batch_id != batch.id:
        abort(404)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            payouts.release_details_hold(item, current_user, get_program())
        if done:
            flash(_("Released: this batch pays it, to the partner's new payout details."), "success")
    return redirect(url_for("admin.show_batch", batch_id=batch.id))


@bp.post("/payouts/<int:batch_id>/paid")
@operator_required
def mark_batch_paid(batch_id: int):
    return _payment_action(batch_id, None, "paid")


@bp.post("/payouts/<int:batch_id>/items/<int:item_id>/<any(paid, failed):action>")
@operator_required
def mark_item(batch_id: int, item_id: int, action: str):
    return _payment_action(batch_id, item_id, action)
