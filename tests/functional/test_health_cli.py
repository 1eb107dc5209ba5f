"""``/healthz`` and the ``flask portal`` commands."""

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.models import Click, Creative, Partner, PartnerDailyStat, PartnerStatus, Program, Role, User
from portal.services import rollups
from tests.conftest import free_port


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


@pytest.mark.redis
def test_healthz_reports_redis_when_configured(database_url, redis_url, db):
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, REDIS_URL=redis_url)
    response = app.test_client().get("/healthz")
    assert response.get_json() == {"status": "ok", "database": "ok", "redis": "ok"}
    with app.app_context():
        from portal.extensions import db as _db

        _db.engine.dispose()


def test_healthz_is_degraded_not_failing_when_redis_is_down(database_url, db):
    app = create_app(
        TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    for path in ("/healthz", "/readyz"):
        response = app.test_client().get(path)
        assert response.status_code == 200
        assert response.get_json() == {"status": "degraded", "database": "ok", "redis": "degraded"}
    with app.app_context():
        from portal.extensions import db as _db

        _db.engine.dispose()


def test_healthz_fails_when_the_database_is_unreachable(tmp_path):
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing-dir/x.db")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "error", "database": "error"}
    live = app.test_client().get("/livez")
    assert (live.status_code, live.get_json()) == (200, {"status": "ok"})


def test_demo_seeds_once(app, runner, db):
    result = runner.invoke(args=["portal", "demo"])
    assert result.exit_code == 0, result.output
    assert "Demo program seeded" in result.output
    users = {u.email: u for u in db.session.scalars(sa.select(User))}
    assert users["admin@example.com"].role == Role.ADMIN
    assert users["manager@example.com"].role == Role.MANAGER
    demo = db.session.scalars(sa.select(Partner).where(Partner.ref_code == "demo")).one()
    assert demo.user.email == "partner@example.com"
    assert demo.status == PartnerStatus.APPROVED
    assert users["admin@example.com"].check_password("portal-demo")
    statuses = set(db.session.scalars(sa.select(Partner.status)))
    assert statuses == set(PartnerStatus)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Partner)) >= 30
    program = db.session.scalars(sa.select(Program)).one()
    assert program.allowed_domains and program.default_landing_url
    library = db.session.scalars(sa.select(Creative).where(Creative.status == "published")).unique().all()
    assert {c.kind for c in library} == {"banner", "text", "landing", "email", "video"}
    banners = [c for c in library if c.kind == "banner"]
    assert all(app.extensions["storage"].exists(c.current.file_key) for c in banners)
    from portal.models import Campaign, LadderStep, PrivateDeal, Tier
    from portal.models.types import utcnow

    assert list(db.session.scalars(sa.select(Tier.name).order_by(Tier.rank))) == ["Bronze", "Silver", "Gold"]
    now = utcnow()
    assert (
        db.session.scalar(sa.select(sa.func.count()).where(Campaign.starts_at <= now, Campaign.ends_at > now))
        == 1
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LadderStep)) == 2
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PrivateDeal)) == 1

    again = runner.invoke(args=["portal", "demo"])
    assert again.exit_code == 0
    assert "already has users" in again.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Program)) == 1


def test_create_user_asks_for_the_password(runner, db):
    result = runner.invoke(
        args=["portal", "create-user", "Boss@Example.org", "--role", "admin"],
        input="a solid pass phrase\na solid pass phrase\n",
    )
    assert result.exit_code == 0, result.output
    user = db.session.scalars(sa.select(User).where(User.email == "boss@example.org")).one()
    assert user.is_admin and user.check_password("a solid pass phrase")


def test_create_user_refuses_weak_password_and_duplicates(runner, db):
    weak = runner.invoke(
        args=["portal", "create-user", "a@example.org", "--role", "manager"], input="short\nshort\n"
    )
    assert weak.exit_code != 0
    assert "at least 10 characters" in weak.output
    runner.invoke(
        args=["portal", "create-user", "a@example.org", "--role", "manager"], input="a good long one\n" * 2
    )
    dup = runner.invoke(
        args=["portal", "create-user", "a@example.org", "--role", "admin"], input="a good long one\n" * 2
    )
    assert dup.exit_code != 0
    assert "already exists" in dup.output


def test_production_refuses_to_start_without_secret_key(monkeypatch):
    from config import ProductionConfig

    monkeypatch.setattr(ProductionConfig, "SECRET_KEY", None)
    with pytest.raises(RuntimeError, match="SECRET_KEY must be set"):
        create_app(ProductionConfig)


def test_production_cookies_are_secure():
    from config import ProductionConfig

    assert ProductionConfig.SESSION_COOKIE_SECURE is True
    assert ProductionConfig.REMEMBER_COOKIE_SECURE is True
    assert ProductionConfig.SESSION_COOKIE_HTTPONLY is True
    assert ProductionConfig.SESSION_COOKIE_SAMESITE == "Lax"


def test_not_found_page_is_in_the_house_style(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)
    assert "<nav" in response.get_data(as_text=True)


def test_server_error_page_rolls_back_and_explains(app, db):
    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    app.config["PROPAGATE_TEST_ERRORS"] = False
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert "Something went wrong" in response.get_data(as_text=True)


def _rollup_rows(db) -> dict[str, list[tuple]]:
    """Every counter row of every grain (the trend cache aside), in key order."""
    rows = {}
    for grain in rollups.GRAINS:
        query = sa.select(grain.table).order_by(*grain.table.primary_key)
        rows[grain.table.name] = [tuple(row) for row in db.session.execute(query)]
    return rows


def test_rebuild_rollups_recounts_what_the_demo_counted_as_it_went(runner, db):
    assert runner.invoke(args=["portal", "demo"]).exit_code == 0
    counted = _rollup_rows(db)
    partner_days = counted[PartnerDailyStat.__tablename__]
    assert sum(row.clicks for row in db.session.scalars(sa.select(PartnerDailyStat))) > 0
    assert len(partner_days) > 0 and all(counted.values())
    for grain in rollups.GRAINS:  # as after an upgrade: nothing counted yet
        db.session.execute(sa.delete(grain.table))
    db.session.commit()

    clicks = db.session.scalar(sa.select(sa.func.count()).select_from(Click))
    for _ in range(2):  # and again: a rebuild never adds to what is there
        result = runner.invoke(args=["portal", "rebuild-rollups"])
        assert result.exit_code == 0, result.output
        assert f"Rollups rebuilt from {clicks} clicks" in result.output
        db.session.expire_all()
        assert _rollup_rows(db) == counted
