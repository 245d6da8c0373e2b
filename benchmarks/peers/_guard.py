"""Loopback-only networking for peer benchmark processes (imported before the peer package).

Every ``connect`` to an address that is not loopback (or a Unix socket) fails with ``OSError``
and is remembered in :data:`BLOCKED`, so a peer SDK can never reach the internet from a
benchmark, whatever it tries (update checks, telemetry, a default cloud endpoint). The runner
also sets proxy variables to a closed loopback port; this guard is the part that cannot be
bypassed by a library that ignores proxies.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

BLOCKED: list[str] = []
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_loopback(address):
        BLOCKED.append(repr(address))
        raise OSError(f"benchmark guard: connection to {address!r} refused (loopback only)")
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_loopback(address):
        BLOCKED.append(repr(address))
        return 111  # ECONNREFUSED
    return _connect_ex(self, address)


def install() -> None:
    """Patch ``socket.socket`` so that only loopback connections are possible."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]
