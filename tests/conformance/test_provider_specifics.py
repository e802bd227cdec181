"""What only one provider does: Telnyx reordering and error frames, Plivo μ-law, Exotel's rates and chunks."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript, call_id_of
from app.simulator.exotel import FakeExotel
from tests.conformance.conftest import provider_named
from tests.conftest import RunningServer, ended, events_of

pytestmark = pytest.mark.e2e


async def test_telnyx_frames_out_of_order_are_put_back_in_order(server: RunningServer, make_agent) -> None:
    telnyx = await provider_named(server, "telnyx")
    agent = await make_agent(pipeline={"echo": {"sampleRate": 16000}})
    audio = CallScript(audio=speech_like(2.0, 16000), sample_rate=16000, swap_every=5)
    report = await telnyx.call(agent, audio)
    # Swapped frames come out in order (left swapped, 2 of every 5 frames would be misplaced: ~0.6).
    assert report.round_trip is not None and report.round_trip.correlation >= 0.95


async def test_telnyx_codec_names_in_the_older_mime_spelling_are_understood(
    server: RunningServer, make_agent
) -> None:
    telnyx = await provider_named(server, "telnyx")
    assert telnyx.fake is not None
    telnyx.fake.legacy_encoding_names = True  # type: ignore[attr-defined]
    agent = await make_agent()
    report = await telnyx.call(agent, CallScript(audio=speech_like(1.0, 16000), sample_rate=16000))
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9


async def test_a_telnyx_error_frame_becomes_a_call_event(server: RunningServer, make_agent) -> None:
    telnyx = await provider_named(server, "telnyx")
    setup = await telnyx.new_stream(await make_agent())
    wire = telnyx.wire(setup)
    error = {
        "event": "error",
        "sequence_number": "3",
        "stream_id": wire.stream_id,
        "error": {"title": "invalid_media", "code": "100004"},
    }
    async with websockets.connect(setup.url) as ws:
        for message in [*wire.opening(), error, wire.closing()]:
            await ws.send(orjson.dumps(message).decode())
    call_id = call_id_of(setup.url)
    await ended(server, call_id)
    errors = [e for e in await events_of(server, call_id) if e["type"] == "provider_error"]
    assert errors[0]["extras"] == {"code": "100004"} and "invalid_media" in errors[0]["text"]


async def test_telnyx_pcmu_can_be_chosen_per_config(server: RunningServer, make_agent) -> None:
    telnyx = await provider_named(server, "telnyx")
    async with server.api() as api:
        await api.patch("/api/telephony_configs/telnyx", json={"streamCodec": "PCMU"})
        try:
            report = await telnyx.call(await make_agent(), CallScript(audio=speech_like(1.0)))
        finally:
            await api.patch("/api/telephony_configs/telnyx", json={"streamCodec": "L16"})
    assert str(report.audio_format) == "PCMU 8000 Hz"
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9


async def test_plivo_mulaw_can_be_chosen_per_config(server: RunningServer, make_agent) -> None:
    plivo = await provider_named(server, "plivo")
    async with server.api() as api:
        await api.patch("/api/telephony_configs/plivo", json={"streamContentType": "audio/x-mulaw;rate=8000"})
        try:
            report = await plivo.call(await make_agent(), CallScript(audio=speech_like(1.0)))
        finally:
            await api.patch(
                "/api/telephony_configs/plivo", json={"streamContentType": "audio/x-l16;rate=16000"}
            )
    assert str(report.audio_format) == "PCMU 8000 Hz"
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9


async def test_a_plivo_socket_closing_ends_the_call_with_hangup(server: RunningServer, make_agent) -> None:
    plivo = await provider_named(server, "plivo")
    report = await plivo.call(
        await make_agent(), CallScript(audio=speech_like(0.5, 16000), sample_rate=16000, tail_seconds=0.2)
    )
    call = await ended(server, report.call_id)
    assert call["endReason"] == "hangup"


@pytest.mark.parametrize("rate", [8000, 24000])
async def test_exotel_streams_at_the_rate_asked_for_in_the_url(
    server: RunningServer, make_agent, rate: int
) -> None:
    agent = await make_agent()
    async with server.api() as api:
        join_url = (await api.post(f"/api/agents/{agent}/calls", json={"medium": {"exotel": {}}})).json()[
            "joinUrl"
        ]
    report = await FakeExotel().call(
        join_url, CallScript(audio=speech_like(1.5, rate), sample_rate=rate), sample_rate=rate
    )
    assert report.audio_format.sample_rate == rate
    assert report.chunk_sizes and all(size % 320 == 0 and size >= 3200 for size in report.chunk_sizes)
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9


async def test_exotel_camel_case_stream_sid_is_accepted(server: RunningServer, make_agent) -> None:
    agent = await make_agent()
    async with server.api() as api:
        join_url = (await api.post(f"/api/agents/{agent}/calls", json={"medium": {"exotel": {}}})).json()[
            "joinUrl"
        ]
    report = await FakeExotel(camel_case_sid=True).call(join_url, CallScript(audio=speech_like(1.0)))
    assert report.round_trip is not None and report.round_trip.correlation >= 0.9
    call = await ended(server, report.call_id)
    events = await events_of(server, report.call_id)
    assert call["endReason"] == "hangup" and "callended" in events[-1]["text"]


async def test_two_providers_calls_at_once_do_not_disturb_each_other(
    server: RunningServer, make_agent
) -> None:
    agent = await make_agent(pipeline={"echo": {"sampleRate": 16000}})
    telnyx, plivo = await provider_named(server, "telnyx"), await provider_named(server, "plivo")
    audio = CallScript(audio=speech_like(1.5, 16000), sample_rate=16000)
    reports = await asyncio.gather(telnyx.call(agent, audio), plivo.call(agent, audio))
    good = [r.round_trip is not None and r.round_trip.correlation >= 0.9 for r in reports]
    assert all(good), "\n".join(r.summary() for r in reports)
