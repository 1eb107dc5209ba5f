"""Gunicorn settings for the portal; every value can be overridden on the command line.

gunicorn -c gunicorn.conf.py wsgi:app
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# gthread: pages, the API and (in threading mode) Flask-SocketIO with simple-websocket, one
# thread per open socket. gevent: the separate Socket.IO server for many open pages (README,
# "Many open pages"): GUNICORN_WORKER_CLASS=gevent with SOCKETIO_ASYNC_MODE=gevent.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "50"))
# Open connections a worker takes at most: gunicorn's 1000, or 2000 open pages a gevent worker.
worker_connections = int(
    os.environ.get("GUNICORN_WORKER_CONNECTIONS", "2000" if worker_class == "gevent" else "1000")
)
graceful_timeout = 30
accesslog = "-"

# Gunicorn 25+ opens a control socket for `gunicornc` in $XDG_RUNTIME_DIR or ~/.gunicorn; two
# servers started by one user would fight over it. Off unless a path is given.
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True


# Linux's SCHED_BATCH for every worker and the threads it starts (portal/osthreads.py
# ``batch_scheduling``): the conversion API and the click redirect answered 10-20 % more
# requests on 2 cores, with a lower p99 (README, "Worker scheduling"). "normal" keeps the
# operating system's default policy.
_scheduling = os.environ.get("GUNICORN_SCHEDULING", "batch")
if _scheduling not in ("batch", "normal"):
    raise SystemExit(f"GUNICORN_SCHEDULING must be batch or normal, not {_scheduling!r}")


def post_fork(server, worker):
    if _scheduling == "batch":
        # In the new worker, before it loads the app: every thread it starts (request
        # threads, the sale and click writers, the dispatcher) inherits the policy.
        from portal import osthreads

        if not osthreads.batch_scheduling() and hasattr(os, "SCHED_BATCH"):
            # Linux refused it (a container's seccomp profile, say): say so, and go on as before.
            worker.log.warning("worker %s keeps the default scheduling: SCHED_BATCH was refused", worker.pid)


def post_worker_init(worker):
    # Replay what a stopped or killed worker left in the click spool now, not at the first click.
    from wsgi import app

    app.extensions["click_writer"].start()

    # The loaded app out of the garbage collector's full rounds (portal/heap.py): they cost
    # the operator dashboard's slowest renders ~100 ms each.
    from portal.heap import freeze_startup_heap

    freeze_startup_heap()

    # On SIGTERM, close this worker's websockets at once (browsers reconnect by
    # themselves) before gunicorn's own handler starts the graceful stop; otherwise every
    # open socket holds the restart for the whole graceful_timeout.
    import signal
    import threading

    previous = signal.getsignal(signal.SIGTERM)

    def close_sockets(signum, frame):
        def close():
            try:
                from portal.realtime import close_sockets_for_restart

                closed = close_sockets_for_restart()
                worker.log.info("closed %d websocket(s) for the restart", closed)
            except Exception:  # never block the stop
                worker.log.exception("closing websockets for the restart failed")

        # Not in the signal handler itself: closing sends over the sockets.
        threading.Thread(target=close, name="close-websockets", daemon=True).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, close_sockets)


def worker_exit(server, worker):
    # Write the clicks still buffered in this worker before it goes (clean shutdown).
    try:
        from wsgi import app
    except Exception:  # noqa: BLE001 - the worker may have failed before the app loaded
        return
    writer = app.extensions.get("click_writer")
    if writer is not None:
        writer.close()


# OUTBOX_DISPATCH_MODE=process: the event outbox's dispatcher runs as a process of its own
# (``flask portal dispatcher``; portal/services/outbox.py, ``follow``), started by the master
# beside the workers, started again if it ever exits, and stopped with them; the workers'
# processes then keep their CPU and GIL for the requests (README, *Events and webhooks*).
class _DispatcherProcess:
    ARGV = ("-m", "flask", "--app", "wsgi", "portal", "dispatcher", "--end-with-parent")
    RESTART_PAUSE = 1.0  # a process that keeps failing starts again once a second at most

    def __init__(self, log):
        self.log = log
        self.process = None
        self.stopping = False
        self.reloading = False

    def start(self):
        import threading

        self.process = self._spawn()
        threading.Thread(target=self._watch, name="dispatcher-watch", daemon=True).start()

    def _spawn(self):
        import subprocess
        import sys

        # Our own interpreter and module; nothing from a request or the environment's input.
        # The master's pid: the process checks it still has that parent once Linux is to
        # tell it of the parent's end (the master may die while the app loads).
        env = {**os.environ, "PORTAL_DISPATCHER_PARENT": str(os.getpid())}
        process = subprocess.Popen([sys.executable, *self.ARGV], env=env)  # noqa: S603
        self.log.info("outbox dispatcher started (pid %s)", process.pid)
        return process

    def _watch(self):
        import time

        while True:
            # The master may reap the process first (it waits for any child): wait() then
            # returns at once all the same.
            code = self.process.wait()
            if self.stopping:
                return
            if self.reloading:
                self.reloading = False
                self.log.info("outbox dispatcher stopped for the reload; starting the new code")
            else:
                self.log.error("outbox dispatcher exited (%s); starting it again", code)
            time.sleep(self.RESTART_PAUSE)
            if self.stopping:
                return
            self.process = self._spawn()

    def restart(self):
        """New code after a reload (HUP): the watcher starts the new process."""
        self.reloading = True
        self.process.terminate()

    def stop(self):
        self.stopping = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=graceful_timeout)
            except Exception:  # noqa: BLE001 - it must not hold the stop
                self.process.kill()


def when_ready(server):
    if os.environ.get("OUTBOX_DISPATCH_MODE") == "process":
        # Kept on the master itself: a reload (HUP) runs this file again, with new globals.
        server.portal_dispatcher = _DispatcherProcess(server.log)
        server.portal_dispatcher.start()


def on_reload(server):
    dispatcher = getattr(server, "portal_dispatcher", None)
    if dispatcher is not None:
        dispatcher.restart()


def on_exit(server):
    dispatcher = getattr(server, "portal_dispatcher", None)
    if dispatcher is not None:
        dispatcher.stop()
