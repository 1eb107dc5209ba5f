"""Socket.IO: who may connect, which room they join, and notify-after-commit."""

import pytest
from flask import g

from portal import realtime
from portal.extensions import socketio
from portal.models import PartnerStatus, Role
from tests.factories import PartnerFactory


def events(received: list[dict]) -> list[tuple[str, dict]]:
    # The test client lists a handler's emit args as a list, a server-side emit's as the value.
    return [(m["name"], m["args"][0] if isinstance(m["args"], list) else m["args"]) for m in received]


@pytest.fixture
def connect(app, client):
    """Open a Socket.IO test connection carrying the HTTP client's login cookie."""
    opened = []

    def open_socket():
        for key in list(g):
            g.pop(key)
        sio = socketio.test_client(app, flask_test_client=client)
        opened.append(sio)
        return sio

    yield open_socket
    for sio in opened:
        if sio.is_connected():
            sio.disconnect()


def test_anonymous_sockets_are_refused(connect, db):
    assert not connect().is_connected()


def test_applicants_cannot_listen(connect, login_as):
    login_as(Role.PARTNER, status=PartnerStatus.APPLIED)
    assert not connect().is_connected()


def test_partner_joins_their_own_room(connect, login_as, db):
    user = login_as(Role.PARTNER)
    sio = connect()
    assert sio.is_connected()
    assert events(sio.get_received()) == [("ready", {"room": f"partner:{user.partner.id}"})]


def test_operators_join_the_operators_room(connect, login_as):
    login_as(Role.MANAGER)
    sio = connect()
    assert sio.is_connected()
    assert events(sio.get_received()) == [("ready", {"room": "operators"})]


def test_notify_reaches_only_that_partner_and_only_after_commit(app, connect, login_as, db):
    user = login_as(Role.PARTNER)
    mine = connect()
    mine.get_received()
    other = PartnerFactory()
    db.session.commit()

    realtime.notify(user.partner.id, "message", {"thread": 1})
    realtime.notify(other.id, "message", {"thread": 2})
    assert mine.get_received() == []  # not before the commit
    db.session.commit()
    received = mine.get_received()
    assert events(received) == [("message", {"thread": 1})]


def test_notify_is_dropped_on_rollback(connect, login_as, db):
    user = login_as(Role.PARTNER)
    sio = connect()
    sio.get_received()
    db.session.execute(db.select(1))  # a transaction is open
    realtime.notify(user.partner.id, "message", {"thread": 1})
    db.session.rollback()
    db.session.commit()
    assert sio.get_received() == []


def test_notify_operators(connect, login_as, db):
    login_as(Role.ADMIN)
    sio = connect()
    sio.get_received()
    db.session.execute(db.select(1))
    realtime.notify_operators("application", {"partner_id": 7})
    db.session.commit()
    assert [m["name"] for m in sio.get_received()] == ["application"]


# The browser end hangs up right after the handshake: Engine.IO's writer thread may then fail
# to send its close frame (EBADF, a reset): expected, and waited for below so it lands here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("offer", ["permessage-deflate; client_max_window_bits", None])
def test_websockets_are_opened_without_per_message_compression(app, offer):
    """A browser offers permessage-deflate; the portal declines it (its events are a few bytes)."""
    import contextlib
    import io
    import socket
    import threading

    server_end, browser_end = socket.socketpair()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/socket.io/",
        "QUERY_STRING": "EIO=4&transport=websocket",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_UPGRADE": "websocket",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "werkzeug.socket": server_end,
    }
    if offer:
        environ["HTTP_SEC_WEBSOCKET_EXTENSIONS"] = offer

    def serve():
        # The browser end hangs up below; how the server's side then ends is not the point.
        with contextlib.suppress(Exception):
            app.wsgi_app(environ, lambda status, headers, exc_info=None: None)

    before = set(threading.enumerate())
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    browser_end.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = browser_end.recv(4096)
        assert chunk, answer
        answer += chunk
    browser_end.close()
    server.join(10)
    for thread in set(threading.enumerate()) - before:
        if "writer" in thread.name:  # Engine.IO's writer: its close frame may fail on the hung-up socket
            thread.join(5)
    server_end.close()
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 101")
    assert "sec-websocket-extensions" not in head
