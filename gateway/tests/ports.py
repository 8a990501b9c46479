"""Free TCP ports for the servers the tests and the benchmarks start.

Ports come from below the kernel's ephemeral range. A port from inside it (what binding port 0
gives) can be taken by the local end of any outgoing connection the moment its server stops, so a
model server restarted on the same port by a switch or a crash restart would fail with "address
already in use" while a load of requests runs: a flaky test that says nothing about the code.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing uses now and no earlier call of this process returned."""
    high = _ephemeral_low()
    low = 10000
    if high - low >= 1000:
        for _ in range(500):
            port = random.randrange(low, high)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket() as sock:  # an unusual port range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port
