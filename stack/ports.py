"""Free loopback ports for servers of a test or benchmark stack of their own.

Ports come from below the kernel's ephemeral range. A port the kernel handed
out (``bind(0)``) comes from that range, and while a server is restarted any
client's outgoing connection may take it as its own local port: the server
then cannot bind it again (a Kafka restart in the soak fails so, its
controller port taken).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000


def _below_ephemeral() -> int:
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768  # Linux's default
    return max(low, LOWEST + 1000)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(pair: bool = False) -> int:
    """A free loopback port outside the ephemeral range (and, with ``pair``, the next one too: Kafka's controller)."""
    top = _below_ephemeral() - 2
    while True:
        port = random.randrange(LOWEST, top)
        if _bindable(port) and (not pair or _bindable(port + 1)):
            return port
