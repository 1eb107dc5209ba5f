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
    from portal.demo import DEMO_PASSWORD, seed_demo

    if db.session.scalar(sa.select(sa.func.count()).select_from(User)):
        click.echo("The database already has users; the demo program was not added.")
        return
    summary = seed_demo()
    db.session.commit()
    click.echo(f"Demo program seeded: {summary}.")
    click.echo(
        f"Demo logins (password {DEMO_PASSWORD}): admin@example.com, manager@example.com, partner@example.com"
    )


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


@portal_cli.command("run-triggers")
def run_triggers_command() -> None:
    """Publish due announcements, send wake-ups and waiting e-mails (idempotent; run from cron)."""
    from portal.jobs import run_triggers

    report = run_triggers()
    click.echo(f"run-triggers: {report}.")
