"""Threads that carry their name into the operating system.

Python names a thread for itself only; ``top -H``, ``ps -L`` and ``/proc/<pid>/task/<tid>/comm``
show every thread of a gunicorn worker as the process. The portal's own background threads
(the sale writer, the click writer, the outbox dispatcher, the mail sender, the scheduler) are
started as ``Thread`` from here, so an operator sees which of them uses the CPU, and the
benches (bench/_common.py) split a server's CPU by thread. Linux keeps 15 bytes of a name;
elsewhere the name stays Python's own. ``batch_scheduling`` puts a gunicorn worker and every
thread it starts under Linux's ``SCHED_BATCH`` policy (``gunicorn.conf.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

_PR_SET_NAME = 15  # prctl(2): names the calling thread
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - a Linux without a C library to load
        _libc = None


def name_os_thread(name: str) -> bool:
    """Give the calling thread ``name`` in the OS (its first 15 bytes); whether it took."""
    if _libc is None:
        return False
    return _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0) == 0


class Thread(threading.Thread):
    """``threading.Thread`` whose OS thread takes its name when it starts."""

    def run(self) -> None:
        name_os_thread(self.name)
        super().run()


_PR_SET_PDEATHSIG = 1  # prctl(2): a signal for the calling process when its parent ends


def end_with_parent(signal_number: int) -> bool:
    """Have Linux send the calling process ``signal_number`` when the process (strictly, the
    thread) that started it ends; whether it took. A process the gunicorn master starts
    (the outbox dispatcher) then stops with it even if the master is killed outright. The
    caller should look once whether the parent is gone already (``os.getppid``)."""
    if _libc is None:
        return False
    return _libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0) == 0


def batch_scheduling() -> bool:
    """Put the calling thread under Linux's ``SCHED_BATCH`` policy; whether it took. Threads
    and processes it starts afterwards inherit it, so a gunicorn worker calls this first thing
    (``gunicorn.conf.py``): its request threads, sale writer and dispatcher all run under it.

    ``SCHED_BATCH`` is fair scheduling like the default, less one thing: a thread that wakes up
    does not preempt the one running. A worker's threads hand work to each other all the time
    (a request to the sale writer and back, the GIL between them), and each wake-up that
    preempted another thread cost a context switch, often one holding the GIL, which then
    made every other thread of the process wait. Any user may choose it for their own threads;
    elsewhere than Linux this does nothing."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError:  # a container's seccomp profile may refuse it: the default policy stays
        return False
    return True
