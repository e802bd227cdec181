"""RTP packets (RFC 3550 §5.1) and telephone-event payloads (RFC 4733 §2.3): parse and build."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sip.rtp import RtpPacket, TelephoneEvent, event_for_digit, parse_rtp, parse_telephone_event

PACKET = RtpPacket(0, sequence=65535, timestamp=0xFFFFFFFF, ssrc=0xDEADBEEF, payload=b"\xff" * 160)


def header(first: int = 0x80, second: int = 0, sequence: int = 1, timestamp: int = 2, ssrc: int = 3) -> bytes:
    return struct.pack("!BBHII", first, second, sequence, timestamp, ssrc)


def test_a_built_packet_parses_back_to_itself() -> None:
    assert parse_rtp(PACKET.build()) == PACKET


def test_marker_and_csrc_list_survive_a_round_trip() -> None:
    packet = RtpPacket(9, 7, 160, 42, b"abc", marker=True, csrc=(1, 2, 3))

    assert parse_rtp(packet.build()) == packet


def test_the_fixed_header_is_laid_out_as_rfc_3550_says() -> None:
    data = RtpPacket(8, 0x0102, 0x03040506, 0x0708090A, b"x", marker=True).build()

    assert data == bytes([0x80, 0x88, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) + b"x"


def test_a_header_extension_is_skipped() -> None:
    extension = struct.pack("!HH", 0xBEDE, 2) + b"\x11" * 8

    packet = parse_rtp(header(first=0x90) + extension + b"payload")

    assert packet is not None
    assert packet.payload == b"payload"


def test_padding_is_removed_from_the_payload() -> None:
    packet = parse_rtp(header(first=0xA0) + b"payload" + b"\x00\x00\x03")

    assert packet is not None
    assert packet.payload == b"payload"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00",  # shorter than the fixed header
        header(first=0x40),  # version 1
        header(first=0x00) + b"STUN",  # version 0 (STUN, DTLS... on the media port)
        header(first=0x82) + b"\x00" * 4,  # two CSRCs announced, one present
        header(first=0x90) + struct.pack("!HH", 0xBEDE, 5),  # extension longer than the packet
        header(first=0x90) + b"\xbe",  # extension header cut short
        header(first=0xA0) + b"ab\x09",  # more padding than payload
        header(first=0xA0) + b"ab\x00",  # padding count of zero
        header(second=200) + b"\x00" * 8,  # an RTCP sender report on the RTP port (RFC 5761)
    ],
)
def test_what_is_not_a_well_formed_rtp_packet_parses_to_none(data: bytes) -> None:
    assert parse_rtp(data) is None


@given(st.binary(max_size=80))
def test_parsing_arbitrary_bytes_never_raises(data: bytes) -> None:
    parse_rtp(data)


def test_building_refuses_a_payload_type_over_127() -> None:
    with pytest.raises(ValueError, match="payload type"):
        RtpPacket(128, 0, 0, 0, b"").build()


def test_a_telephone_event_builds_to_rfc_4733_bytes() -> None:
    payload = TelephoneEvent(event=11, end=True, volume=10, duration=800).build()

    assert payload == bytes([11, 0x80 | 10, 0x03, 0x20])


def test_a_telephone_event_parses_back_to_itself() -> None:
    event = TelephoneEvent(event=5, end=False, volume=63, duration=65535)

    assert parse_telephone_event(event.build()) == event


def test_the_reserved_bit_is_ignored_when_parsing() -> None:
    assert parse_telephone_event(bytes([1, 0x40 | 10, 0, 160])) == TelephoneEvent(1, False, 10, 160)


def test_a_telephone_event_payload_shorter_than_four_bytes_parses_to_none() -> None:
    assert parse_telephone_event(b"\x01\x8a\x00") is None


@pytest.mark.parametrize(("event", "digit"), [(0, "0"), (9, "9"), (10, "*"), (11, "#"), (12, "A"), (15, "D")])
def test_events_0_to_15_are_the_dtmf_digits(event: int, digit: str) -> None:
    assert TelephoneEvent(event, False, 10, 0).digit == digit
    assert event_for_digit(digit) == event


def test_events_above_15_are_no_digit() -> None:
    assert TelephoneEvent(16, False, 10, 0).digit is None


def test_a_character_that_is_no_digit_has_no_event() -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        event_for_digit("w")


def test_building_refuses_a_volume_over_63() -> None:
    with pytest.raises(ValueError, match="volume"):
        TelephoneEvent(1, False, 64, 0).build()
