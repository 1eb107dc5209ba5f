"""Which addresses a webhook may be sent to (services.webhooks.address_kind, resolve_checked)."""

from __future__ import annotations

import pytest

from portal.services import webhooks


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("93.184.215.14", None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link_local"),  # the cloud metadata service
        ("fe80::1", "link_local"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT: not global
        ("fd00::1", "private"),
        ("0.0.0.0", "blocked"),  # noqa: S104 - an address to judge, not one to bind
        ("224.0.0.1", "blocked"),
        # IPv6 addresses that carry an IPv4 one are judged by what they carry.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link_local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "link_local"),  # 6to4 of 169.254.169.254
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
        ("2002:5db8:d70e::", None),  # 6to4 of a public address
    ],
)
def test_address_kind(ip, kind):
    assert webhooks.address_kind(ip) == kind


def test_a_6to4_address_of_the_loopback_is_refused_unless_loopback_is_allowed(app):
    with app.app_context():
        app.config["WEBHOOK_ALLOW_NETWORKS"] = []
        with pytest.raises(webhooks.RefusedAddress, match="loopback"):
            webhooks.resolve_checked("2002:7f00:1::", 443)
        app.config["WEBHOOK_ALLOW_NETWORKS"] = ["loopback"]
        assert webhooks.resolve_checked("2002:7f00:1::", 443) == "2002:7f00:1::"
