"""The click path under faults, against a real gunicorn portal (2 workers) and a throwaway
PostgreSQL cluster: every click the redirect answered is stored, exactly once."""

# ruff: noqa: F401, F811 - the fixtures are imported from _click_services and named as arguments

from __future__ import annotations

import time

import pytest
import requests

from tests.faults._click_services import (
    BROWSER,
    Flood,
    Portal,
    clear_clicks,
    click_id_of,
    click_postgres,
    click_seed,
    portal_env,
    spool_lines,
    stored_click_ids,
    wait_for,
)

pytestmark = pytest.mark.faults


@pytest.fixture
def node(click_postgres, click_seed, tmp_path):
    clear_clicks(click_postgres.url)
    portal = Portal(portal_env(click_postgres.url, None, tmp_path), tmp_path / "gunicorn.log")
    portal.start()
    yield portal
    portal.kill()


def _warm(portal: Portal) -> set[str]:
    """Both workers learn the link (the redirect's cache is what it has in an outage)."""
    return {
        click_id_of(
            requests.get(f"{portal.url}/go/shoes", headers=BROWSER, allow_redirects=False, timeout=10)
        )
        for _ in range(60)
    }


def _restarted_and_replayed(portal: Portal, database_url: str, tmp_path) -> set[str]:
    portal.start()  # same CLICK_SPOOL_DIR: each worker replays what is left there
    wait_for(lambda: spool_lines(tmp_path / "click-spool") == 0, 60, "the click spool replayed")
    return stored_click_ids(database_url)


def test_postgres_stopped_during_a_click_flood_then_sigterm_loses_no_answered_click(
    node,
    click_postgres,
    tmp_path,
):
    warm = _warm(node)
    with Flood(node.url) as flood:
        wait_for(lambda: flood.count() > 300, 30, "clicks before the outage")
        click_postgres.stop()
        during = flood.count()
        wait_for(lambda: flood.count() > during + 1000, 60, "clicks answered during the outage")
        flood.stop()
        node.stop()  # SIGTERM while the database is still down
    assert flood.statuses == {302: flood.sent - flood.errors}, "every click answered with a redirect"
    assert flood.errors == 0
    answered = flood.answered | warm
    assert spool_lines(tmp_path / "click-spool") >= len(flood.answered) - during
    click_postgres.start()
    stored = _restarted_and_replayed(node, click_postgres.url, tmp_path)
    print(
        f"\nPostgreSQL stopped, then SIGTERM: sent {flood.sent}, answered {len(answered)} "
        f"({len(flood.answered) - during} during the outage), stored {len(stored)}, "
        f"lost {len(answered - stored)}"
    )
    assert len(answered) == len(stored)
    assert answered == stored
    assert "Traceback" not in node.log()


def test_sigkill_mid_flood_loses_no_answered_click(node, click_postgres, tmp_path):
    warm = _warm(node)
    with Flood(node.url) as flood:
        wait_for(lambda: flood.count() > 1500, 60, "clicks before the kill")
        node.kill()  # master and both workers, at once
        flood.stop()
    answered = flood.answered | warm
    stored = _restarted_and_replayed(node, click_postgres.url, tmp_path)
    print(
        f"\nSIGKILL mid-flood: sent {flood.sent}, answered {len(answered)}, no answer {flood.errors}, "
        f"stored {len(stored)}, lost {len(answered - stored)}"
    )
    assert answered <= stored, f"{len(answered - stored)} answered clicks lost"
    # A click written to the spool whose answer the kill cut off is stored without having been
    # answered: at most one per request in flight.
    assert len(stored - answered) <= 8


def test_a_sale_naming_a_click_answered_a_moment_ago_is_attributed(node, click_seed):
    attributed = 0
    for n in range(5):
        click = requests.get(f"{node.url}/go/shoes", headers=BROWSER, allow_redirects=False, timeout=10)
        sale = requests.post(
            f"{node.url}/api/v1/conversions",
            json={
                "transaction_id": f"fresh-{n}-{time.time_ns()}",
                "amount": "20.00",
                "currency": "USD",
                "click_id": click_id_of(click),
            },
            headers={"Authorization": f"Bearer {click_seed['api_key']}"},
            timeout=10,
        )
        assert sale.status_code == 201, sale.text
        attributed += sale.json()["conversion"]["attributed_by"] == "click_id"
    assert attributed == 5


def test_postgres_frozen_during_a_click_flood_loses_no_answered_click(node, click_postgres, tmp_path):
    warm = _warm(node)
    with Flood(node.url) as flood:
        wait_for(lambda: flood.count() > 300, 30, "clicks before the freeze")
        click_postgres.freeze()
        try:
            before = flood.count()
            frozen_at = time.monotonic()
            time.sleep(8)
            during = flood.count() - before
        finally:
            click_postgres.thaw()
            thawed = time.monotonic()
        flood.stop()
    answered = flood.answered | warm
    # Stored == answered once the writer has caught up (no restart: the same workers write).
    recovery = wait_for(
        lambda: len(stored_click_ids(click_postgres.url)) >= len(answered),
        60,
        "the clicks stored after the thaw",
    )
    stored = stored_click_ids(click_postgres.url)
    print(
        f"\nFIGURE | PostgreSQL frozen {thawed - frozen_at:.0f} s (clicks) | sent {flood.sent + 60} | "
        f"answered {len(answered)} | stored {len(stored)} | lost {len(answered - stored)} | "
        f"recovery {recovery:.1f} s"
    )
    print(f"clicks answered while PostgreSQL was frozen: {during}")
    assert flood.errors == 0
    assert flood.statuses == {302: flood.sent}, "every click answered with a redirect"
    assert during > 100, "the redirect kept answering while the database hung"
    assert answered == stored
    assert "Traceback" not in node.log()
