"""The simulator's provider playback model (Twilio/Telnyx mark and clear semantics)."""

from __future__ import annotations

from app.simulator.playback import PlaybackBuffer


def test_mark_returns_at_once_when_nothing_is_queued() -> None:
    assert PlaybackBuffer(b"\xff").add_mark("m") == ["m"]


def test_mark_returns_when_the_audio_before_it_has_played() -> None:
    buffer = PlaybackBuffer(b"\xff")
    buffer.add_audio(b"a" * 300)
    assert buffer.add_mark("m") == []
    assert buffer.play(160) == (b"a" * 160, [], False)
    assert buffer.play(160) == (b"a" * 140 + b"\xff" * 20, ["m"], True)


def test_clear_drops_audio_and_returns_pending_marks() -> None:
    buffer = PlaybackBuffer(b"\xff")
    buffer.add_audio(b"a" * 320)
    buffer.add_mark("m1")
    buffer.add_audio(b"b" * 320)
    buffer.add_mark("m2")
    assert buffer.clear() == ["m1", "m2"]
    assert buffer.play(160) == (b"\xff" * 160, [], True)
