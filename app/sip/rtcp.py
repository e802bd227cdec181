"""RTCP (RFC 3550 §6): walk a compound packet's types; build a minimal SR or RR with an SDES CNAME."""

from __future__ import annotations

import struct
from dataclasses import dataclass

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204

_COMMON = struct.Struct("!BBH")  # V/P/count, packet type, length in 32-bit words minus one
_SR_BODY = struct.Struct("!IIIIII")  # SSRC, NTP seconds, NTP fraction, RTP timestamp, packets, octets
_NTP_EPOCH_OFFSET = 2_208_988_800  # 1900-01-01 to 1970-01-01 in seconds
_SDES_CNAME = 1


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """What an SR says about its sender's stream (RFC 3550 §6.4.1)."""

    ntp_time: float  # wall clock, Unix seconds
    rtp_timestamp: int
    packet_count: int
    octet_count: int


def rtcp_packet_types(data: bytes) -> list[int] | None:
    """The packet types in a compound RTCP packet, or None when it is malformed."""
    types: list[int] = []
    offset = 0
    while offset < len(data):
        if offset + _COMMON.size > len(data):
            return None
        first, packet_type, words = _COMMON.unpack_from(data, offset)
        if first >> 6 != 2 or not SR <= packet_type <= APP:
            return None
        offset += 4 * (words + 1)
        if offset > len(data):
            return None
        types.append(packet_type)
    return types or None


def build_report(ssrc: int, cname: str, sender: SenderInfo | None) -> bytes:
    """A compound SR (when `sender` is given, i.e. we sent media) or RR, then an SDES CNAME.

    No report blocks: the far end learns we are alive and what we sent, which is all a PBX checks.
    """
    if sender is None:
        body = struct.pack("!I", ssrc)
        head = _COMMON.pack(0x80, RR, len(body) // 4)
    else:
        seconds = sender.ntp_time + _NTP_EPOCH_OFFSET
        fraction = int((seconds % 1.0) * (1 << 32)) & 0xFFFFFFFF
        body = _SR_BODY.pack(
            ssrc,
            int(seconds) & 0xFFFFFFFF,
            fraction,
            sender.rtp_timestamp & 0xFFFFFFFF,
            sender.packet_count & 0xFFFFFFFF,
            sender.octet_count & 0xFFFFFFFF,
        )
        head = _COMMON.pack(0x80, SR, len(body) // 4)
    return head + body + _sdes_cname(ssrc, cname)


def _sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, _SDES_CNAME, len(text)) + text + b"\x00"  # item list ends with 0
    chunk += b"\x00" * (-len(chunk) % 4)
    return _COMMON.pack(0x81, SDES, len(chunk) // 4) + chunk
