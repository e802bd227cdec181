"""RTCP: the compound packets we send, and walking the ones we receive."""

from __future__ import annotations

import struct

from app.sip.rtcp import BYE, RR, SDES, SR, SenderInfo, build_report, rtcp_packet_types


def test_a_report_without_sent_media_is_an_rr_then_sdes() -> None:
    assert rtcp_packet_types(build_report(7, "abc@callbridge", None)) == [RR, SDES]


def test_a_report_after_sending_is_an_sr_with_our_counts() -> None:
    data = build_report(7, "abc@callbridge", SenderInfo(1_700_000_000.5, 1234, 50, 8000))

    assert rtcp_packet_types(data) == [SR, SDES]
    assert struct.unpack_from("!IIIIII", data, 4)[0::3] == (7, 1234)
    assert struct.unpack_from("!II", data, 20) == (50, 8000)


def test_the_sdes_chunk_carries_the_cname() -> None:
    assert b"abc@callbridge" in build_report(7, "abc@callbridge", None)


def test_a_compound_packet_lists_each_type() -> None:
    rr = struct.pack("!BBHI", 0x80, RR, 1, 9)
    bye = struct.pack("!BBHI", 0x81, BYE, 1, 9)

    assert rtcp_packet_types(rr + bye) == [RR, BYE]


def test_a_length_beyond_the_datagram_is_malformed() -> None:
    assert rtcp_packet_types(struct.pack("!BBHI", 0x80, RR, 9, 9)) is None


def test_an_unknown_packet_type_is_malformed() -> None:
    assert rtcp_packet_types(struct.pack("!BBHI", 0x80, 199, 1, 9)) is None
