"""AudioReorderer: media released in sequence order; gaps given up after a few frames; late frames dropped."""

from __future__ import annotations

from app.providers.reordering import MAX_HELD_FRAMES, AudioReorderer


def started(first: int = 1) -> AudioReorderer:
    reorderer = AudioReorderer()
    reorderer.start(first)
    return reorderer


def test_in_order_frames_are_released_one_by_one() -> None:
    r = started()
    assert [r.media(n, bytes([n])) for n in (2, 3, 4)] == [b"\x02", b"\x03", b"\x04"]


def test_a_swapped_pair_is_released_together_in_order() -> None:
    r = started()
    assert r.media(3, b"B") is None
    assert r.media(2, b"A") == b"AB"


def test_a_frame_older_than_what_was_released_is_dropped() -> None:
    r = started()
    r.media(2, b"A")
    assert r.media(2, b"A") is None and r.late_dropped == 1


def test_a_lost_frame_is_given_up_after_the_hold_limit() -> None:
    r = started()
    held = [r.media(n, b"x") for n in range(3, 3 + MAX_HELD_FRAMES)]
    assert held == [None] * MAX_HELD_FRAMES
    assert r.media(3 + MAX_HELD_FRAMES, b"x") == b"x" * (MAX_HELD_FRAMES + 1)
    assert r.gaps_skipped == 1


def test_a_non_media_frame_fills_its_place_in_the_numbering() -> None:
    r = started()
    assert r.media(3, b"B") is None
    r.other(2)
    assert r.media(4, b"C") == b"BC"


def test_unnumbered_frames_pass_through() -> None:
    assert AudioReorderer().media(None, b"A") == b"A"
