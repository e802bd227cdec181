"""Free loopback ports for SIP peers: one free for both UDP and TCP, an even RTP port (RTCP above it)."""

from __future__ import annotations

import random
import socket

HOST = "127.0.0.1"


def _bindable(kind: int, port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_sip_port(host: str = HOST) -> int:
    """A port that is free for UDP and for TCP on `host` (SIP listens on both with one number)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
        if _bindable(socket.SOCK_STREAM, port, host) and _bindable(socket.SOCK_DGRAM, port, host):
            return port
    raise RuntimeError("no port free for both UDP and TCP")


def free_sip_port_pair(host: str = HOST) -> int:
    """A free SIP port p (UDP and TCP) with p + 1 free for TCP too (baresip listens for TLS there)."""
    for _ in range(200):
        port = free_sip_port(host)
        if port < 65535 and _bindable(socket.SOCK_STREAM, port + 1, host):
            return port
    raise RuntimeError("no SIP port free with the one above it")


def free_rtp_port(host: str = HOST) -> int:
    """An even UDP port p with p + 1 free too (RTP and its RTCP)."""
    for _ in range(200):
        port = random.randrange(20000, 60000, 2)
        if _bindable(socket.SOCK_DGRAM, port, host) and _bindable(socket.SOCK_DGRAM, port + 1, host):
            return port
    raise RuntimeError("no free even RTP port pair")


def rtp_port_range(size: int = 200, host: str = HOST) -> tuple[int, int]:
    """(first, last) of a range of `size` ports starting at an even free pair, for CALLBRIDGE_RTP_PORTS.

    Ports inside it may be taken later by others; the server skips ports in use.
    """
    first = free_rtp_port(host)
    return first, min(first + size - 1, 65535)
