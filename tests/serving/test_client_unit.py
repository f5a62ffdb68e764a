"""Client helpers that need no server."""

from __future__ import annotations

import pytest

from tfrec.serving.client import _is_loopback


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:8500", True),
        ("127.3.2.1:1", True),
        ("localhost:8500", True),
        ("[::1]:8500", True),
        ("serving.example.com:8500", False),
        ("10.0.0.5:8500", False),
    ],
)
def test_loopback_targets_bypass_http_proxies(target, loopback):
    assert _is_loopback(target) is loopback
