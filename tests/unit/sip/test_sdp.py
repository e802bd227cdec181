"""SDP parsing and offer/answer (RFC 8866, RFC 3264, RFC 4733 telephone-event)."""

from __future__ import annotations

import pytest

from app.sip.sdp import (
    CODECS,
    Negotiated,
    NoCommonCodec,
    SdpError,
    SessionDescription,
    accept_answer,
    answer_offer,
    build_offer,
    codecs_for,
    parse_sdp,
)

OURS = ["G722", "PCMU", "PCMA"]

# What `sipp -sd uac_pcap` sends, with [local_ip]=127.0.0.1, [local_ip_type]=4, [auto_media_port]=6000.
SIPP_UAC_PCAP = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-11,16\r\n"
)

# Captured from baresip 1.0.0 (modules opus, g722, g711) dialling a UDP socket.
BARESIP = (
    b"v=0\r\n"
    b"o=- 2962713106 1825938191 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"a=tool:baresip 1.0.0\r\n"
    b"m=audio 22864 RTP/AVP 96 9 0 8 101\r\n"
    b"a=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 stereo=1;sprop-stereo=1\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\n"
    b"a=label:1\r\n"
    b"a=rtcp-rsize\r\n"
    b"a=ssrc:3059660186 cname:sip:bot@127.0.0.1\r\n"
    b"a=minptime:20\r\n"
    b"a=ptime:20\r\n"
)


def offer(media: str, *, session: str = "c=IN IP4 192.0.2.10\n") -> SessionDescription:
    """An offer from its m= section(s), LF line ends (parse_sdp accepts them)."""
    text = f"v=0\no=alice 1 1 IN IP4 192.0.2.10\ns=-\n{session}t=0 0\n{media}"
    return parse_sdp(text.encode())


def answer(sdp: SessionDescription, prefs: list[str] = OURS) -> tuple[SessionDescription, Negotiated]:
    body, negotiated = answer_offer(sdp, prefs, "203.0.113.5", 40000, 1234)
    return parse_sdp(body), negotiated


# --- parsing -------------------------------------------------------------------------------------------


def test_parse_reads_session_and_media_lines() -> None:
    sdp = parse_sdp(BARESIP)
    assert sdp.origin.session_id == "2962713106"
    assert sdp.connection == "127.0.0.1"
    assert sdp.attribute("tool") == "baresip 1.0.0"
    [audio] = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        22864,
        "RTP/AVP",
        ["96", "9", "0", "8", "101"],
    )
    assert audio.rtpmap("96") == ("opus", 48000, 2)
    assert audio.fmtp("101") == "0-15"
    assert audio.int_attribute("ptime") == 20


def test_parse_keeps_unknown_lines() -> None:
    sdp = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nb=AS:64\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\nb=TIAS:64000\r\n"
    )
    assert ("b", "AS:64") in sdp.other_lines
    assert sdp.media[0].other_lines == [("b", "TIAS:64000")]


def test_parse_accepts_lf_only_line_ends() -> None:
    sdp = parse_sdp(SIPP_UAC_PCAP.replace(b"\r\n", b"\n"))
    assert sdp.media[0].formats == ["8", "101"]
    assert sdp.media[0].fmtp("101") == "0-11,16"


def test_media_level_connection_overrides_session_level() -> None:
    sdp = offer("m=audio 5004 RTP/AVP 0\nc=IN IP4 198.51.100.7\n")
    assert sdp.connection_of(sdp.media[0]) == "198.51.100.7"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello world",
        b"<html></html>",
        b"o=- 1 1 IN IP4 h\r\nv=0\r\n",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio port RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN\r\n",
    ],
)
def test_parse_refuses_what_is_not_sdp(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(body)


# --- answering -----------------------------------------------------------------------------------------


def test_pcmu_only_offer_gets_pcmu() -> None:
    sdp, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"))
    assert negotiated.codec == CODECS["PCMU"]
    assert negotiated.payload_type == 0
    assert negotiated.dtmf_payload_type is None
    assert (negotiated.remote_host, negotiated.remote_port) == ("192.0.2.10", 5004)
    assert sdp.media[0].formats == ["0"]


def test_our_preference_order_wins_over_the_offerers() -> None:
    sdp, negotiated = answer(offer("m=audio 5004 RTP/AVP 0 9\na=rtpmap:0 PCMU/8000\na=rtpmap:9 G722/8000\n"))
    assert negotiated.codec == CODECS["G722"]
    assert sdp.media[0].formats == ["9"]
    assert sdp.media[0].rtpmap("9") == ("G722", 8000, 1)


def test_preferences_decide_among_offered_codecs() -> None:
    _, negotiated = answer(offer("m=audio 5004 RTP/AVP 9 0 8\n"), ["PCMA", "PCMU"])
    assert negotiated.codec == CODECS["PCMA"]


@pytest.mark.parametrize("dtmf_pt", [101, 96])
def test_offerers_telephone_event_number_is_kept(dtmf_pt: int) -> None:
    media = (
        f"m=audio 5004 RTP/AVP 0 {dtmf_pt}\na=rtpmap:{dtmf_pt} telephone-event/8000\na=fmtp:{dtmf_pt} 0-15\n"
    )
    sdp, negotiated = answer(offer(media))
    assert negotiated.dtmf_payload_type == dtmf_pt
    assert sdp.media[0].formats == ["0", str(dtmf_pt)]
    assert sdp.media[0].rtpmap(str(dtmf_pt)) == ("telephone-event", 8000, 1)
    assert sdp.media[0].fmtp(str(dtmf_pt)) == "0-15"


def test_offerers_dynamic_codec_number_is_kept() -> None:
    _, negotiated = answer(offer("m=audio 5004 RTP/AVP 118\na=rtpmap:118 pcmu/8000\n"))
    assert (negotiated.codec, negotiated.payload_type) == (CODECS["PCMU"], 118)


@pytest.mark.parametrize(
    ("offered", "answered"), [("0-11,16", "0-11,16"), ("0-255", "0-16"), ("0-9, 12", "0-9,12")]
)
def test_answered_events_are_those_both_sides_support(offered: str, answered: str) -> None:
    sdp, _ = answer(
        offer(f"m=audio 5004 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=fmtp:101 {offered}\n")
    )
    assert sdp.media[0].fmtp("101") == answered


def test_telephone_event_without_fmtp_means_the_dtmf_events() -> None:
    sdp, negotiated = answer(offer("m=audio 5004 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n"))
    assert negotiated.dtmf_payload_type == 101
    assert sdp.media[0].fmtp("101") == "0-15"


def test_telephone_event_with_no_event_in_common_is_not_answered() -> None:
    media = "m=audio 5004 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=fmtp:101 32-41\n"
    sdp, negotiated = answer(offer(media))
    assert negotiated.dtmf_payload_type is None
    assert sdp.media[0].formats == ["0"]


@pytest.mark.parametrize("prefs", [["G722"], ["PCMU"]])
def test_telephone_event_at_another_clock_is_not_chosen(prefs: list[str]) -> None:
    media = "m=audio 5004 RTP/AVP 9 0 110\na=rtpmap:110 telephone-event/48000\n"
    sdp, negotiated = answer(offer(media), prefs)
    assert negotiated.dtmf_payload_type is None
    assert "110" not in sdp.media[0].formats


def test_telephone_event_matching_the_codec_clock_is_chosen_among_several() -> None:
    media = (
        "m=audio 5004 RTP/AVP 9 110 101\n"
        "a=rtpmap:110 telephone-event/48000\n"
        "a=rtpmap:101 telephone-event/8000\n"
    )
    _, negotiated = answer(offer(media))
    assert negotiated.dtmf_payload_type == 101


def test_static_payload_types_need_no_rtpmap() -> None:
    _, negotiated = answer(offer("m=audio 5004 RTP/AVP 8 9\n"))
    assert (negotiated.codec, negotiated.payload_type) == (CODECS["G722"], 9)


def test_rtpmap_overrides_a_static_number() -> None:
    _, negotiated = answer(offer("m=audio 5004 RTP/AVP 9 0\na=rtpmap:9 G7221/16000\n"))
    assert negotiated.codec == CODECS["PCMU"]


def test_video_stream_is_mirrored_with_port_zero() -> None:
    sdp, _ = answer(offer("m=audio 5004 RTP/AVP 0\nm=video 5006 RTP/AVP 96\na=rtpmap:96 H264/90000\n"))
    audio, video = sdp.media
    assert audio.port == 40000
    assert (video.media, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", ["96"])
    assert video.attributes == []


def test_stream_order_is_kept_when_video_comes_first() -> None:
    sdp, negotiated = answer(offer("m=video 5006 RTP/AVP 96\nm=audio 5004 RTP/AVP 0\n"))
    assert [(m.media, m.port) for m in sdp.media] == [("video", 0), ("audio", 40000)]
    assert negotiated.remote_port == 5004


def test_second_audio_stream_is_rejected() -> None:
    sdp, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\nm=audio 5008 RTP/AVP 0\n"))
    assert [m.port for m in sdp.media] == [40000, 0]
    assert negotiated.remote_port == 5004


def test_audio_stream_offered_with_port_zero_is_not_used() -> None:
    sdp, negotiated = answer(offer("m=audio 0 RTP/AVP 0\nm=audio 5008 RTP/AVP 8\n"))
    assert [m.port for m in sdp.media] == [0, 40000]
    assert negotiated.remote_port == 5008


def test_srtp_only_offer_has_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec):
        answer(offer("m=audio 5004 RTP/SAVP 0\n"))


def test_ilbc_only_offer_has_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec) as raised:
        answer(
            offer("m=audio 5004 RTP/AVP 97 101\na=rtpmap:97 iLBC/8000\na=rtpmap:101 telephone-event/8000\n")
        )
    assert raised.value.warning == (
        "Incompatible media format: offered iLBC/8000; supported G722/8000, PCMU/8000, PCMA/8000"
    )


def test_no_common_codec_is_a_value_error() -> None:
    assert issubclass(NoCommonCodec, ValueError)


def test_warning_text_never_carries_quotes_from_the_offer() -> None:
    with pytest.raises(NoCommonCodec) as raised:
        answer(offer('m=audio 5004 RTP/AVP 97\na=rtpmap:97 x"y\\z/8000\n'))
    assert '"' not in raised.value.warning
    assert "\\" not in raised.value.warning


def test_offer_without_audio_has_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec, match="no audio stream"):
        answer(offer("m=video 5006 RTP/AVP 96\n"))


def test_ilbc_and_g7221_next_to_pcmu_are_dropped() -> None:
    media = (
        "m=audio 5004 RTP/AVP 97 98 0\na=rtpmap:97 iLBC/8000\na=fmtp:97 mode=30\na=rtpmap:98 G7221/16000\n"
    )
    sdp, negotiated = answer(offer(media))
    assert negotiated.codec == CODECS["PCMU"]
    assert sdp.media[0].formats == ["0"]


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("sendrecv", "sendrecv"), ("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_direction_is_mirrored(offered: str, answered: str) -> None:
    sdp, negotiated = answer(offer(f"m=audio 5004 RTP/AVP 0\na={offered}\n"))
    assert negotiated.direction == answered
    assert sdp.media[0].has_attribute(answered)


def test_session_level_direction_applies_to_the_stream() -> None:
    _, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\n", session="c=IN IP4 192.0.2.10\na=sendonly\n"))
    assert negotiated.direction == "recvonly"


def test_missing_direction_means_sendrecv() -> None:
    sdp, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\n"))
    assert negotiated.direction == "sendrecv"
    assert sdp.media[0].has_attribute("sendrecv")


def test_old_style_hold_address_means_we_do_not_send() -> None:
    sdp, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\n", session="c=IN IP4 0.0.0.0\n"))
    assert negotiated.remote_host == "0.0.0.0"
    assert negotiated.direction == "recvonly"
    assert not negotiated.sends
    assert sdp.media[0].has_attribute("recvonly")


def test_inactive_offer_neither_sends_nor_receives() -> None:
    _, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\na=inactive\n"))
    assert not negotiated.sends
    assert not negotiated.receives


def test_audio_stream_without_any_address_is_an_sdp_error() -> None:
    with pytest.raises(SdpError):
        answer(offer("m=audio 5004 RTP/AVP 0\n", session=""))


def test_answer_asks_for_20_ms_packets() -> None:
    sdp, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\n"))
    assert sdp.media[0].attribute("ptime") == "20"
    assert negotiated.ptime_ms == 20


@pytest.mark.parametrize(("ptime", "expected"), [("10", 10), ("30", 30), ("40", 40), ("25", 20), ("x", 20)])
def test_offered_ptime_is_reported_when_usual(ptime: str, expected: int) -> None:
    sdp, negotiated = answer(offer(f"m=audio 5004 RTP/AVP 0\na=ptime:{ptime}\n"))
    assert negotiated.ptime_ms == expected
    assert sdp.media[0].attribute("ptime") == "20"


def test_maxptime_below_20_lowers_the_packet_interval() -> None:
    _, negotiated = answer(offer("m=audio 5004 RTP/AVP 0\na=maxptime:10\n"))
    assert negotiated.ptime_ms == 10


def test_answer_carries_our_address_origin_and_port() -> None:
    body, _ = answer_offer(
        offer("m=audio 5004 RTP/AVP 0\n"), OURS, "203.0.113.5", 40000, 1234, session_version=7
    )
    sdp = parse_sdp(body)
    assert (sdp.origin.session_id, sdp.origin.session_version, sdp.origin.address) == (
        "1234",
        "7",
        "203.0.113.5",
    )
    assert sdp.connection == "203.0.113.5"
    assert sdp.media[0].port == 40000
    assert body.endswith(b"\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")


def test_answer_to_the_sipp_uac_pcap_offer() -> None:
    sdp, negotiated = answer(parse_sdp(SIPP_UAC_PCAP))
    assert (negotiated.codec, negotiated.payload_type, negotiated.dtmf_payload_type) == (
        CODECS["PCMA"],
        8,
        101,
    )
    assert (negotiated.remote_host, negotiated.remote_port) == ("127.0.0.1", 6000)
    assert sdp.media[0].formats == ["8", "101"]


def test_answer_to_the_baresip_offer() -> None:
    sdp, negotiated = answer(parse_sdp(BARESIP))
    assert (negotiated.codec, negotiated.payload_type, negotiated.dtmf_payload_type) == (
        CODECS["G722"],
        9,
        101,
    )
    assert negotiated.direction == "sendrecv"
    assert sdp.media[0].formats == ["9", "101"]


# --- offering ------------------------------------------------------------------------------------------


def test_offer_lists_our_codecs_and_telephone_event() -> None:
    sdp = parse_sdp(build_offer(OURS, "203.0.113.5", 40000, 99))
    [audio] = sdp.media
    assert (audio.port, audio.proto, audio.formats) == (40000, "RTP/AVP", ["9", "0", "8", "101"])
    assert audio.rtpmap("9") == ("G722", 8000, 1)
    assert audio.rtpmap("101") == ("telephone-event", 8000, 1)
    assert audio.fmtp("101") == "0-16"
    assert audio.attribute("ptime") == "20"
    assert sdp.direction(audio) == "sendrecv"
    assert sdp.connection == "203.0.113.5"


def test_accept_answer_reads_the_chosen_codec() -> None:
    reply = parse_sdp(
        b"v=0\r\no=- 5 5 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n"
        b"m=audio 7078 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    negotiated = accept_answer(OURS, reply)
    assert (negotiated.codec, negotiated.payload_type, negotiated.dtmf_payload_type) == (
        CODECS["PCMU"],
        0,
        101,
    )
    assert (negotiated.remote_host, negotiated.remote_port, negotiated.direction) == (
        "198.51.100.2",
        7078,
        "sendrecv",
    )


def test_accept_answer_mirrors_the_answerers_direction() -> None:
    reply = parse_sdp(
        b"v=0\r\no=- 5 5 IN IP4 h\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n"
        b"m=audio 7078 RTP/AVP 8\r\na=recvonly\r\n"
    )
    assert accept_answer(OURS, reply).direction == "sendonly"


def test_accept_answer_with_the_stream_rejected_is_no_common_codec() -> None:
    reply = parse_sdp(
        b"v=0\r\no=- 5 5 IN IP4 h\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"
    )
    with pytest.raises(NoCommonCodec):
        accept_answer(OURS, reply)


def test_offer_answered_by_ourselves_round_trips() -> None:
    body, negotiated = answer_offer(
        parse_sdp(build_offer(OURS, "192.0.2.1", 30000, 1)), ["PCMU"], "192.0.2.2", 31000, 2
    )
    assert (negotiated.codec, negotiated.payload_type, negotiated.dtmf_payload_type) == (
        CODECS["PCMU"],
        0,
        101,
    )
    assert accept_answer(OURS, parse_sdp(body)) == Negotiated(
        codec=CODECS["PCMU"],
        payload_type=0,
        dtmf_payload_type=101,
        ptime_ms=20,
        remote_host="192.0.2.2",
        remote_port=31000,
        direction="sendrecv",
    )


# --- codec table ---------------------------------------------------------------------------------------


def test_g722_has_an_8000_rtp_clock_and_16000_audio() -> None:
    g722 = CODECS["G722"]
    assert (g722.clock_rate, g722.sample_rate, g722.static_pt) == (8000, 16000, 9)
    assert g722.samples_per_packet(20) == 160


def test_unknown_codec_preference_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported codec"):
        codecs_for(["PCMU", "iLBC"])


def test_codec_preferences_are_case_insensitive() -> None:
    assert codecs_for(["g722", "pcmu"]) == [CODECS["G722"], CODECS["PCMU"]]
