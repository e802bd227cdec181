"""The webRtc medium's pieces without a server: offers checked, audio frames both ways, ICE host addresses."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aioice.ice
import numpy as np
import pytest
from av import AudioFrame

from app.errors import InvalidInput
from app.webrtc.ice import parse_host_addresses, use_host_addresses
from app.webrtc.offer import UnsupportedMediaType, check_offer
from app.webrtc.tracks import FRAME_BYTES, FRAME_S, FRAME_SAMPLES, LATE_WAIT_MS, AgentAudioTrack, mono_pcm

SDP = "application/sdp"
AUDIO = (
    "m=audio 59382 UDP/TLS/RTP/SAVPF 96 0\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "a=sendrecv\r\n"
    "a=mid:0\r\n"
    "a=rtcp-mux\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 59382 typ host\r\n"
    "a=end-of-candidates\r\n"
    "a=ice-ufrag:LHTh\r\n"
    "a=ice-pwd:56OnT9LcI5SXWj9FQ5IXlb\r\n"
    "a=fingerprint:sha-256 3A:34:38:D7:A3:5E:71:A6:56:F0:B1:9E:F1:86:6C:DD:"
    "B8:3A:44:63:A0:3E:6E:0C:96:89:BB:1B:FB:69:BC:92\r\n"
    "a=setup:actpass\r\n"
)
SESSION = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
DATA = "m=application 59382 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\na=mid:1\r\n"


def code_of(content_type: str | None, body: str | bytes) -> str:
    with pytest.raises((InvalidInput, UnsupportedMediaType)) as refused:
        check_offer(content_type, body.encode() if isinstance(body, str) else body)
    return refused.value.code


def test_an_offer_with_opus_and_candidates_is_taken() -> None:
    offer = check_offer(SDP, (SESSION + AUDIO).encode())
    assert offer.sdp == SESSION + AUDIO and not offer.data_channel


def test_an_offer_with_an_application_section_opens_the_data_channel() -> None:
    assert check_offer("application/sdp; charset=utf-8", (SESSION + AUDIO + DATA).encode()).data_channel


def test_a_body_of_another_content_type_is_415() -> None:
    assert code_of("application/json", SESSION + AUDIO) == "not_sdp"
    assert code_of(None, SESSION + AUDIO) == "not_sdp"


def test_a_body_that_is_not_sdp_text_is_an_invalid_offer() -> None:
    assert code_of(SDP, "hello") == "invalid_offer"
    assert code_of(SDP, b"\xff\xfe") == "invalid_offer"


def test_an_offer_whose_audio_has_no_opus_is_refused() -> None:
    pcmu_only = AUDIO.replace(" 96 0\r\n", " 0\r\n").replace("a=rtpmap:96 opus/48000/2\r\n", "")
    assert code_of(SDP, SESSION + pcmu_only) == "no_opus_audio"


def test_an_offer_with_opus_only_in_a_rejected_section_is_refused() -> None:
    assert code_of(SDP, SESSION + AUDIO.replace("m=audio 59382", "m=audio 0")) == "no_opus_audio"


def test_an_offer_without_candidates_is_refused_as_trickle() -> None:
    no_candidates = AUDIO.replace("a=candidate:1 1 udp 2130706431 127.0.0.1 59382 typ host\r\n", "")
    assert code_of(SDP, SESSION + no_candidates) == "no_ice_candidates"


def test_a_stereo_frame_is_mixed_to_mono() -> None:
    left = np.full(FRAME_SAMPLES, 1000, dtype="<i2")
    right = np.full(FRAME_SAMPLES, 3000, dtype="<i2")
    frame = AudioFrame.from_ndarray(
        np.stack([left, right], axis=1).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    assert np.all(np.frombuffer(mono_pcm(frame), dtype="<i2") == 2000)


async def test_the_agent_track_plays_what_was_queued_then_silence() -> None:
    track = AgentAudioTrack()
    speech = b"\x01\x02" * (FRAME_BYTES // 2)
    track.push(speech)
    frames = [await track.recv(), await track.recv()]
    assert [bytes(f.planes[0])[:FRAME_BYTES] for f in frames] == [speech, bytes(FRAME_BYTES)]
    assert [f.pts for f in frames] == [0, FRAME_SAMPLES] and frames[0].sample_rate == 48000


async def test_while_the_agent_speaks_a_late_frame_is_waited_for_not_replaced_by_silence() -> None:
    track = AgentAudioTrack()
    speech = b"\x01\x02" * (FRAME_BYTES // 2)
    track.push(speech)
    await track.recv()
    late = asyncio.get_running_loop().call_later(FRAME_S + LATE_WAIT_MS / 2000, track.push, speech)
    try:
        assert bytes((await track.recv()).planes[0])[:FRAME_BYTES] == speech
    finally:
        late.cancel()


async def test_a_clear_drops_what_the_agent_track_holds() -> None:
    track = AgentAudioTrack()
    for _ in range(3):
        track.push(b"\x01\x02" * (FRAME_BYTES // 2))
    track.clear()
    assert track.queued_frames == 0
    assert bytes((await track.recv()).planes[0])[:FRAME_BYTES] == bytes(FRAME_BYTES)


def test_host_addresses_are_ip_addresses() -> None:
    assert parse_host_addresses(" 127.0.0.1, ::1 ") == ["127.0.0.1", "::1"]
    assert parse_host_addresses("") == []
    with pytest.raises(ValueError):
        parse_host_addresses("localhost")


def test_ice_offers_exactly_the_configured_host_addresses() -> None:
    discovered = aioice.ice.get_host_addresses
    try:
        use_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
        use_host_addresses([])
        assert aioice.ice.get_host_addresses is discovered
    finally:
        use_host_addresses([])


def test_a_server_that_has_no_webrtc_call_does_not_load_aiortc() -> None:
    check = (
        "import sys; from app.main import create_app; from app.settings import Settings; "
        "create_app(Settings(webrtc_host_addresses='127.0.0.1')); "
        "print(sorted(m for m in ('aiortc', 'aioice', 'av') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
