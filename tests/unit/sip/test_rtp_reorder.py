"""ReorderBuffer: in-order release, the 16-bit sequence wrap, and a sender that renumbers."""

from __future__ import annotations

from app.sip.rtp import RtpPacket
from app.sip.rtp_reorder import ReorderBuffer


def push_all(buffer: ReorderBuffer, *sequences: int, ssrc: int = 1) -> list[int]:
    released = []
    for sequence in sequences:
        released += [p.sequence for p in buffer.push(RtpPacket(0, sequence, 0, ssrc, b""))]
    return released


def test_the_sequence_wraps_from_65535_to_0_without_loss() -> None:
    buffer = ReorderBuffer()

    assert push_all(buffer, 65534, 65535, 0, 1) == [65534, 65535, 0, 1]
    assert buffer.stats.lost == 0


def test_reordering_across_the_wrap_is_undone() -> None:
    assert push_all(ReorderBuffer(), 65535, 1, 0) == [65535, 0, 1]


def test_one_packet_far_ahead_is_dropped() -> None:
    buffer = ReorderBuffer()

    assert push_all(buffer, 100, 101, 20000, 102) == [100, 101, 102]


def test_a_sender_that_renumbers_is_followed_after_two_packets_in_a_row() -> None:
    buffer = ReorderBuffer()

    assert push_all(buffer, 100, 101, 20000, 20001, 20002) == [100, 101, 20001, 20002]
    assert buffer.stats.restarts == 1
    assert buffer.stats.lost == 0


def test_flush_releases_the_held_packets_and_counts_the_gaps() -> None:
    buffer = ReorderBuffer()
    push_all(buffer, 1, 3, 5)

    assert [p.sequence for p in buffer.flush()] == [3, 5]
    assert buffer.stats.lost == 2
    assert buffer.held == 0
