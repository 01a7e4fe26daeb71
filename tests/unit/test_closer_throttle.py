"""The closer's sign-in throttle in isolation: the backoff curve, the keys, the client address."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from gridloop.settings import Settings
from services.closer import throttle
from services.closer.context import client_address


def test_waits_double_from_one_second_and_stop_at_the_cap() -> None:
    """No failure: no wait; then 1, 2, 4 … seconds, never past MAX_WAIT (a wait, not a lock-out)."""
    assert [throttle.wait_after(n) for n in range(0, 6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert throttle.wait_after(9) == 256.0
    assert throttle.wait_after(10) == throttle.MAX_WAIT == 300.0
    assert throttle.wait_after(10_000) == 300.0


def test_keys_of_accounts_and_addresses_never_collide() -> None:
    """An account named like an address key is still an account key."""
    assert throttle.account_key("addr:10.0.0.1") != throttle.address_key("10.0.0.1")
    assert len(throttle.account_key("x" * 500)) == len("user:") + 100


def _request(host: str | None) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "headers": [],
        "client": (host, 1234) if host is not None else None,
        # the closer reads the trusted proxies from its settings (none here: the peer is the client)
        "app": SimpleNamespace(state=SimpleNamespace(closer=SimpleNamespace(settings=Settings()))),
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_client_address_groups_an_ipv6_client_by_its_64(host: str | None, address: str) -> None:
    """IPv4 as it is; IPv6 by its /64 (one subscriber holds a whole /64); no client: one key."""
    assert client_address(_request(host)) == address
