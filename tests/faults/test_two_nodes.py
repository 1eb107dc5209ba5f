"""Two portal nodes (separate ports, one PostgreSQL, one Redis) behind nginx configured as
deploy/nginx/portal.conf ships it: one node is killed (SIGKILL) mid-load; nothing answered is
lost and the partner's socket, moved to the other node, still gets the announcement."""

# ruff: noqa: F401, F811 - the fixtures are imported from _click_services and named as arguments

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

from tests.faults._click_services import (
    BROWSER,
    Flood,
    Nginx,
    Portal,
    clear_clicks,
    click_id_of,
    click_postgres,
    click_redis,
    click_seed,
    portal_env,
    spool_lines,
    stored_click_ids,
    wait_for,
)

pytestmark = pytest.mark.faults
FLOOD_THREADS = 6


class Sales:
    """A shop's server: a click through the proxy, then at once a sale naming its click id;
    a sale that got no answer is sent again (same transaction id) as a real client would."""

    def __init__(self, base_url: str, api_key: str):
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.answered: dict[str, str | None] = {}  # transaction id -> attributed_by
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sales:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                click = requests.get(
                    f"{self.base_url}/go/shoes", headers=BROWSER, allow_redirects=False, timeout=10
                )
            except requests.RequestException:
                continue
            transaction = f"two-nodes-{n}"
            body = {
                "transaction_id": transaction,
                "amount": "30.00",
                "currency": "USD",
                "click_id": click_id_of(click),
            }
            for _attempt in range(20):
                try:
                    sale = requests.post(
                        f"{self.base_url}/api/v1/conversions", json=body, headers=self.headers, timeout=10
                    )
                except requests.RequestException:
                    time.sleep(0.2)
                    continue
                if sale.status_code in (200, 201):
                    self.answered[transaction] = sale.json()["conversion"]["attributed_by"]
                    break
                assert sale.status_code in (502, 503, 504), sale.text
                time.sleep(0.2)
            time.sleep(0.05)


def _serving(nodes: list[Portal]) -> Portal:
    """The node nginx's ip_hash sends this machine's requests to."""
    counts = [node.log().count("GET /go/shoes") for node in nodes]
    assert sorted(counts)[0] == 0, f"ip_hash should send one address to one node: {counts}"
    return nodes[counts.index(max(counts))]


def _announce(base_url: str, cookie: str, title: str) -> None:
    http = requests.Session()
    http.cookies.set("session", cookie, domain="127.0.0.1", path="/")  # replaced by the one the page sets
    page = http.get(f"{base_url}/admin/announcements/new", timeout=10)
    assert page.status_code == 200, page.status_code
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page.text).group(1)
    response = http.post(
        f"{base_url}/admin/announcements/new",
        data={
            "title": title,
            "body": "Double commission this weekend.",
            "audience_kind": "all",
            "when": "now",
        },
        headers={"X-CSRFToken": token, "Referer": f"{base_url}/admin/announcements/new"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]


def test_one_node_killed_behind_nginx_loses_nothing_and_the_socket_moves_on(
    click_postgres, click_redis, click_seed, tmp_path
):
    import socketio

    clear_clicks(click_postgres.url)
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        env = portal_env(
            click_postgres.url,
            click_redis.url,
            tmp_path / name,
            SOCKETIO_CHANNEL="two-nodes",
            PROXY_FIX_HOPS="1",
        )
        nodes.append(Portal(env, tmp_path / name / "gunicorn.log", workers=1))
    nginx = None
    partner_socket = socketio.Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=1)
    try:
        for node in nodes:
            node.start()
        nginx = Nginx([node.port for node in nodes], tmp_path / "nginx")

        events: list[tuple[str, dict]] = []
        partner_socket.on("ready", lambda data: events.append(("ready", data)))
        partner_socket.on("announcement", lambda data: events.append(("announcement", data)))
        cookie = f"session={click_seed['cookie']('partner')}"
        # A callable: python-engineio deletes "Cookie" from the dict it is given when it upgrades
        # to a websocket, and the reconnection would then come without it.
        partner_socket.connect(nginx.url, headers=lambda: {"Cookie": cookie}, wait_timeout=10)
        wait_for(lambda: partner_socket.transport() == "websocket", 10, "the socket upgraded through nginx")
        wait_for(
            lambda: ("ready", {"room": f"partner:{click_seed['partner_id']}"}) in events,
            10,
            "the socket ready",
        )

        with (
            Flood(nginx.url, threads=FLOOD_THREADS) as flood,
            Sales(nginx.url, click_seed["api_key"]) as sales,
        ):
            wait_for(lambda: flood.count() > 800 and len(sales.answered) > 5, 60, "load before the kill")
            killed = _serving(nodes)
            killed.kill()
            before = flood.count()
            wait_for(lambda: flood.count() > before + 800, 60, "clicks answered by the other node")
            wait_for(lambda: [e for e, _ in events].count("ready") >= 2, 30, "the socket reconnected")
            _announce(nginx.url, click_seed["cookie"]("manager"), "Live after a node died")
            wait_for(
                lambda: any(e == "announcement" for e, _ in events), 15, "the announcement on the socket"
            )
            flood.stop()
            sales.stop()

        killed.start()  # the same node again, on its own spool: it replays what the kill left
        wait_for(
            lambda: sum(spool_lines(tmp_path / n / "click-spool") for n in "ab") == 0, 60, "spools replayed"
        )
        stored = stored_click_ids(click_postgres.url)
        print(
            f"\ntwo nodes, one killed: clicks sent {flood.sent}, answered {len(flood.answered)}, "
            f"stored {len(stored)}, lost {len(flood.answered - stored)}; sales answered {len(sales.answered)}"
        )
        assert set(flood.statuses) == {302}, flood.statuses
        assert flood.answered <= stored, f"{len(flood.answered - stored)} answered clicks lost"
        # Clicks spooled by the killed node whose answers the kill cut off (nginx then asked the
        # other node): at most one per request in flight, and never an answered one missing.
        extra = stored - flood.answered
        assert len(extra) <= FLOOD_THREADS + len(sales.answered) + 2

        import psycopg

        with psycopg.connect(
            click_postgres.url.replace("postgresql+psycopg://", "postgresql://")
        ) as connection:
            conversions = dict(
                connection.execute(
                    "SELECT transaction_id, attribution_method FROM conversions "
                    "WHERE transaction_id LIKE 'two-nodes-%'"
                ).fetchall()
            )
        assert conversions == sales.answered
        assert set(conversions.values()) == {"click_id"}
    finally:
        if partner_socket.connected:
            partner_socket.disconnect()
        if nginx is not None:
            nginx.close()
        for node in nodes:
            node.kill()
