"""The simulator's SIP phone: the INVITE and offer it sends, its options, its report, and one call between
two phones on loopback."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from app.settings import Settings
from app.simulator.carrier import SetupError
from app.simulator.sip_caller import caller_offer, parse_headers, sip_target
from app.simulator.sip_media import MediaResult, PayloadCodec
from app.simulator.sip_phone import SipPhone, build_invite
from app.simulator.sip_report import SipCallReport, refusal_text
from app.sip.dialog import LocalAddress
from app.sip.message import SipRequest, parse_name_addr, parse_uri
from app.sip.sdp import CODECS, Negotiated, parse_sdp

HERE = LocalAddress("udp", "127.0.0.1", 40000)
CALLER = parse_name_addr('"Simulator" <sip:+15550001111@127.0.0.1>')


def invite_to(
    uri: str, headers: list[tuple[str, str]] | None = None, offer: bytes = b"v=0\r\n"
) -> SipRequest:
    return build_invite(parse_uri(uri), CALLER, HERE, headers or [], offer)


def options(**given: object) -> argparse.Namespace:
    values = {"agent": "a1", "to_user": None, "sip_host": None, "sip_port": None, "transport": None}
    return argparse.Namespace(**{**values, **given})


def settings(tmp_path: Path, sip_listen: str = "") -> Settings:
    return Settings(data_dir=tmp_path, sip_listen=sip_listen)


# --- the INVITE and its offer ------------------------------------------------------------------------


def test_the_invite_goes_to_the_agent_user_from_the_simulator_caller() -> None:
    invite = invite_to("sip:agent_a1@127.0.0.1:5060")
    assert invite.method == "INVITE" and invite.uri.user == "agent_a1"
    assert invite.from_.display_name == "Simulator" and invite.from_.uri.user == "+15550001111"
    assert invite.from_.tag and invite.to.tag is None
    assert invite.cseq == (1, "INVITE")


def test_the_invite_carries_the_x_headers_and_the_offer() -> None:
    invite = invite_to("sip:agent_a1@127.0.0.1", [("X-Customer", "42")], offer=b"v=0\r\n")
    assert invite.headers.get("X-Customer") == "42"
    assert invite.content_type == "application/sdp" and invite.body == b"v=0\r\n"


def test_the_invite_is_answerable_at_the_phone_contact() -> None:
    invite = invite_to("sip:agent_a1@127.0.0.1")
    assert invite.contact is not None and invite.contact.uri.port == HERE.port
    assert invite.top_via.branch and invite.top_via.port == HERE.port


@pytest.mark.parametrize(("codec", "payload_type"), [("PCMU", "0"), ("PCMA", "8"), ("G722", "9")])
def test_the_offer_holds_only_the_chosen_codec_and_telephone_event(codec: str, payload_type: str) -> None:
    media = parse_sdp(caller_offer(codec, 30000)).media[0]
    assert media.port == 30000
    assert media.formats[0] == payload_type and len(media.formats) == 2
    assert media.rtpmap(media.formats[1]) == ("telephone-event", 8000, 1)


# --- options -----------------------------------------------------------------------------------------


def test_headers_are_name_colon_value_and_the_value_may_hold_colons() -> None:
    assert parse_headers(["X-Url: http://a:1/b", "X-Id:7"]) == [("X-Url", "http://a:1/b"), ("X-Id", "7")]


def test_a_header_without_a_colon_is_a_setup_error() -> None:
    with pytest.raises(SetupError, match="NAME:VALUE"):
        parse_headers(["X-Customer"])


def test_the_target_defaults_to_the_first_sip_listen_address(tmp_path: Path) -> None:
    target = sip_target(options(), settings(tmp_path, "tcp:0.0.0.0:5070,udp:127.0.0.1:5080"))
    assert target.uri == "sip:agent_a1@127.0.0.1:5070;transport=tcp"


def test_the_target_defaults_to_udp_on_loopback_5060_without_sip_listen(tmp_path: Path) -> None:
    assert sip_target(options(), settings(tmp_path)).uri == "sip:agent_a1@127.0.0.1:5060"


def test_the_options_override_the_target(tmp_path: Path) -> None:
    given = options(to_user="sales", sip_host="10.0.0.5", sip_port=5090, transport="udp")
    assert sip_target(given, settings(tmp_path, "tcp:0.0.0.0:5070")).uri == "sip:sales@10.0.0.5:5090"


def test_a_call_needs_an_agent_or_a_user(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="--agent"):
        sip_target(options(agent=None), settings(tmp_path))


# --- codecs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "pcm_bytes"), [("PCMU", 320), ("PCMA", 320), ("G722", 640)])
def test_a_packet_is_20_ms_of_pcm_in_160_payload_bytes(codec: str, pcm_bytes: int) -> None:
    payload_codec = PayloadCodec(codec)
    assert payload_codec.pcm_frame_bytes == pcm_bytes
    assert len(payload_codec.encode(bytes(pcm_bytes))) == payload_codec.payload_bytes == 160


@pytest.mark.needs_opus
def test_the_simulator_speaks_opus_at_16_khz() -> None:
    payload_codec = PayloadCodec("opus")
    assert payload_codec.pcm_frame_bytes == 640
    assert len(payload_codec.decode(payload_codec.encode(bytes(640)))) == 640


# --- the report --------------------------------------------------------------------------------------


def media(**given: object) -> MediaResult:
    values: dict[str, object] = {
        "sent": b"", "played": b"", "packets_sent": 225, "packets_received": 224, "lost": 0,
        "underrun_ticks": 0, "digits_sent": ["1", "2"], "digits_received": [], "dtmf_negotiated": True,
        "stalls": 0,
    }  # fmt: skip
    return MediaResult(**{**values, **given})  # type: ignore[arg-type]


def report(result: MediaResult, ended_by: str = "simulator", dtmf_pt: int | None = 101) -> SipCallReport:
    negotiated = Negotiated(CODECS["G722"], 9, dtmf_pt, 20, "127.0.0.1", 20000, "sendrecv")
    return SipCallReport(
        direction="to callbridge", sip_call_id="c1@127.0.0.1", call_id=None,
        target="sip:agent_a1@127.0.0.1:5060", transport="udp",
        signalling=["100 Trying", "180 Ringing", "200 OK"], negotiated=negotiated, media=result,
        ended_by=ended_by, bye_answer="200 OK" if ended_by == "simulator" else None,
    )  # fmt: skip


def test_the_report_names_the_codec_at_its_audio_rate_and_the_digits_sent() -> None:
    text = report(media()).summary()
    assert "audio G722 16000 Hz (payload type 9, telephone-event 101)" in text
    assert "DTMF sent: 1 2" in text and "signalling: 100 Trying, 180 Ringing, 200 OK" in text


def test_the_report_says_who_hung_up() -> None:
    assert "ended by simulator (BYE answered 200 OK)" in report(media()).summary()
    assert "ended by callbridge (BYE)" in report(media(), ended_by="callbridge").summary()


def test_the_report_says_when_the_answer_allowed_no_digits() -> None:
    text = report(media(digits_sent=[], dtmf_negotiated=False), dtmf_pt=None).summary()
    assert "DTMF sent: none (no telephone-event in the answer)" in text


def test_the_report_measures_the_round_trip_of_what_came_back() -> None:
    tone = (b"\x00\x10\x00\xf0") * 1600
    text = report(media(sent=tone, played=bytes(320) + tone)).summary()
    assert "round trip: lag 10 ms, correlation 1.000" in text


def test_the_report_says_when_nothing_came_back() -> None:
    assert "round trip: no agent audio came back" in report(media(sent=b"\x01\x00" * 160)).summary()


@pytest.mark.parametrize(
    ("status", "reason", "hint"),
    [
        (403, "Forbidden", "PATCH /api/sip allowedCidrRanges"),
        (404, "Not Found", "allowAllAgents or an allowedAgents pattern"),
    ],
)
def test_a_refusal_says_what_to_change(status: int, reason: str, hint: str) -> None:
    text = refusal_text(status, reason)
    assert text.startswith(f"refused: {status} {reason}") and hint in text


def test_a_refusal_without_a_known_fix_has_no_hint() -> None:
    assert refusal_text(486, "Busy Here") == "refused: 486 Busy Here"


# --- two phones --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_phone_calls_another_which_answers_and_hears_the_hang_up(transport: str) -> None:
    caller, callee = SipPhone(transport), SipPhone(transport)
    await caller.start()
    await callee.start()
    try:
        target = f"sip:callee@127.0.0.1:{callee.here.port};transport={transport}"
        invite = build_invite(parse_uri(target), CALLER, caller.here, [], caller_offer("PCMU", 30000))
        calling = asyncio.create_task(caller.call(invite))
        incoming = await asyncio.wait_for(callee.next_invite(), 5)
        acked = asyncio.create_task(callee.answer(incoming, b"v=0\r\n"))
        final = await asyncio.wait_for(calling, 5)
        assert final.status == 200 and await asyncio.wait_for(acked, 5)
        bye_answer = await caller.hang_up()
        assert bye_answer is not None and bye_answer.status == 200
        assert callee.hung_up.is_set()
    finally:
        await caller.stop()
        await callee.stop()
