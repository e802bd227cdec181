"""A real pipecat bot (third-party code, unchanged) behind callbridge's `websocket` pipeline, twilio framing.

callbridge plays Twilio towards the bot; the bot is pipecat's own Twilio setup (tests/e2e/pipecat_bot.py)
with an echo in place of STT/LLM/TTS. A simulated Twilio call must hear its own audio back.

Two pipeline rates: 8 kHz both ways, as in pipecat's Twilio example, where nothing is resampled; and
pipecat's defaults (16 kHz in, 24 kHz out), where its soxr stream resamplers (VHQ) hand audio on in bursts
of about 100-140 ms, so the caller's playback runs dry between bursts. The silence of those gaps shifts
the rest of the echo, which lowers the single-lag correlation without any audio being lost or altered; so
for those rates the content is checked with the gaps taken out, and the plain figures are printed.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="pipecat-ai is a test dependency: pip install -e '.[test]'")

from app.simulator.audio import RoundTrip, measure_round_trip, speech_like
from app.simulator.carrier import CallScript
from app.simulator.twilio import FakeTwilio
from tests.conftest import RunningServer, ended
from tests.e2e.pipecat_bot import pipecat_bot

pytestmark = pytest.mark.e2e

RATE = 8000  # the Twilio stream's, and so the script's and the played audio's
# A run of exact-zero samples this long is playback silence (a gap or the tail), never the test signal.
GAP_SAMPLES = 16


def without_silence(pcm: bytes, min_run: int = GAP_SAMPLES) -> bytes:
    """s16le with every run of at least `min_run` zero samples cut out (the playback gaps and the tail)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    zero = np.concatenate(([False], samples == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    keep = np.ones(len(samples), dtype=bool)
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start >= min_run:
            keep[start:stop] = False
    return samples[keep].tobytes()


def shown(rt: RoundTrip | None) -> str:
    """A round trip for the printout."""
    return f"lag {rt.lag_ms:6.1f} ms, correlation {rt.correlation:.4f}" if rt else "no audio back"


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "gapless"),
    [
        pytest.param(8000, 8000, True, id="8k-as-pipecats-twilio-example"),
        pytest.param(16000, 24000, False, id="pipecat-default-rates-soxr"),
    ],
)
async def test_a_pipecat_twilio_bot_attaches_unchanged(
    server: RunningServer, twilio: FakeTwilio, make_agent, in_rate: int, out_rate: int, gapless: bool
) -> None:
    sent = speech_like(2.0, RATE)
    async with pipecat_bot(in_rate, out_rate) as bot:
        agent = await make_agent(pipeline={"websocket": {"url": bot.url, "framing": "twilio"}})
        report = await twilio.call(agent, CallScript(audio=sent, sample_rate=RATE))
        call = await ended(server, report.call_id)
        assert len(bot.sessions) == 1
        session = bot.sessions[0]
        async with asyncio.timeout(10):
            await session.finished.wait()  # pipecat saw the call end and shut its pipeline down

    rt, content = report.round_trip, measure_round_trip(sent, without_silence(report.played), RATE)
    print(
        f"\npipecat pipeline {in_rate}/{out_rate} Hz: {shown(rt)}; {report.underrun_ticks} playback gaps "
        f"(20 ms ticks); with the gaps cut out: correlation {content.correlation if content else 0.0:.4f}; "
        f"{session.echoed_frames} InputAudioRawFrames echoed"
    )
    assert session.error is None
    assert session.transport_type == "twilio"
    assert session.call_sid == report.provider_call_id
    assert session.stream_sid is not None and session.stream_sid.startswith("MZ")
    assert session.custom_parameters["callId"] == report.call_id
    assert session.from_number == "+15005550006"  # the caller, read by pipecat's own runner
    assert session.echoed_rates == {in_rate}
    assert content is not None and content.correlation >= 0.9
    if gapless:
        assert rt is not None and rt.correlation >= 0.9
    assert call["endReason"] == "hangup"
