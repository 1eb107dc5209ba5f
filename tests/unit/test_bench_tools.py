"""The throughput benches' tools (bench/_wrk.py and its Lua scripts): wrk's report parsed,
and the ingest script's sales, sent by a real wrk to a little server, each with a unique
transaction id and recorded when answered."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _common
import _wrk

WRK_REPORT = """\
Running 2s test @ http://127.0.0.1:41234/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.31ms    2.07ms  31.62ms   80.12%
    Req/Sec     1.89k   201.33     2.30k    71.00%
  Latency Distribution
     50%  812.00us
     75%    5.01ms
     90%    7.20ms
     99%    1.02s
  7541 requests in 2.00s, 1.69MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:   3770.11
Transfer/sec:    865.37KB
"""


def test_parse_wrk_output_reads_rate_latencies_and_errors():
    report = _wrk.parse_wrk_output(WRK_REPORT)
    assert report["requests"] == 7541
    assert report["seconds"] == pytest.approx(2.0)
    assert report["rps"] == pytest.approx(3770.11)
    assert report["percentiles_ms"] == pytest.approx({50.0: 0.812, 75.0: 5.01, 90.0: 7.2, 99.0: 1020.0})
    assert report["non_2xx_3xx"] == 12
    assert report["socket_errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 1}


def test_parse_wrk_output_refuses_what_is_not_a_report():
    with pytest.raises(ValueError, match="not a wrk report"):
        _wrk.parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused")


def test_results_add_up_and_the_sanity_line_warns_below_2000():
    a = _wrk.WrkResult(requests=3000, seconds=1.0, p50_ms=1.0, p99_ms=9.0, runs=1)
    b = _wrk.WrkResult(requests=1000, seconds=1.0, p50_ms=2.0, p99_ms=5.0, runs=1)
    total = _wrk.WrkResult().add(a).add(b)
    assert (total.requests, total.rps, total.p50_ms, total.p99_ms, total.runs) == (4000, 2000.0, 2.0, 9.0, 2)
    assert "not above 2,000" in _wrk.sanity_warning(total)
    assert _wrk.sanity_warning(a) is None


def test_thread_kinds_come_from_the_os_names_the_portal_gives_its_threads():
    kind = _common.thread_kind
    assert kind("sale-writer-0", main=False, master=False) == "sale writer"
    assert kind("outbox-dispatch", main=False, master=False) == "outbox dispatcher"
    assert kind("click-writer", main=False, master=False) == "click writer"
    assert kind("python", main=True, master=False) == "worker main thread"
    assert kind("python", main=False, master=False) == "request threads"
    assert kind("python", main=True, master=True) == "gunicorn master"


def test_results_add_up_their_cpu_by_thread_and_print_it_per_request():
    a = _wrk.WrkResult(
        requests=1000, seconds=1.0, thread_cpu=Counter({"sale writer": 1.5, "request threads": 1.0})
    )
    b = _wrk.WrkResult(requests=1000, seconds=1.0, thread_cpu=Counter({"sale writer": 0.5}), database_cpu=0.4)
    total = _wrk.WrkResult().add(a).add(b)
    assert total.thread_cpu == {"sale writer": 2.0, "request threads": 1.0}
    assert total.thread_line("portal").endswith("us/request: sale writer 1,000, request threads 500")
    assert "20% of a core,   200 us/request" in total.database_line("portal")


def test_a_servers_cpu_is_split_by_the_os_names_of_its_workers_threads(tmp_path):
    """A stand-in for gunicorn: a master that forks a worker whose named thread burns CPU."""
    if not Path("/proc/self/task").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but /proc/self/task is missing (the bench reads Linux's /proc)")
        pytest.skip("the bench reads threads from Linux's /proc")
    script = """
import os, time
from portal import osthreads
if os.fork() == 0:
    def burn():
        end = time.thread_time() + 0.4
        while time.thread_time() < end:
            pass
        time.sleep(30)  # alive: an ended thread's CPU is no longer /proc/<pid>/task's to read
    osthreads.Thread(target=burn, name="sale-writer-0").start()
    time.sleep(30)
    os._exit(0)
time.sleep(30)
"""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    server = _common.Server(
        "stand-in", [sys.executable, "-c", script], cwd=root, env=env, port=0, logdir=tmp_path
    )
    try:
        deadline = time.monotonic() + 60  # importing the portal is slow on a busy machine
        seconds = server.thread_cpu()
        while seconds.get("sale writer", 0) < 0.35 and time.monotonic() < deadline:
            threading.Event().wait(0.05)
            seconds = server.thread_cpu()
        assert seconds["sale writer"] >= 0.35
        assert seconds["sale writer"] > 10 * seconds.get("worker main thread", 0.0)
        assert set(seconds) <= {"sale writer", "worker main thread", "gunicorn master"}
    finally:
        server.stop(timeout=5)


class _Sales(BaseHTTPRequestHandler):
    """Answers every sale 201 with its transaction id, as the portal does, and keeps the body."""

    protocol_version = "HTTP/1.1"
    received: list[dict]
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.received.append({**body, "authorization": self.headers["Authorization"]})
        answer = json.dumps({"conversion": {"transaction_id": body["transaction_id"], "status": "pending"}})
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())


@pytest.fixture
def sales_server():
    _Sales.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sales)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _wrk_available() -> None:
    if shutil.which("wrk") is None and not Path("/usr/bin/wrk").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but wrk is not installed (apt-get install wrk)")
        pytest.skip("wrk is not installed (apt-get install wrk)")


def test_the_ingest_script_sends_unique_sales_and_records_what_was_answered(sales_server):
    _wrk_available()
    refs = ["bp00001", "bp00002", "bp00003"]
    result = _wrk.run_wrk(
        _wrk.INGEST_LUA,
        sales_server.server_address[1],
        seconds=1,
        connections=4,
        threads=2,
        lines=refs,
        record_ids=True,
        env={"WRK_PREFIX": "t-run", "WRK_API_KEY": "ppk_test"},
    )
    received = list(_Sales.received)
    ids = [sale["transaction_id"] for sale in received]
    assert result.requests > 0
    assert len(ids) == len(set(ids))  # unique across wrk's threads
    assert all(re.fullmatch(r"t-run-[12]-\d{8}", tx) for tx in ids)
    assert {tx.split("-")[2] for tx in ids} == {"1", "2"}  # both threads sent
    assert {sale["ref"] for sale in received} <= set(refs)
    assert all(re.fullmatch(r"\d+\.\d\d", sale["amount"]) for sale in received)
    assert all(5.0 <= float(sale["amount"]) <= 500.0 for sale in received)
    assert {sale["authorization"] for sale in received} == {"Bearer ppk_test"}
    # Every id answered 201 is recorded once; at most one request per connection was in
    # flight when the run ended (sent, never answered to wrk).
    assert result.statuses == {201: result.requests}
    assert len(result.ids) == len(set(result.ids)) == result.requests
    assert set(result.ids) <= set(ids)
    assert 0 <= len(ids) - len(result.ids) <= 4
    assert result.client_cpu > 0


def test_a_bench_creates_its_throw_away_postgres_database_when_the_server_has_none():
    """``make bench`` on a fresh machine: settle.py's default database (and any named with
    --pg-url) need not be created by hand first."""
    import sqlalchemy as sa

    from tests.conftest import own_postgres_database

    # A database of the test's own (a failure under CI=true without PostgreSQL), dropped below.
    url = sa.engine.make_url(own_postgres_database("made_by_bench"))
    name = url.database
    server = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def exists() -> bool:
        with server.connect() as connection:
            query = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")
            return connection.scalar(query, {"name": name}) is not None

    try:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        assert not exists()
        target = url.render_as_string(hide_password=False)
        _common.ensure_database(target)
        assert exists()
        _common.ensure_database(target)  # there already: left as it is
        assert exists()
        with pytest.raises(SystemExit, match="refusing to create"):
            _common.ensure_database(url.set(database='x"; DROP DATABASE test; --').render_as_string())
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        server.dispose()


@pytest.mark.parametrize("name", ["test", "postgres", "template1"])
def test_no_bench_drops_the_schema_of_a_shared_database(name):
    """fanout.py's --pg-url reaches ``_reset_postgres`` without the other benches' option
    check: the refusal is there, before any connection."""
    with pytest.raises(SystemExit, match="refusing to drop"):
        _common._reset_postgres(f"postgresql+psycopg://postgres@127.0.0.1:1/{name}")


def _stat(root, pid: int, name: str, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> None:
    """A /proc/<pid>/stat line (proc(5)): fields 14-17 are utime, stime, cutime, cstime."""
    (root / str(pid)).mkdir(exist_ok=True)
    middle = " ".join(["S", *["0"] * 10])
    times = f"{utime} {stime} {cutime} {cstime}"
    (root / str(pid) / "stat").write_text(f"{pid} ({name}) {middle} {times} 20 0 1\n")


def test_postgres_cpu_keeps_the_share_of_a_backend_that_exited_between_two_readings(tmp_path):
    ticks = _common._CLOCK_TICKS
    _stat(tmp_path, 10, "postgres", utime=50, stime=10)  # the postmaster
    _stat(tmp_path, 11, "postgres", utime=300, stime=100)  # a backend
    _stat(tmp_path, 12, "python3", utime=9000, stime=9000)  # not the database's
    (tmp_path / "self").mkdir()
    before = _common.postgres_cpu_seconds(str(tmp_path))
    assert before == pytest.approx((50 + 10 + 300 + 100) / ticks)
    # The backend used 40 ticks more, exited, and the postmaster reaped it.
    (tmp_path / "11" / "stat").unlink()
    (tmp_path / "11").rmdir()
    _stat(tmp_path, 10, "postgres", utime=50, stime=10, cutime=330, cstime=110)
    after = _common.postgres_cpu_seconds(str(tmp_path))
    assert after - before == pytest.approx(40 / ticks)


def test_abba_lets_b_settle_after_its_second_run_and_before_as_last():
    calls = []

    def measure(name):
        def run(seconds):
            calls.append((name, seconds))
            return _wrk.WrkResult(requests=100, seconds=seconds)

        return run

    bare, portal, runs = _wrk.abba(measure("A"), measure("B"), 4.0, settle_b=lambda: calls.append("settle"))
    assert calls == [("A", 2.0), ("B", 2.0), ("B", 2.0), "settle", ("A", 2.0)]
    assert [name for name, _result in runs] == ["A", "B", "B", "A"]
    assert bare.requests == portal.requests == 200


class _Clock:
    """A clock that moves only when slept on: the idle wait's windows, exactly."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _idle_wait(readings: list[float], **options):
    clock, cpu = _Clock(), iter(readings)
    return _wrk.wait_until_idle(lambda: next(cpu), clock=clock, sleep=clock.sleep, **options)


def test_waiting_until_a_server_is_idle_counts_the_cpu_it_used_meanwhile():
    # busy, busy, then under 5 % of a core for two windows of 0.5 s: the 1 s span
    waited, cpu, quiet = _idle_wait([10.0, 10.5, 11.0, 11.001, 11.002, 99.0], span=1.0)
    assert quiet
    assert cpu == pytest.approx(1.002)
    assert waited == pytest.approx(2.0)  # four windows


def test_a_pause_shorter_than_the_span_is_not_taken_for_the_end():
    # one quiet window (a dispatcher between two passes), busy again, then quiet for good
    readings = [0.0, 1.0, 1.001, 2.0, 2.001, 2.002, 2.003, 2.004, 50.0]
    waited, cpu, quiet = _idle_wait(readings, span=1.5)
    assert quiet
    assert cpu == pytest.approx(2.003)  # on past the pause, to the third quiet window after it
    assert waited == pytest.approx(3.0)  # six windows


def test_a_server_that_stays_busy_is_left_at_the_timeout():
    waited, cpu, quiet = _idle_wait([float(n) for n in range(1000)], span=1.0, timeout=10.0)
    assert not quiet
    assert waited == pytest.approx(10.0)
    line = _wrk.settled_line("portal", (waited, cpu, quiet), requests=1000)
    assert line.startswith("portal     after its runs:")
    assert "still busy when the bench went on" in line


def test_the_quiet_span_outlasts_the_dispatchers_longest_pause(monkeypatch):
    monkeypatch.delenv("OUTBOX_DISPATCH_DELAY_MS", raising=False)
    assert _wrk.settle_span() == pytest.approx(2.5)  # twice 250 ms x 4, and half a second
    monkeypatch.setenv("OUTBOX_DISPATCH_DELAY_MS", "1000")
    assert _wrk.settle_span() == pytest.approx(8.5)


def test_the_catch_up_lines_name_the_runs_and_the_warm_up_per_request_of_each():
    runs, warm_up = _wrk.WrkResult(requests=1000, seconds=10), _wrk.WrkResult(requests=200, seconds=3)
    after_runs, after_warm_up = _wrk.catch_up_lines((12.0, 0.5, True), runs, (4.0, 0.1, True), warm_up)
    assert after_runs.startswith("portal     after its runs: 12.0 s and 0.50 s of CPU more (500 us")
    assert after_runs.endswith("before the bare app's last run")
    assert after_warm_up.startswith("warm-up    after its runs: 4.0 s and 0.10 s of CPU more (500 us")
    assert after_warm_up.endswith("before the bare app's first run")
