"""The loaded app is out of the garbage collector's full rounds (portal/heap.py, issue #20).

The operator dashboard's slow renders were full collections walking every object the
process had loaded; these tests pin the cause's removal, not a time: after start-up, a full
collection visits only what requests made since, and every gunicorn worker freezes its heap.
"""

from __future__ import annotations

import gc
import runpy
import signal
import sys
import types
from pathlib import Path

import pytest

from portal.heap import freeze_startup_heap
from portal.models import Role
from tests.factories import PartnerFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # the rest of the suite runs as before


def test_a_full_collection_walks_what_requests_made_not_the_app(app, client, db, login_as, unfrozen):
    login_as(Role.MANAGER)
    for _ in range(5):
        PartnerFactory()
    db.session.commit()
    assert client.get("/admin/").status_code == 200

    frozen = freeze_startup_heap()
    for _ in range(3):
        assert client.get("/admin/").status_code == 200
    gc.collect()
    walked = gc.get_objects()  # what a full collection visits now

    assert frozen > 50_000  # the loaded app, its mappers, templates, catalogues
    assert len(walked) < frozen / 10
    assert not any(obj is app or obj is app.url_map for obj in walked)


def test_every_gunicorn_worker_freezes_its_heap_once_the_app_is_loaded(monkeypatch, unfrozen):
    started = []
    stub_app = types.SimpleNamespace(
        extensions={"click_writer": types.SimpleNamespace(start=lambda: started.append(True))}
    )
    monkeypatch.setitem(sys.modules, "wsgi", types.SimpleNamespace(app=stub_app))
    frozen = []
    monkeypatch.setattr("portal.heap.gc.freeze", lambda: frozen.append(True))
    # Not the point here, and a full collection of a test worker's heap took 20 s.
    monkeypatch.setattr("portal.heap.gc.collect", lambda: 0)
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        config["post_worker_init"](types.SimpleNamespace(log=None))
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert started == [True]
    assert frozen == [True]
