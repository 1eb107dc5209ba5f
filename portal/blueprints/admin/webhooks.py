"""Operator console: outgoing webhook endpoints — add, change, rotate the secret, test, and
the delivery log with "resend". Admins only: an endpoint's secret signs what the brand trusts."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.blueprints.admin import bp
from portal.blueprints.admin.webhooks_forms import WebhookForm
from portal.extensions import db
from portal.forms import ConfirmForm
from portal.models import WebhookDelivery, WebhookEndpoint
from portal.security import admin_required
from portal.services import events, outbox, webhooks
from portal.views import committing


def _page(form: WebhookForm, new_secret: str | None = None, status: int = 200):
    return (
        render_template(
            "admin/webhooks/index.html",
            form=form,
            endpoints=webhooks.endpoints(),
            new_secret=new_secret,
            waiting=outbox.waiting("webhooks"),
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.route("/webhooks", methods=["GET", "POST"])
@admin_required
def list_webhooks():
    form = WebhookForm()
    if not form.validate_on_submit():
        return _page(form, status=422 if request.method == "POST" else 200)
    with committing(form) as done:
        endpoint, secret = webhooks.create_endpoint(
            form.url.data, form.event_types.data, current_user, form.description.data
        )
        endpoint.enabled = bool(form.enabled.data)
    if not done:
        return _page(form, status=422)
    return _page(WebhookForm(formdata=None), new_secret=secret)


def _detail(endpoint: WebhookEndpoint, form: WebhookForm, new_secret: str | None = None, status: int = 200):
    return (
        render_template(
            "admin/webhooks/detail.html",
            endpoint=endpoint,
            form=form,
            new_secret=new_secret,
            deliveries=webhooks.deliveries_of(endpoint),
            confirm_form=ConfirmForm(formdata=None),
            event_types=events.TYPES,
        ),
        status,
    )


@bp.route("/webhooks/<int:endpoint_id>", methods=["GET", "POST"])
@admin_required
def show_webhook(endpoint_id: int):
    endpoint = db.get_or_404(WebhookEndpoint, endpoint_id)
    form = WebhookForm(obj=endpoint)
    if not form.validate_on_submit():
        return _detail(endpoint, form, status=422 if request.method == "POST" else 200)
    with committing(form) as done:
        webhooks.update_endpoint(
            endpoint,
            current_user,
            url=form.url.data,
            event_types=form.event_types.data,
            enabled=bool(form.enabled.data),
            description=form.description.data,
        )
    if not done:
        return _detail(endpoint, form, status=422)
    flash(_("Endpoint saved."), "success")
    return redirect(url_for("admin.show_webhook", endpoint_id=endpoint.id))


@bp.post("/webhooks/<int:endpoint_id>/rotate")
@admin_required
def rotate_webhook_secret(endpoint_id: int):
    endpoint = db.get_or_404(WebhookEndpoint, endpoint_id)
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("admin.show_webhook", endpoint_id=endpoint.id))
    with committing():
        secret = webhooks.rotate_secret(endpoint, current_user)
    return _detail(endpoint, WebhookForm(formdata=None, obj=endpoint), new_secret=secret)


@bp.post("/webhooks/<int:endpoint_id>/test")
@admin_required
def test_webhook(endpoint_id: int):
    endpoint = db.get_or_404(WebhookEndpoint, endpoint_id)
    if ConfirmForm().validate_on_submit():
        delivery = webhooks.send_test(endpoint, current_user)
        if delivery.status == "delivered":
            flash(_("The test event was delivered."), "success")
        else:
            last = delivery.attempt_log[-1] if delivery.attempt_log else None
            flash(
                _(
                    "The test event was not delivered: %(why)s",
                    why=(last.error or f"HTTP {last.status_code}") if last else "—",
                ),
                "error",
            )
    return redirect(url_for("admin.show_webhook", endpoint_id=endpoint.id))


@bp.post("/webhooks/<int:endpoint_id>/delete")
@admin_required
def delete_webhook(endpoint_id: int):
    endpoint = db.get_or_404(WebhookEndpoint, endpoint_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            webhooks.delete_endpoint(endpoint, current_user)
        if done:
            flash(_("Endpoint deleted."), "success")
    return redirect(url_for("admin.list_webhooks"))


@bp.post("/webhooks/deliveries/<int:delivery_id>/resend")
@admin_required
def resend_webhook(delivery_id: int):
    delivery = db.get_or_404(WebhookDelivery, delivery_id)
    if ConfirmForm().validate_on_submit():
        delivery = webhooks.resend(delivery, current_user)
        if delivery.status == "delivered":
            flash(_("Delivered again."), "success")
        else:
            flash(_("Sent again; the endpoint did not accept it."), "error")
    return redirect(url_for("admin.show_webhook", endpoint_id=delivery.endpoint_id))
