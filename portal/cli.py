"""``flask --app wsgi portal ...`` commands."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from portal.errors import DomainError
from portal.extensions import db
from portal.models import Role, User

portal_cli = AppGroup("portal", help="Partner portal administration.")


@portal_cli.command("demo")
def demo_command() -> None:
    """Seed the demo program into an empty database (does nothing otherwise)."""
    from portal.demo import DEMO_PASSWORD, seed_demo, seed_demo_activity

    if db.session.scalar(sa.select(sa.func.count()).select_from(User)):
        click.echo("The database already has users; the demo program was not added.")
        return
    summary = seed_demo()
    db.session.flush()
    activity = seed_demo_activity()
    db.session.commit()
    click.echo(f"Demo program seeded: {summary}; {activity}.")
    click.echo(
        f"Demo logins (password {DEMO_PASSWORD}): admin@example.com, manager@example.com, partner@example.com"
    )
    # A demo whose books do not add up fails loudly (make run stops here).
    report_ledger(exit_on_violation=True)


@portal_cli.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice([Role.ADMIN.value, Role.MANAGER.value]), required=True)
@click.option("--name", default=None, help="Display name (defaults to the e-mail's local part).")
@click.password_option(prompt="Password", confirmation_prompt=True)
def create_user_command(email: str, role: str, name: str | None, password: str) -> None:
    """Create an operator account (asks for the password)."""
    from portal.services.accounts import create_user

    try:
        user = create_user(email, name or email.split("@")[0], password, Role(role))
    except DomainError as error:
        db.session.rollback()
        raise click.ClickException(error.message) from None
    db.session.commit()
    click.echo(f"Created {user.role} {user.email}.")


@portal_cli.command("reset-two-factor")
@click.argument("email")
def reset_two_factor_command(email: str) -> None:
    """Switch two-factor sign-in off for someone who lost their phone and recovery codes."""
    from portal.services import two_factor
    from portal.services.accounts import find_user_by_email

    user = find_user_by_email(email)
    if user is None:
        raise click.ClickException(f"No account has the e-mail {email}.")
    two_factor.reset(user)
    db.session.commit()
    click.echo(
        f"Two-factor sign-in is off for {user.email}; they sign in with the password and can set it up again."
    )


@portal_cli.command("create-api-key")
@click.argument("name")
def create_api_key_command(name: str) -> None:
    """Create a tracking API key; the key is printed once, on the last line."""
    from portal.services.api_keys import create_api_key

    try:
        key, plain = create_api_key(name, None)
    except DomainError as error:
        db.session.rollback()
        raise click.ClickException(error.message) from None
    db.session.commit()
    click.echo(f"API key {key.name!r} created. Store it now; it is not shown again:")
    click.echo(plain)


def _confirm() -> None:
    from portal.jobs import run_confirm

    click.echo(f"Confirmed {run_confirm()} commission lines.")


@portal_cli.command("confirm-commissions")
def confirm_commissions_command() -> None:
    """Confirm commissions whose hold period has ended (idempotent)."""
    _confirm()


@portal_cli.command("confirm")
def confirm_command() -> None:
    """Same as confirm-commissions (the older name)."""
    _confirm()


@portal_cli.command("close-month")
@click.option("--month", default=None, metavar="YYYY-MM",
              help="The month to close (program time zone). Default: the month that last ended.")  # fmt: skip
def close_month_command(month: str | None) -> None:
    """Write the month's ladder bonuses and evaluate tiers (idempotent; safe to run twice)."""
    from portal.jobs import run_close_month

    try:
        report = run_close_month(month)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"close-month {report}.")


@portal_cli.command("settle")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Settle as if today were this date (program time zone). Default: today.")  # fmt: skip
def settle_command(as_of) -> None:
    """Build the payout batch for the period just closed (idempotent; safe to run twice at once)."""
    from portal.jobs import run_settlement

    batch, created = run_settlement(as_of.date() if as_of else None)
    if batch is None:
        click.echo("Nobody has reached the minimum payout; balances carry over.")
    elif created:
        from portal.services.payouts import batch_summary

        summary = batch_summary(batch)
        click.echo(
            f"Built payout batch {batch.id} for {batch.period_end}: {summary.to_pay} partners to pay, "
            f"{summary.held} held back (no payout details)."
        )
    else:
        click.echo(f"Payout batch {batch.id} for {batch.period_end} already exists; nothing changed.")


@portal_cli.command("check-ledger")
def check_ledger_command() -> None:
    """Check the ledger's invariants; print each violation; exit 1 when there is any (run from cron)."""
    report_ledger(exit_on_violation=True)


def report_ledger(*, exit_on_violation: bool) -> bool:
    """Run ``check_ledger``, print each violation and a summary line; True when the books hold."""
    import time

    from portal.services.ledger import CHECKS, check_ledger, summary

    started = time.perf_counter()
    violations = check_ledger()
    for violation in violations:
        click.echo(str(violation), err=True)
    click.echo(
        f"check-ledger: {summary(violations)} ({len(set(CHECKS))} checks, "
        f"{time.perf_counter() - started:.1f} s)."
    )
    db.session.rollback()
    if violations and exit_on_violation:
        raise SystemExit(1)
    return not violations


@portal_cli.command("run-triggers")
def run_triggers_command() -> None:
    """Publish due announcements, dispatch the event outbox (messages, live events, webhooks),
    send wake-ups and waiting e-mails (idempotent; run from cron)."""
    from portal.jobs import run_triggers

    report = run_triggers()
    click.echo(f"run-triggers: {report}.")


@portal_cli.command("dispatcher")
@click.option(
    "--end-with-parent",
    is_flag=True,
    help="Stop when the process that started it ends (how gunicorn's master starts it).",
)
def dispatcher_command(end_with_parent: bool) -> None:
    """Run the event outbox's dispatcher until stopped (OUTBOX_DISPATCH_MODE=process: the
    web workers leave the automatic messages, live events and webhooks to it)."""
    import os
    import signal
    import threading

    from flask import current_app

    from portal import osthreads
    from portal.services import outbox

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    # The parent that started it (gunicorn's master names itself), else the one it has now.
    parent = int(os.environ.get("PORTAL_DISPATCHER_PARENT") or os.getppid())
    if end_with_parent and osthreads.end_with_parent(signal.SIGTERM) and os.getppid() != parent:
        return  # the parent ended before it could be asked to tell
    app = current_app._get_current_object()
    if not app.config.get("REDIS_URL"):
        raise click.ClickException("the dispatcher needs REDIS_URL: its live events reach pages through it")
    osthreads.name_os_thread("outbox-dispatch")
    if os.environ.get("GUNICORN_SCHEDULING", "batch") == "batch":
        # A batch job by nature, as gunicorn.conf.py puts the workers: its wake-ups then do
        # not preempt a worker's thread that holds its process's GIL (README: Worker scheduling).
        osthreads.batch_scheduling()
    click.echo(f"outbox dispatcher: looking every {app.config['OUTBOX_DISPATCH_DELAY_MS']} ms")
    outbox.follow(app, stop)
    click.echo("outbox dispatcher: stopped")


@portal_cli.command("add-webhook")
@click.argument("url")
@click.option("--events", "event_types", default="", help="Comma-separated event types (default: all).")
@click.option("--description", default=None)
def add_webhook_command(url: str, event_types: str, description: str | None) -> None:
    """Add an outgoing webhook endpoint; its signing secret is printed on the last line, once."""
    from portal.services import webhooks

    try:
        endpoint, secret = webhooks.create_endpoint(url, event_types.split(","), None, description)
    except DomainError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    db.session.commit()
    kinds = ", ".join(endpoint.event_types) or "every event type"
    click.echo(f"Webhook endpoint {endpoint.id} added for {endpoint.url} ({kinds}).")
    click.echo("Its signing secret, shown this once (Standard Webhooks):")
    click.echo(secret)


@portal_cli.command("add-coupon")
@click.argument("code")
@click.option("--partner", "ref_code", required=True, metavar="REF_CODE", help="The partner's ref code.")
def add_coupon_command(code: str, ref_code: str) -> None:
    """Give a partner a coupon code (3-40 of A-Z 0-9 - _, any case); it attributes at once."""
    from portal.services import coupons

    partner = coupons.partner_with_ref(ref_code)
    if partner is None:
        raise click.ClickException(f"No partner has the ref code {ref_code!r}.")
    try:
        coupon = coupons.add_coupon(partner, code, None)
    except DomainError as error:
        db.session.rollback()
        raise click.ClickException(error.message) from None
    db.session.commit()
    click.echo(f"Coupon code {coupon.code} added for partner {partner.ref_code}.")


@portal_cli.command("import-rates")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def import_rates_command(path: str) -> None:
    """Import exchange rates from the European Central Bank's CSV (eurofxref.csv, or
    eurofxref-hist.csv for every day since 1999, or their zip files) and convert the sales
    waiting for one. Days already imported are replaced; converted sales keep their rate."""
    from pathlib import Path

    from portal.database import begin_write
    from portal.services import fx, tracking
    from portal.services.program import get_program

    data = Path(path).read_bytes()
    begin_write(db.session())
    try:
        report = fx.import_ecb(data, None)
        converted = tracking.convert_waiting(get_program())
    except fx.RatesFileError as error:
        db.session.rollback()
        raise click.ClickException(error.message) from None
    db.session.commit()
    skipped = f"; skipped (not an active ISO 4217 currency): {', '.join(sorted(report.skipped_currencies))}"
    click.echo(
        f"Imported {report.rates} rates for {report.days} days "
        f"({report.first_day.isoformat()} to {report.last_day.isoformat()})"
        + (skipped if report.skipped_currencies else "")
        + "."
    )
    waiting = tracking.count_waiting_for_rate()
    click.echo(f"Sales converted that were waiting for a rate: {converted}; still waiting: {waiting}.")


@portal_cli.command("rebuild-rollups")
def rebuild_rollups_command() -> None:
    """Recount the dashboard rollups from the raw clicks, signups and conversions.

    Run it once after upgrading to the release that added them, and after changing
    the program's time zone (until then, past days keep the zone they were counted in).
    Event writers wait while it runs; it is safe to run at any time.
    """
    import time

    from portal.database import begin_write
    from portal.services import rollups

    started = time.perf_counter()
    begin_write(db.session())
    try:
        summary = rollups.rebuild(db.session())
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    click.echo(
        f"Rollups rebuilt from {summary.clicks} clicks, {summary.signups} signups and "
        f"{summary.conversions} conversions: {summary.rows} rows in "
        f"{time.perf_counter() - started:.1f} s."
    )
