"""A socket is only as signed in as its session: when the sessions end, the live channel ends.

A Socket.IO connection is authenticated once, when it opens. Signing out, "sign out
everywhere" (after a stolen session), a password reset or an admin switching off someone's
access all rotate the user's session token; every socket opened under the old token must
close then, and hear nothing more of that partner's (or the operators') events.
"""

import pytest

from portal import realtime
from portal.extensions import socketio
from portal.models import Role
from portal.services import accounts
from tests.factories import UserFactory
from tests.functional.test_realtime import connect  # noqa: F401 - a socket with the client's login
from tests.functional.test_redis_fanout import cluster  # noqa: F401 - the two-server fixture


def _names(sio) -> list[str]:
    return [m["name"] for m in sio.get_received()]


def _heard(sio, event_name: str) -> bool:
    """Whether the socket is still open and got ``event_name`` (a closed one hears nothing)."""
    return sio.is_connected() and event_name in _names(sio)


def _listeners(room: str) -> list:
    return list(socketio.server.manager.get_participants("/", room))


def test_signing_out_closes_the_partners_open_sockets(client, connect, login_as, db):  # noqa: F811 - the fixture
    user = login_as(Role.PARTNER)
    sio = connect()
    assert sio.is_connected()
    sio.get_received()

    signed_out = client.post("/logout")
    assert signed_out.status_code == 302

    realtime.notify(user.partner.id, "earnings", {"item": 1, "status": "paid"})
    db.session.commit()
    assert not _heard(sio, "earnings")
    assert not sio.is_connected()
    assert _listeners(realtime.partner_room(user.partner.id)) == []


def test_sign_out_everywhere_closes_a_stolen_sessions_socket(client, connect, login_as, db):  # noqa: F811 - the fixture
    user = login_as(Role.PARTNER)
    thief = connect()  # opened with the stolen cookie
    thief.get_received()

    accounts.sign_out_everywhere(user)  # the owner, from their own browser
    db.session.commit()

    realtime.notify(user.partner.id, "payout_details", {"fields": ["iban"]})
    db.session.commit()
    assert not _heard(thief, "payout_details")
    assert not thief.is_connected()
    assert _listeners(realtime.partner_room(user.partner.id)) == []


def test_a_switched_off_operator_stops_hearing_the_operators_room(client, connect, login_as, db):  # noqa: F811 - the fixture
    manager = login_as(Role.MANAGER)
    sio = connect()
    sio.get_received()

    accounts.set_user_active(UserFactory(role=Role.ADMIN), manager, False)
    db.session.commit()

    realtime.notify_operators("payout_details", {"partner": 1})
    db.session.commit()
    assert not _heard(sio, "payout_details")
    assert not sio.is_connected()
    assert _listeners(realtime.OPERATORS_ROOM) == []


def test_a_rolled_back_rotation_keeps_the_socket(client, connect, login_as, db):  # noqa: F811 - the fixture
    user = login_as(Role.PARTNER)
    sio = connect()
    sio.get_received()

    db.session.execute(db.select(1))
    accounts.end_sessions(user)
    db.session.rollback()

    realtime.notify(user.partner.id, "earnings", {})
    db.session.commit()
    assert sio.is_connected()
    assert _names(sio) == ["earnings"]


@pytest.mark.redis
def test_signing_out_on_one_server_closes_the_socket_on_the_other(cluster):  # noqa: F811 - the fixture
    """Two workers sharing Redis: the sign-out handled by A closes the socket held by B."""
    import re
    import time

    import requests

    from tests.functional.test_redis_fanout import WAIT, _listen

    server_a, server_b = cluster["urls"]
    client, _event, _payloads = _listen(server_b, cluster["cookie"]("partner"))
    try:
        http = requests.Session()
        http.cookies.set("session", cluster["cookie"]("partner"), domain="127.0.0.1")
        page = http.get(f"{server_a}/partner/inbox", timeout=WAIT)
        assert page.status_code == 200
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
        out = http.post(f"{server_a}/logout", data={"csrf_token": token}, allow_redirects=False, timeout=WAIT)
        assert out.status_code == 302
        deadline = time.monotonic() + WAIT
        while client.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.connected, "the socket on server B outlived the sign-out on server A"
    finally:
        if client.connected:
            client.disconnect()


def test_an_operator_who_must_enrol_two_factor_cannot_listen_until_they_do(connect, login_as, program, db):  # noqa: F811 - the fixture
    """With two-factor sign-in required for the team, the console waits for enrolment; the
    operators' live channel (who applied, wrote, changed payout details, when) waits too."""
    program.require_team_2fa = True
    db.session.commit()
    manager = login_as(Role.MANAGER)
    assert not manager.two_factor_enabled
    assert not connect().is_connected()
