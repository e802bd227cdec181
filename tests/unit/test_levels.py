"""Audio levels for the console: RMS in dBFS per window, metered only while someone watches the call."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from app.api import live
from app.calls.call_media import CallMedia
from app.calls.framed_stream import FramedStream
from app.media.codecs import encode_from_pcm16
from app.media.formats import PCMU_8K, pcm16
from app.media.levels import LevelMeter
from app.providers.base import StreamStart
from app.providers.twilio import TwilioFraming
from tests.conftest import TWILIO_START, wait_for
from tests.unit.scripted_stream import ScriptedSocket


def tone(amplitude: float, seconds: float = 0.2, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def test_a_sine_of_half_full_scale_is_minus_9_dbfs() -> None:
    meter = LevelMeter()
    meter.feed(tone(16384))
    assert meter.take() == pytest.approx(-9.0, abs=0.1)  # -6 dB for half scale, -3 dB for a sine's RMS


def test_silence_and_no_audio_are_none() -> None:
    meter = LevelMeter()
    assert meter.take() is None
    meter.feed(bytes(320))
    assert meter.take() is None


def test_each_take_starts_a_new_window() -> None:
    meter = LevelMeter()
    meter.feed(tone(16384))
    meter.take()
    meter.feed(tone(1638))
    assert meter.take() == pytest.approx(-29.0, abs=0.1)


@pytest.fixture
async def media():
    framing = TwilioFraming()
    framing.decode(orjson.dumps(TWILIO_START))
    stream = FramedStream(ScriptedSocket([]), framing)
    media = CallMedia(StreamStart("MZ1", "CA1", PCMU_8K), [pcm16(8000)], stream, lead_ms=60)
    task = asyncio.create_task(media.run())
    yield media
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_call_nobody_watches_meters_nothing(media: CallMedia) -> None:
    assert media.playout.on_frame_sent is None
    levels = media.watch_levels()
    media.unwatch_levels(levels)
    assert media.playout.on_frame_sent is None
    media.from_caller(encode_from_pcm16(tone(16384), PCMU_8K))
    assert levels.take() == {"callerToAgent": None, "agentToCaller": None}


async def test_a_watched_call_meters_the_caller_and_the_agent_audio_sent(media: CallMedia) -> None:
    levels = media.watch_levels()
    media.from_caller(encode_from_pcm16(tone(16384), PCMU_8K))
    assert levels.caller_to_agent.take() == pytest.approx(-9.0, abs=0.3)  # μ-law costs a little
    assert levels.agent_to_caller.take() is None  # the caller's audio is not the agent's
    media.to_caller(tone(1638, seconds=0.06))

    async def agent_audio_sent() -> float | None:
        return levels.agent_to_caller.take()

    assert await wait_for(agent_audio_sent, within=2) == pytest.approx(-29.0, abs=1.0)


class _Sessions:
    def __init__(self, media: CallMedia) -> None:
        self.session = SimpleNamespace(media=media)

    def get(self, call_id: str) -> SimpleNamespace | None:
        return self.session if call_id == "CALL" else None


async def test_a_watcher_on_another_instance_gets_each_window_then_is_detached_when_it_stops_asking(
    media: CallMedia, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "FORWARDED_IDLE_S", 0.05)
    forwarded = live.ForwardedLevels(SimpleNamespace(sessions=_Sessions(media)))  # type: ignore[arg-type]
    assert forwarded.answer("CALL", "w1").status == 204  # its first window starts now
    media.from_caller(encode_from_pcm16(tone(16384), PCMU_8K))
    reply = forwarded.answer("CALL", "w1")
    assert reply.status == 200 and orjson.loads(reply.body)["callerToAgent"] == pytest.approx(-9.0, abs=0.3)

    async def detached() -> bool:
        return media.playout.on_frame_sent is None

    await wait_for(detached, within=2)
