"""The portal's background threads carry their names into the OS (portal/osthreads.py): what
``top -H`` shows an operator, and what the benches split a server's CPU by."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from portal import osthreads
from portal.salewriter import SaleWriter
from portal.services import delivery, outbox


@pytest.fixture(autouse=True)
def _linux_proc():
    """OS thread names are read from Linux's /proc: skipped elsewhere, a failure under CI=true."""
    if not Path("/proc/self/task").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but /proc/self/task is missing (OS thread names need Linux)")
        pytest.skip("OS thread names are read from Linux's /proc")


def _os_name(thread: threading.Thread) -> str:
    return Path(f"/proc/self/task/{thread.native_id}/comm").read_text().strip()


def _started(thread_of, timeout: float = 5.0) -> threading.Thread:
    """The thread ``thread_of()`` names, once it has started running (its OS name set)."""
    thread = thread_of()
    for _ in range(int(timeout / 0.01)):
        if thread.native_id is not None and _os_name(thread) == thread.name[:15]:
            break
        threading.Event().wait(0.01)
    return thread


def test_a_thread_started_from_here_has_its_name_in_the_os_cut_to_fifteen_bytes():
    seen: list[str] = []
    done = threading.Event()

    def body():
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())
        done.set()

    thread = osthreads.Thread(target=body, name="a-rather-long-thread-name", daemon=True)
    thread.start()
    assert done.wait(5)
    thread.join(5)
    assert seen == ["a-rather-long-t"]
    # A plain thread keeps the process's name: the difference is this module's.
    plain = threading.Thread(target=lambda: seen.append(_os_name(threading.current_thread())))
    plain.start()
    plain.join(5)
    assert seen[-1] != "a-rather-long-t"


def test_the_sale_writer_the_dispatcher_and_the_mail_sender_are_named_in_the_os(app, monkeypatch):
    """Each starts the way a worker starts it on first use; each shows its own name."""
    app.config["SALE_WRITE_MODE"] = "batched"
    writer = SaleWriter(app)
    monkeypatch.setattr(writer, "_take", lambda: threading.Event().wait())  # idle: waits for sales
    with writer._ready:
        writer._ensure_thread()
    sale_writer = _started(lambda: writer._threads[0])
    assert _os_name(sale_writer) == "sale-writer-0"

    dispatcher = outbox.Dispatcher(app)
    monkeypatch.setattr(dispatcher, "_pass", lambda delay: threading.Event().wait())
    dispatcher.kick()
    assert _os_name(_started(lambda: dispatcher._thread)) == "outbox-dispatch"

    sender = delivery.MailSender(app)
    monkeypatch.setattr(delivery, "send_outbox", lambda ids: threading.Event().wait())
    sender.submit([1])
    assert _os_name(_started(lambda: sender._thread)) == "mail-sender"


# A child process, so the test process keeps its own policy.
_INHERITS = """
import os, threading
from portal import osthreads
before = os.sched_getscheduler(0)
took = osthreads.batch_scheduling()
seen = []
thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
thread.start()
thread.join()
pid = os.fork()
if pid == 0:
    os._exit(0 if os.sched_getscheduler(0) == os.SCHED_BATCH else 1)
_, status = os.waitpid(pid, 0)
print(before == os.SCHED_OTHER, took, os.sched_getscheduler(0) == os.SCHED_BATCH,
      seen == [os.SCHED_BATCH], os.waitstatus_to_exitcode(status) == 0)
"""


def test_batch_scheduling_holds_for_the_caller_and_every_thread_and_process_it_starts():
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _INHERITS], cwd=root, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    # default before; it took; the caller, a new thread and a forked child all under SCHED_BATCH
    assert out.split() == ["True"] * 5


def _gunicorn_config(monkeypatch, value: str | None) -> dict:
    if value is None:
        monkeypatch.delenv("GUNICORN_SCHEDULING", raising=False)
    else:
        monkeypatch.setenv("GUNICORN_SCHEDULING", value)
    return runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))


class _Log:
    def __init__(self):
        self.warnings: list[str] = []

    def warning(self, message, *args):
        self.warnings.append(message % args)


def _worker():
    return types.SimpleNamespace(pid=4242, log=_Log())


def test_gunicorn_puts_each_new_worker_under_batch_scheduling_unless_told_normal(monkeypatch):
    calls = []
    monkeypatch.setattr(osthreads, "batch_scheduling", lambda: calls.append(True) or True)
    worker = _worker()
    _gunicorn_config(monkeypatch, None)["post_fork"](None, worker)
    assert calls == [True]
    _gunicorn_config(monkeypatch, "batch")["post_fork"](None, worker)
    assert calls == [True, True]
    _gunicorn_config(monkeypatch, "normal")["post_fork"](None, worker)
    assert calls == [True, True]
    assert worker.log.warnings == []


def test_a_worker_the_system_refuses_batch_scheduling_says_so_and_starts(monkeypatch):
    monkeypatch.setattr(osthreads.os, "sched_setscheduler", _refused)
    assert osthreads.batch_scheduling() is False
    worker = _worker()
    _gunicorn_config(monkeypatch, None)["post_fork"](None, worker)
    assert worker.log.warnings == ["worker 4242 keeps the default scheduling: SCHED_BATCH was refused"]


def _refused(*args):
    raise PermissionError(1, "Operation not permitted")


def test_gunicorn_refuses_a_scheduling_it_does_not_know(monkeypatch):
    with pytest.raises(SystemExit, match="GUNICORN_SCHEDULING must be batch or normal, not 'fifo'"):
        _gunicorn_config(monkeypatch, "fifo")
