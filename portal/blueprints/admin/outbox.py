"""Operator console: the e-mail outbox — what is waiting to go out, and why."""

from __future__ import annotations

from flask import current_app, render_template

from portal.blueprints.admin import bp
from portal.models.types import utcnow
from portal.security import operator_required
from portal.services import delivery


@bp.get("/outbox")
@operator_required
def show_outbox():
    now = utcnow()
    waiting = delivery.outbox_waiting()
    return render_template(
        "admin/outbox.html",
        waiting=[(email, delivery.outbox_state(email, now)) for email in waiting],
        counts=delivery.outbox_counts(now),
        mail_configured=delivery.mail_configured(),
        mail_timeout=current_app.config["MAIL_TIMEOUT"],
        give_up_hours=int(delivery.give_up_after().total_seconds() // 3600),
        max_delay_hours=int(current_app.config["MAIL_RETRY_MAX_SECONDS"] // 3600),
    )
