"""Twilio framing: when the agent's marks come back, from the bridge's playback positions."""

from __future__ import annotations

from app.pipeline.twilio_agent_framing import CLEAR_MARGIN_MS, MarkTracker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_mark_waits_until_its_audio_is_reported_played() -> None:
    tracker = MarkTracker(Clock())
    tracker.audio(500.0)

    assert tracker.mark("m") == []
    assert tracker.played(490.0) == []
    assert tracker.played(500.0) == ["m"]


def test_mark_with_nothing_unplayed_returns_at_once() -> None:
    tracker = MarkTracker(Clock())
    tracker.audio(200.0)
    tracker.played(200.0)

    assert tracker.mark("m") == ["m"]


def test_marks_return_in_order_as_positions_pass_them() -> None:
    tracker = MarkTracker(Clock())
    for name in ("a", "b", "c"):
        tracker.audio(100.0)
        tracker.mark(name)

    assert tracker.played(250.0) == ["a", "b"]
    assert tracker.played(300.0) == ["c"]


def test_positions_within_rounding_of_a_mark_reach_it() -> None:
    tracker = MarkTracker(Clock())
    for _ in range(3):
        tracker.audio(0.1 * 1000 / 3)
    tracker.mark("m")

    assert tracker.played(100.0 - 1e-6) == ["m"]


def test_clear_returns_every_pending_mark() -> None:
    tracker = MarkTracker(Clock())
    tracker.audio(1000.0)
    tracker.mark("a")
    tracker.audio(1000.0)
    tracker.mark("b")

    assert tracker.clear() == ["a", "b"]
    assert tracker.played(10_000.0) == []


def test_after_a_clear_positions_continue_from_what_the_caller_heard() -> None:
    clock = Clock()
    tracker = MarkTracker(clock)
    tracker.audio(1000.0)  # plays from t=100.0 to t=101.0
    clock.now += 0.3
    tracker.clear()  # the caller heard 300 ms; the bridge's position continues from there
    tracker.audio(500.0)
    tracker.mark("after-clear")

    assert tracker.played(300.0 + 500.0 - CLEAR_MARGIN_MS - 5.0) == []
    assert tracker.played(300.0 + 500.0) == ["after-clear"]


def test_after_a_clear_a_mark_cannot_wait_past_the_bridges_final_position() -> None:
    clock = Clock()
    tracker = MarkTracker(clock)
    tracker.audio(1000.0)
    clock.now += 0.3
    tracker.clear()
    tracker.audio(500.0)
    tracker.mark("goodbye")

    # The bridge heard a little less than this side's clock says (its playout started a bit later).
    assert tracker.played(280.0 + 500.0) == ["goodbye"]


def test_a_clear_never_moves_positions_below_what_was_reported() -> None:
    clock = Clock()
    tracker = MarkTracker(clock)
    tracker.audio(1000.0)
    tracker.played(600.0)
    tracker.clear()  # by the clock nothing has played yet, but the bridge already reported 600 ms
    tracker.audio(100.0)
    tracker.mark("m")

    assert tracker.played(650.0) == []
    assert tracker.played(700.0) == ["m"]
