"""The hot paths' per-process caches: a change committed by any process reaches every other
within TRACKING_CACHE_CHECK_SECONDS, and only a change to what they cache costs a refresh."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app, lookups
from portal.extensions import db
from portal.models import Link, LookupVersion, Partner, PartnerStatus
from portal.models.types import utcnow
from portal.services import api_keys, clicks
from portal.services.links import set_link_active
from tests.conftest import migrate_database
from tests.factories import PartnerFactory, ProgramFactory, UserFactory


def version() -> int:
    return db.session.scalar(sa.select(LookupVersion.version).where(LookupVersion.id == 1))


@pytest.fixture
def shared_url(tmp_path):
    """One SQLite file two apps (standing in for two gunicorn workers) share."""
    url = f"sqlite:///{tmp_path}/shared.db"
    migrate_database(url)
    return url


def worker(url, check_seconds: float):
    return create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=url, TRACKING_CACHE_CHECK_SECONDS=check_seconds)


@pytest.fixture
def seeded(shared_url):
    setup = worker(shared_url, 0)
    with setup.app_context():
        ProgramFactory()
        partner = PartnerFactory(ref_code="pat")
        db.session.flush()
        link = Link(partner_id=partner.id, code="spring", label="Spring", channel="seo")
        db.session.add(link)
        _key, plain = api_keys.create_api_key("shop", None)
        db.session.commit()
        ids = {"partner": partner.id, "link": link.id, "key": plain}
        db.engine.dispose()
    return ids


def test_a_change_committed_by_another_worker_is_seen_after_the_check(shared_url, seeded):
    reader = worker(shared_url, 3600)  # reads the counter once, then only when told
    writer = worker(shared_url, 0)
    with reader.app_context():
        assert clicks.resolve("spring").link_active
    with writer.app_context():
        set_link_active(db.session.get(Link, seeded["link"]), False)
        db.session.commit()
    with reader.app_context():
        assert clicks.resolve("spring").link_active  # cached: the counter is not read again yet
        reader.extensions["lookups"].check_every = 0  # the check interval has passed
        assert not clicks.resolve("spring").link_active
    for app in (reader, writer):
        with app.app_context():
            db.engine.dispose()


def test_a_revoked_key_stops_working_in_every_worker(shared_url, seeded):
    api = worker(shared_url, 0)
    admin = worker(shared_url, 0)
    with api.app_context():
        assert api_keys.authenticate_api_key(seeded["key"]) is not None
    with admin.app_context():
        key = db.session.scalars(sa.select(api_keys.ApiKey)).one()
        api_keys.revoke_api_key(key, UserFactory(role="admin"))
        db.session.commit()
    with api.app_context():
        assert api_keys.authenticate_api_key(seeded["key"]) is None
    for app in (api, admin):
        with app.app_context():
            db.engine.dispose()


def test_the_worker_that_made_a_change_sees_it_at_once(shared_url, seeded):
    app = worker(shared_url, 3600)
    with app.app_context():
        assert clicks.resolve("pat").partner_attributes
        partner = db.session.get(Partner, seeded["partner"])
        partner.status = PartnerStatus.SUSPENDED
        db.session.commit()
        assert not clicks.resolve("pat").partner_attributes
        db.engine.dispose()


def test_a_first_tier_made_in_another_worker_reaches_the_rewards_engine(shared_url, seeded):
    """The engine skips the queries for kinds of rule the program has none of; the first tier
    (or campaign, deal, product rate) saved anywhere moves the counter, so every worker's
    next sale after the check earns by it."""
    from portal.models import Tier
    from portal.services import rewards

    api = worker(shared_url, 0)
    admin = worker(shared_url, 0)
    with api.app_context():
        assert rewards.rules_in_use() == rewards.RulesInUse(False, False, False, False)
    with admin.app_context():
        db.session.add(Tier(name="Gold", rank=1, threshold_metric="conversions", threshold_value=1))
        db.session.commit()
    with api.app_context():
        assert rewards.rules_in_use().tiers
    for app in (api, admin):
        with app.app_context():
            db.engine.dispose()


def test_rules_in_use_is_read_afresh_while_this_transaction_adds_one(db, program):
    from portal.models import ProductRate
    from portal.services import rewards

    assert not rewards.rules_in_use().product_rates
    db.session.add(ProductRate(product_id="tent-2p", rate_type="percent", rate_percent_bp=1500))
    assert rewards.rules_in_use().product_rates  # not the cached answer


def test_only_changes_to_what_is_cached_move_the_counter(db, program):
    partner = PartnerFactory()
    db.session.commit()
    before = version()
    partner.website = "https://elsewhere.example"  # not cached anywhere
    db.session.commit()
    assert version() == before
    partner.status = PartnerStatus.SUSPENDED
    db.session.flush()
    partner.ref_code = "renamed"
    db.session.commit()  # two watched changes, two flushes: one step
    assert version() == before + 1
    partner.status = PartnerStatus.APPROVED
    db.session.rollback()
    assert version() == before + 1


def cached_target(code: str):
    """The look-up of ``code`` this process would serve without a query, or ``MISS``."""
    cache = lookups.lookups()
    every = cache.get("targets", None)  # every code at once (clicks.BULK_TARGETS)
    if every is not lookups.MISS and every is not None and every.get(code) is not None:
        return every.get(code)
    return cache.get("target", code)


def test_nothing_is_cached_while_the_transaction_changes_it(db, program):
    partner = PartnerFactory(ref_code="fresh")
    db.session.flush()  # uncommitted: may still roll back
    assert clicks.resolve("fresh") is not None
    assert cached_target("fresh") is lookups.MISS
    db.session.commit()
    assert clicks.resolve("fresh").partner_id == partner.id
    assert cached_target("fresh") is not lookups.MISS


def test_with_more_codes_than_a_bulk_load_takes_each_is_cached_on_its_own(db, program, monkeypatch):
    monkeypatch.setattr(clicks, "BULK_TARGETS", 1)
    first, second = PartnerFactory(ref_code="first"), PartnerFactory(ref_code="second")
    db.session.commit()
    assert clicks.resolve("second").partner_id == second.id
    assert clicks.resolve("first").partner_id == first.id
    assert lookups.lookups().get("targets", None) is None  # too many: not loaded at once
    assert lookups.lookups().get("target", "first").partner_id == first.id


_TARGET = clicks.Target(
    code="pat",
    partner_id=1,
    ref_code="pat",
    link_id=3,
    destination_url=None,
    channel="other",
    campaign=None,
    sub_id=None,
    link_active=True,
    partner_attributes=True,
)


def test_the_location_is_what_with_params_would_build(db):
    for url in (
        "https://shop.example/",
        "https://shop.example/c/bags?sort=new&ref=old#reviews",
        "https://shop.example/p?q=a+b&click_id=stale",
    ):
        head, tail = clicks.location_parts(url, "ref", "pat", "click_id")
        click_id = clicks.new_click_id(_TARGET, utcnow())
        assert head + click_id + tail == clicks.with_params(url, {"ref": "pat", "click_id": click_id})


def test_click_ids_are_signed_url_safe_and_do_not_repeat(app):
    now = utcnow()
    with app.app_context():
        ids = [clicks.new_click_id(_TARGET, now) for _ in range(5000)]  # all in the same millisecond
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"k[A-Za-z0-9_-]{31}", i) for i in ids)
    assert all(clicks.read_click_id(i, app.config["SECRET_KEY"]).link_id == 3 for i in ids)


def test_the_redirect_skips_the_app_wide_request_hooks(app, client, db, program):
    PartnerFactory(ref_code="pat")
    db.session.commit()
    seen = []
    app.before_request(lambda: seen.append("before"))
    app.after_request(lambda response: seen.append("after") or response)
    response = client.get("/go/pat", headers={"User-Agent": "Mozilla/5.0 Chrome/156.0"})
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["ref"] == ["pat"]
    assert seen == []
    assert client.get("/healthz").status_code == 200  # every other endpoint runs them
    assert seen == ["before", "after"]
