"""RTP packets (RFC 3550 §5.1) and RFC 4733 telephone-event payloads: parse and build.

Parsing never raises: anything that is not a well-formed RTP version 2 packet gives None, so a scanner's
garbage on a media port costs one failed parse and a counter.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_BYTES = 12
#: RFC 4733 §3.2: events 0-15 are the DTMF digits, in this order.
EVENT_DIGITS = "0123456789*#ABCD"

_HEADER = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")
# RFC 5761 §4: second bytes 200-204 (pt 72-76 with the marker set) are RTCP sent to the RTP port.
_RTCP_SECOND_BYTES = range(200, 205)


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet: the fixed header fields, the CSRC list and the payload (extension/padding dropped)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()

    def build(self) -> bytes:
        """The packet on the wire (no extension, no padding)."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type must be 0-127, got {self.payload_type}")
        if len(self.csrc) > 15:
            raise ValueError(f"RTP allows at most 15 CSRCs, got {len(self.csrc)}")
        first = (RTP_VERSION << 6) | len(self.csrc)
        second = (0x80 if self.marker else 0) | self.payload_type
        header = _HEADER.pack(
            first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF
        )
        if self.csrc:
            header += struct.pack(f"!{len(self.csrc)}I", *self.csrc)
        return header + self.payload


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The RTP packet in `data`, or None when `data` is not a well-formed RTP version 2 packet."""
    size = len(data)
    if size < HEADER_BYTES:
        return None
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION or second in _RTCP_SECOND_BYTES:
        return None
    csrc_count = first & 0x0F
    offset = HEADER_BYTES + 4 * csrc_count
    if offset > size:
        return None
    csrc = struct.unpack_from(f"!{csrc_count}I", data, HEADER_BYTES) if csrc_count else ()
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if offset + 4 > size:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
        if offset > size:
            return None
    end = size
    if first & 0x20:  # padding: the last byte counts the padding bytes, itself included
        padding = data[-1]
        if padding == 0 or offset + padding > size:
            return None
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrc=tuple(csrc),
    )


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """An RFC 4733 §2.3 named event: event code, end bit, volume (0-63, -dBm0) and duration (RTP units)."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        """The DTMF digit this event is, or None for other events (tones, flash...)."""
        return EVENT_DIGITS[self.event] if self.event < len(EVENT_DIGITS) else None

    def build(self) -> bytes:
        """The 4-byte payload."""
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code must be 0-255, got {self.event}")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume must be 0-63, got {self.volume}")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"telephone-event duration must be 0-65535, got {self.duration}")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def parse_telephone_event(payload: bytes) -> TelephoneEvent | None:
    """The event in an RFC 4733 payload, or None when it is shorter than 4 bytes."""
    if len(payload) < _EVENT.size:
        return None
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)


def event_for_digit(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit (0-9, *, #, A-D; a-d accepted). ValueError otherwise."""
    index = EVENT_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"{digit!r} is not a DTMF digit")
    return index
