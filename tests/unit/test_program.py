"""Program settings and the allowed-destination rule the redirect relies on."""

import pytest
import sqlalchemy as sa

from portal.errors import InvalidSetting
from portal.models import AuditEvent, Role
from portal.services.program import (
    ProgramSettings,
    get_program,
    is_allowed_destination,
    normalise_domain,
    settings_of,
    update_program_settings,
)
from tests.factories import UserFactory

DOMAINS = ["shop.example", "brand.example"]


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/",
        "http://shop.example/path?x=1",
        "https://www.shop.example/deals",
        "https://SHOP.EXAMPLE/",
        "https://brand.example:8443/x",
    ],
)
def test_allowed_destinations(url):
    assert is_allowed_destination(url, DOMAINS)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "https://shop.example.evil.example/",
        "https://evilshop.example/",
        "//evil.example/",
        "/relative/path",
        "javascript:alert(1)",
        "https://shop.example@evil.example/",
        "https://user:pw@shop.example/",
        "ftp://shop.example/",
        "https://shop.example:99999/",
        "https://[::1/",
        "",
        "https:///shop.example",
        "https://evil.example\\@shop.example/",
    ],
)
def test_refused_destinations(url):
    assert not is_allowed_destination(url, DOMAINS)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Shop.Example", "shop.example"),
        ("https://shop.example/", "shop.example"),
        ("*.brand.example", "brand.example"),
    ],
)
def test_normalise_domain(raw, clean):
    assert normalise_domain(raw) == clean


@pytest.mark.parametrize("raw", ["localhost", "not a domain", "-bad-.example", "a..b"])
def test_normalise_domain_refuses(app, raw):
    with app.app_context(), pytest.raises(InvalidSetting):
        normalise_domain(raw)


def settings(**overrides) -> ProgramSettings:
    data = {
        "name": "Outdoor",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "cookie_window_days": 45,
        "hold_period_days": 14,
        "allowed_domains": ["Shop.example", "shop.example", "brand.example"],
        "default_landing_url": "https://shop.example/start",
        "minimum_payout_minor": 2500,
        "payout_schedule": "weekly",
        "payout_day": 4,
        "commission_type": "flat",
        "commission_percent_bp": 1000,
        "commission_flat_minor": 500,
    }
    data.update(overrides)
    return ProgramSettings(**data)


def test_a_fresh_install_gets_defaults(db):
    program = get_program()
    assert program.cookie_window_days == 30
    assert program.hold_period_days == 30
    assert program.minimum_payout_minor == 5000
    assert (program.payout_schedule, program.payout_day) == ("monthly", 15)
    assert get_program() is program


def test_update_settings_applies_and_audits(db):
    admin = UserFactory(role=Role.ADMIN)
    program = get_program()
    update_program_settings(program, admin, settings())
    assert settings_of(program) == settings(allowed_domains=["shop.example", "brand.example"])
    event = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "program.settings_changed")
    ).one()
    assert event.data["changes"]["currency"] == ["USD", "EUR"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"currency": "XYZ"}, "currency"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"allowed_domains": []}, "allowed_domains"),
        ({"allowed_domains": ["not a domain"]}, "allowed_domains"),
        ({"default_landing_url": "https://elsewhere.example/"}, "default_landing_url"),
        ({"payout_schedule": "monthly", "payout_day": 31}, "payout_day"),
        ({"payout_schedule": "weekly", "payout_day": 9}, "payout_day"),
    ],
)
def test_invalid_settings_change_nothing(db, overrides, field):
    admin = UserFactory(role=Role.ADMIN)
    program = get_program()
    before = settings_of(program)
    with pytest.raises(InvalidSetting) as error:
        update_program_settings(program, admin, settings(**overrides))
    assert error.value.field == field
    assert settings_of(program) == before
