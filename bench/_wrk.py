"""The load generator of the throughput benchmarks: ``wrk`` (a native client, so the server is
what is measured), driven by the Lua scripts beside this file, and the parser of its output.

``wrk`` runs with ``--latency``; the Lua scripts (``wrk_redirect.lua``, ``wrk_ingest.lua``, both
on ``wrk_common.lua``) draw a random code or ref per request, give every sale a unique
transaction id, count the answers by status and write the ids the portal answered with, so
that the bench can check each one was stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from _common import machine_busy_seconds, portal_constant, postgres_cpu_seconds

BENCH_DIR = Path(__file__).resolve().parent
COMMON_LUA = BENCH_DIR / "wrk_common.lua"
REDIRECT_LUA = BENCH_DIR / "wrk_redirect.lua"
INGEST_LUA = BENCH_DIR / "wrk_ingest.lua"
BARE_FLOOR = 2_000.0  # req/s: below it the client or the machine, not the app, is the limit


# --- wrk itself ------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of ``wrk``; installed with apt-get when missing and this runs as root, else a
    message that says how to install it."""
    found = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it (apt-get install -y wrk)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False)
        if result.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=False)
            subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "wrk (the load generator) is not installed. On Debian or Ubuntu: sudo apt-get install wrk; "
        "elsewhere build it from https://github.com/wg/wrk and put it on PATH. Then run this again."
    )


# --- its output ----------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in (\d+(?:\.\d+)?)(us|ms|s|m),", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk_output(text: str) -> dict:
    """wrk's report (with ``--latency``) as numbers: requests, seconds, rps, the latency
    percentiles in ms (``{50.0: …, 99.0: …}``), non-2xx/3xx answers and socket errors."""
    total = _TOTAL.search(text)
    rate = _RATE.search(text)
    if total is None or rate is None:
        raise ValueError("not a wrk report:\n" + text[-2000:])
    percentiles = {float(p): float(v) * _UNITS[unit] for p, v, unit in _PERCENTILE.findall(text)}
    non_2xx = _NON_2XX.search(text)
    socket = _SOCKET.search(text)
    return {
        "requests": int(total.group(1)),
        "seconds": float(total.group(2)) * _UNITS[total.group(3)] / 1000.0,
        "rps": float(rate.group(1)),
        "percentiles_ms": percentiles,
        "non_2xx_3xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": dict(
            zip(("connect", "read", "write", "timeout"), map(int, socket.groups()), strict=True)
        )
        if socket
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }


# --- one run -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """One or more wrk runs against one server, summed."""

    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0  # of several runs: the worst run's
    p99_ms: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    socket_errors: int = 0
    samples: dict[str, str] = field(default_factory=dict)  # a body per unexpected status
    ids: list[str] = field(default_factory=list)  # what the portal answered with
    client_cpu: float = 0.0  # CPU seconds wrk used
    server_cpu: float = 0.0  # CPU seconds the server's processes used
    machine_cpu: float = 0.0  # CPU seconds every process on the machine used
    database_cpu: float = 0.0  # CPU seconds this machine's PostgreSQL processes used
    thread_cpu: Counter = field(default_factory=Counter)  # the server's CPU seconds by thread kind
    runs: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def add(self, other: WrkResult) -> WrkResult:
        self.requests += other.requests
        self.seconds += other.seconds
        self.p50_ms = max(self.p50_ms, other.p50_ms)
        self.p99_ms = max(self.p99_ms, other.p99_ms)
        self.statuses.update(other.statuses)
        self.socket_errors += other.socket_errors
        for status, body in other.samples.items():
            self.samples.setdefault(status, body)
        self.ids.extend(other.ids)
        self.client_cpu += other.client_cpu
        self.server_cpu += other.server_cpu
        self.machine_cpu += other.machine_cpu
        self.database_cpu += other.database_cpu
        self.thread_cpu.update(other.thread_cpu)
        self.runs += other.runs
        return self

    def line(self, label: str) -> str:
        odd = {s: n for s, n in self.statuses.items() if s not in (201, 302)}
        extra = f"  other statuses {odd}" if odd else ""
        if self.socket_errors:
            extra += f"  socket errors {self.socket_errors}"
        return (
            f"{label:<10} {self.rps:8.0f} req/s   p50 {self.p50_ms:7.2f} ms   p99 {self.p99_ms:7.2f} ms   "
            f"({self.requests} requests in {self.seconds:.1f} s){extra}"
        )

    def cpu_line(self, label: str) -> str:
        if not self.seconds or not self.requests:
            return f"{label:<10} no requests"
        others = max(0.0, self.machine_cpu - self.server_cpu - self.client_cpu) / self.seconds
        return (
            f"{label:<10} client (wrk) CPU {self.client_cpu:5.2f} s = "
            f"{self.client_cpu / self.seconds:4.0%} of a core;  "
            f"server {self.server_cpu / self.seconds:4.0%} of a core, "
            f"{self.server_cpu / self.requests * 1e6:5.0f} us/request;  other processes {others:4.2f} cores"
        )

    def thread_line(self, label: str) -> str:
        """The server's CPU per request by thread, most first (bench/_common.py ``thread_kind``)."""
        if not self.requests or not self.thread_cpu:
            return f"{label:<10} no CPU by thread (Linux /proc only)"
        parts = [
            f"{kind} {seconds / self.requests * 1e6:,.0f}"
            for kind, seconds in self.thread_cpu.most_common()
            if seconds / self.requests * 1e6 >= 1
        ]
        return f"{label:<10} server CPU by thread, us/request: " + ", ".join(parts)

    def database_line(self, label: str) -> str:
        """This machine's PostgreSQL processes: share of a core and CPU per request."""
        if not self.seconds or not self.requests:
            return f"{label:<10} no requests"
        return (
            f"{label:<10} database server CPU (this machine's postgres processes): "
            f"{self.database_cpu / self.seconds:4.0%} of a core, "
            f"{self.database_cpu / self.requests * 1e6:5.0f} us/request"
        )


def run_wrk(
    script: Path,
    port: int,
    *,
    seconds: float,
    connections: int,
    threads: int,
    lines: list[str],
    server=None,
    record_ids: bool = False,
    seed: int = 1,
    env: dict[str, str] | None = None,
    timeout_seconds: int = 10,
) -> WrkResult:
    """One wrk run of ``script`` against 127.0.0.1:``port``. ``server`` (bench Server) gives
    the server's CPU; ``record_ids`` keeps the ids the portal answered with."""
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        workdir = Path(tmp)
        (workdir / "lines.txt").write_text("\n".join(lines) + "\n")
        run_env = {
            **os.environ,
            **(env or {}),
            "WRK_COMMON": str(COMMON_LUA),
            "WRK_LINES": str(workdir / "lines.txt"),
            "WRK_OUT": str(workdir / "result.json"),
            "WRK_IDS": str(workdir / "ids.txt") if record_ids else "",
            "WRK_SEED": str(seed),
        }
        argv = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout_seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ]
        server_before = server.cpu_seconds() if server else 0.0
        threads_before = Counter(server.thread_cpu()) if server else Counter()
        database_before = postgres_cpu_seconds()
        machine_before = machine_busy_seconds()
        process = subprocess.Popen(
            argv, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=BENCH_DIR
        )
        with process.stdout:
            output = process.stdout.read().decode(errors="replace")
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        server_cpu = (server.cpu_seconds() - server_before) if server else 0.0
        thread_cpu = (Counter(server.thread_cpu()) - threads_before) if server else Counter()
        database_cpu = postgres_cpu_seconds() - database_before
        machine_cpu = machine_busy_seconds() - machine_before
        if process.returncode != 0 or not (workdir / "result.json").exists():
            raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{output[-3000:]}")
        report = parse_wrk_output(output)
        detail = json.loads((workdir / "result.json").read_text())
        ids = (workdir / "ids.txt").read_text().split() if record_ids else []
    socket_errors = sum(report["socket_errors"].values())
    return WrkResult(
        requests=report["requests"],
        seconds=report["seconds"],
        p50_ms=report["percentiles_ms"].get(50.0, detail["p50_us"] / 1000),
        p99_ms=report["percentiles_ms"].get(99.0, detail["p99_us"] / 1000),
        statuses=Counter({int(k): v for k, v in detail["statuses"].items()}),
        socket_errors=socket_errors,
        samples=detail.get("samples", {}),
        ids=ids,
        client_cpu=usage.ru_utime + usage.ru_stime,
        server_cpu=server_cpu,
        machine_cpu=machine_cpu,
        database_cpu=database_cpu,
        thread_cpu=thread_cpu,
        runs=1,
    )


def abba(
    measure_a, measure_b, seconds: float, settle_b=None
) -> tuple[WrkResult, WrkResult, list[tuple[str, WrkResult]]]:
    """A, B, B, A in halves of ``seconds``: each app gets ``seconds`` and slow drift cancels out.
    ``settle_b``, if given, runs after B's second run and before A's last: B's background work
    (what its runs left to do) then does not share the machine with A's run. Returns both sums
    and the four runs in order."""
    half = max(1.0, seconds / 2)
    runs = [("A", measure_a(half)), ("B", measure_b(half)), ("B", measure_b(half))]
    if settle_b is not None:
        settle_b()
    runs.append(("A", measure_a(half)))
    a, b = WrkResult(), WrkResult()
    for name, result in runs:
        (a if name == "A" else b).add(result)
    return a, b, runs


def wait_until_idle(
    cpu_seconds,
    *,
    span: float,
    quiet: float = 0.05,
    window: float = 0.5,
    timeout: float = 60.0,
    clock=time.monotonic,
    sleep=time.sleep,
):
    """Wait until a server (``cpu_seconds``: its CPU so far) has used less than ``quiet`` of a
    core in every ``window`` for ``span`` seconds in a row: its background threads (the outbox
    dispatcher, the click writer) have caught up with what its runs left them. ``span`` must
    be longer than the longest pause such a thread takes between two rounds of work, or a
    pause passes for the end. At most ``timeout`` seconds. Returns (seconds waited, CPU
    seconds it used meanwhile, whether it went quiet)."""
    began = clock()
    start = last = cpu_seconds()
    quiet_since = None
    while True:
        sleep(window)
        now, at = cpu_seconds(), clock()
        if now - last >= quiet * window:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = at - window
        last = now
        if quiet_since is not None and at - quiet_since >= span:
            return at - began, now - start, True
        if at - began >= timeout:
            return at - began, now - start, False


def settle_span() -> float:
    """How long the portal must stay quiet to have caught up: longer than twice the outbox
    dispatcher's longest pause between two passes under load (``OUTBOX_DISPATCH_DELAY_MS``
    times its ``BUSY_FACTOR``)."""
    delay_ms = float(os.environ.get("OUTBOX_DISPATCH_DELAY_MS") or 250)
    busy = portal_constant("portal.services.outbox", "BUSY_FACTOR", 4.0)
    return 2 * delay_ms / 1000 * busy + 0.5


def catch_up(server) -> tuple[float, float, bool]:
    """Wait until the portal ``server`` has caught up with what its runs left its background
    threads (``wait_until_idle`` over ``settle_span``), before the bare app runs again."""
    return wait_until_idle(server.cpu_seconds, span=settle_span())


def settled_line(
    label: str, settled: tuple[float, float, bool], requests: int, before: str = "the bare app's last run"
) -> str:
    """The portal's catch-up after its runs (``wait_until_idle``), per request of those runs."""
    waited, cpu, quiet = settled
    per_request = cpu / requests * 1e6 if requests else 0.0
    state = "then quiet" if quiet else "still busy when the bench went on"
    return (
        f"{label:<10} after its runs: {waited:.1f} s and {cpu:.2f} s of CPU more ({per_request:,.0f} us a "
        f"request of its runs: its background threads catching up), {state}; before {before}"
    )


def catch_up_lines(after_runs, runs: WrkResult, after_warmup, warmup: WrkResult) -> list[str]:
    """The two catch-ups a throughput bench waits for (``catch_up``), as printed."""
    return [
        settled_line("portal", after_runs, runs.requests),
        settled_line("warm-up", after_warmup, warmup.requests, "the bare app's first run"),
    ]


def sanity_warning(bare: WrkResult) -> str | None:
    """The bare app must be fast enough that the ratio measures the portal, not the client."""
    if bare.rps > BARE_FLOOR:
        return None
    return (
        f"!! the bare app answered only {bare.rps:.0f} req/s (not above {BARE_FLOOR:,.0f}): the client "
        "or the machine is the limit, not the app; the ratio says little. Rerun on a quieter machine."
    )


def verdict(ratio: float, target: float) -> str:
    return f"target ≥ {target:.2f}: {'met' if ratio >= target else 'MISSED'}"
