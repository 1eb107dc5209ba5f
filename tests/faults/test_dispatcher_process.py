"""OUTBOX_DISPATCH_MODE=process against a real gunicorn server: the master starts the outbox
dispatcher as a process of its own, which hands the workers' events on (their workers run no
dispatcher), is started again when it dies, and ends with the server, even one killed outright."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults._click_services import _descendants
from tests.faults.conftest import Portal, portal_env, wait_for
from tests.faults.test_faults import _comm, _policy, _sell

pytestmark = pytest.mark.faults


def _children(pid: int) -> list[int]:
    """Its processes (a dispatcher started again comes from the master's watcher thread)."""
    return [child for child in _descendants(pid) if child != pid]


def _is_dispatcher(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"dispatcher" in argv


def _dispatcher_of(master: int) -> int:
    found = [pid for pid in _children(master) if _is_dispatcher(pid)]
    assert len(found) == 1, found
    return found[0]


def _threads(pid: int) -> set[str]:
    return {_comm(f"/proc/{pid}/task/{tid}") for tid in os.listdir(f"/proc/{pid}/task")}


def _gone(pid: int) -> bool:
    """Ended (a zombie counts: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _handed_on(engine: sa.Engine) -> bool:
    """Every committed event handed on by every consumer."""
    with engine.connect() as connection:
        newest = connection.scalar(sa.text("SELECT coalesce(max(id), 0) FROM outbox_events"))
        lowest = connection.scalar(sa.text("SELECT min(position) FROM outbox_consumers"))
        consumers = connection.scalar(sa.text("SELECT count(*) FROM outbox_consumers"))
    return consumers == 3 and lowest == newest


def test_the_dispatcher_process_hands_events_on_comes_back_and_ends_with_the_server(
    services, seeded, tmp_path
):
    env = portal_env(services, seeded, tmp_path, OUTBOX_DISPATCH_MODE="process", GUNICORN_WORKERS="2")
    server = Portal(env, tmp_path / "server.log")
    engine = sa.create_engine(services["postgres"].url)
    server.start()
    try:
        master = server.process.pid
        wait_for(lambda: _dispatcher_of(master), 30, "the dispatcher process")
        dispatcher = _dispatcher_of(master)
        wait_for(lambda: "outbox-dispatch" in _threads(dispatcher), 30, "the dispatcher loading the app")
        # Under SCHED_BATCH, as the workers (field 41 of /proc/<pid>/stat: 3); the master not.
        assert _policy(f"/proc/{dispatcher}") == os.SCHED_BATCH
        assert _policy(f"/proc/{master}") == os.SCHED_OTHER

        answers = _sell(server, seeded, f"dp-{uuid.uuid4().hex[:8]}-", 30)
        assert [answer[0] for answer in answers] == [201] * 30
        wait_for(lambda: _handed_on(engine), 20, "the dispatcher process handing the sales' events on")
        workers = [pid for pid in _children(master) if pid != dispatcher]
        assert len(workers) == 2
        for worker in workers:  # the workers leave the events to it: no dispatcher thread
            assert "outbox-dispatch" not in _threads(worker), _threads(worker)

        # Killed outright: the master starts another, which hands on what came meanwhile.
        os.kill(dispatcher, signal.SIGKILL)
        answers = _sell(server, seeded, f"dp-{uuid.uuid4().hex[:8]}-", 10)
        assert [answer[0] for answer in answers] == [201] * 10
        wait_for(
            lambda: [pid for pid in _children(master) if _is_dispatcher(pid) and pid != dispatcher],
            30,
            "a new dispatcher process",
        )
        second = _dispatcher_of(master)
        wait_for(lambda: _handed_on(engine), 30, "the new dispatcher process handing the events on")
        assert "exited" in server.log() and "starting it again" in server.log()

        # The master killed outright (no hook runs): the dispatcher ends with it all the same.
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        wait_for(lambda: _gone(second), 15, "the dispatcher ending with its master")
    finally:
        server.stop(signal.SIGKILL)
        engine.dispose()


def test_a_reload_starts_a_new_dispatcher_and_a_graceful_stop_stops_it(services, seeded, tmp_path):
    env = portal_env(services, seeded, tmp_path, OUTBOX_DISPATCH_MODE="process")
    server = Portal(env, tmp_path / "server.log")
    server.start()
    try:
        master = server.process.pid
        wait_for(lambda: _dispatcher_of(master), 30, "the dispatcher process")
        first = _dispatcher_of(master)
        server.process.send_signal(signal.SIGHUP)  # a reload: new code for the dispatcher too
        wait_for(
            lambda: [pid for pid in _children(master) if _is_dispatcher(pid) and pid != first],
            30,
            "the dispatcher started again for the reload",
        )
        assert _gone(first)
        assert "stopped for the reload" in server.log() and "exited" not in server.log()
        dispatcher = _dispatcher_of(master)
        took = server.stop(signal.SIGTERM)
        assert took < 10, f"the stop took {took:.1f} s"
        assert _gone(dispatcher)
        assert "outbox dispatcher: stopped" in server.log()
    finally:
        server.stop(signal.SIGKILL)
