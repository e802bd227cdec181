"""Opus in offer/answer (RFC 7587): opus/48000/2 first by default, its fmtp both ways, and the 488 Warning
for offers of codecs nobody can encode here (iLBC, G.722.1, G.722.2/AMR-WB)."""

from __future__ import annotations

import pytest

from app.media.opus import OUR_FMTP
from app.settings import Settings
from app.sip.media_setup import parse_codecs
from app.sip.sdp import CODECS, NoCommonCodec, accept_answer, build_offer, parse_sdp
from tests.unit.sip.test_sdp import BARESIP, answer, offer

pytestmark = pytest.mark.needs_opus

DEFAULT = parse_codecs(Settings.model_fields["sip_codecs"].default)


def test_opus_is_first_in_the_default_preference_order() -> None:
    assert DEFAULT == ["opus", "G722", "PCMU", "PCMA"]


def test_opus_has_a_48_khz_rtp_clock_two_channels_and_16_khz_audio() -> None:
    opus = CODECS["opus"]
    assert (opus.rtpmap, opus.sample_rate, opus.static_pt) == ("opus/48000/2", 16000, None)
    assert opus.samples_per_packet(20) == 960


def test_baresips_offer_gets_opus_on_its_payload_number_with_our_fmtp() -> None:
    sdp, negotiated = answer(parse_sdp(BARESIP), DEFAULT)
    assert (negotiated.codec, negotiated.payload_type) == (CODECS["opus"], 96)
    assert sdp.media[0].rtpmap("96") == ("opus", 48000, 2)
    assert sdp.media[0].fmtp("96") == OUR_FMTP


def test_our_answer_says_we_send_and_want_mono_at_16_khz() -> None:
    params = dict(item.split("=") for item in OUR_FMTP.split(";"))
    assert params == {
        "maxplaybackrate": "16000",
        "sprop-maxcapturerate": "16000",
        "stereo": "0",
        "sprop-stereo": "0",
    }


def test_the_offerers_opus_fmtp_is_kept_for_the_encoder() -> None:
    _, negotiated = answer(parse_sdp(BARESIP), DEFAULT)
    assert negotiated.fmtp == "stereo=1;sprop-stereo=1"


def test_opus_wins_over_g722_when_both_are_offered_in_the_other_order() -> None:
    media = "m=audio 5004 RTP/AVP 9 111\na=rtpmap:9 G722/8000\na=rtpmap:111 opus/48000/2\n"
    _, negotiated = answer(offer(media), DEFAULT)
    assert (negotiated.codec.name, negotiated.payload_type) == ("opus", 111)


def test_opus_with_one_channel_in_rtpmap_is_not_opus() -> None:
    media = "m=audio 5004 RTP/AVP 111 0\na=rtpmap:111 opus/48000\n"
    _, negotiated = answer(offer(media), DEFAULT)
    assert negotiated.codec == CODECS["PCMU"]  # RFC 7587 §7: always opus/48000/2


def test_our_offer_lists_opus_first_with_its_fmtp_and_telephone_event_at_48_khz() -> None:
    [audio] = parse_sdp(build_offer(DEFAULT, "203.0.113.5", 40000, 99)).media
    opus_pt = audio.formats[0]
    assert audio.rtpmap(opus_pt) == ("opus", 48000, 2)
    assert audio.fmtp(opus_pt) == OUR_FMTP
    events = [audio.rtpmap(fmt) for fmt in audio.formats if audio.rtpmap(fmt)[0] == "telephone-event"]
    assert sorted(events) == [("telephone-event", 8000, 1), ("telephone-event", 48000, 1)]


def test_an_opus_answer_gives_the_far_ends_fmtp() -> None:
    reply = parse_sdp(
        b"v=0\r\no=- 5 5 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n"
        b"m=audio 7078 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"
        b"a=fmtp:96 maxplaybackrate=8000;useinbandfec=1\r\n"
    )
    negotiated = accept_answer(DEFAULT, reply)
    assert (negotiated.codec.name, negotiated.fmtp) == ("opus", "maxplaybackrate=8000;useinbandfec=1")


@pytest.mark.parametrize(
    ("rtpmap", "named"),
    [("iLBC/8000", "iLBC/8000"), ("G7221/16000", "G7221/16000"), ("AMR-WB/16000", "AMR-WB/16000")],
)
def test_an_offer_of_only_a_codec_we_cannot_encode_gets_a_warning_naming_what_is_supported(
    rtpmap: str, named: str
) -> None:
    with pytest.raises(NoCommonCodec) as raised:
        answer(offer(f"m=audio 5004 RTP/AVP 97\na=rtpmap:97 {rtpmap}\n"), DEFAULT)
    assert raised.value.warning == (
        f"Incompatible media format: offered {named}; supported opus/48000/2, G722/8000, PCMU/8000, PCMA/8000"
    )


def test_opus_offered_with_telephone_event_at_8_khz_only_gets_those_events() -> None:
    sdp, negotiated = answer(parse_sdp(BARESIP), DEFAULT)
    assert (negotiated.dtmf_payload_type, negotiated.dtmf_clock_rate) == (101, 8000)
    assert sdp.media[0].formats == ["96", "101"]
    assert sdp.media[0].rtpmap("101") == ("telephone-event", 8000, 1)


def test_opus_takes_telephone_event_at_its_own_clock_when_both_are_offered() -> None:
    media = (
        "m=audio 5004 RTP/AVP 111 110 101\na=rtpmap:111 opus/48000/2\n"
        "a=rtpmap:110 telephone-event/48000\na=rtpmap:101 telephone-event/8000\n"
    )
    _, negotiated = answer(offer(media), DEFAULT)
    assert (negotiated.dtmf_payload_type, negotiated.dtmf_clock_rate) == (110, None)


def test_an_opus_answer_with_telephone_event_at_8_khz_gives_those_events() -> None:
    reply = parse_sdp(
        b"v=0\r\no=- 5 5 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n"
        b"m=audio 7078 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    negotiated = accept_answer(DEFAULT, reply)
    assert (negotiated.dtmf_payload_type, negotiated.dtmf_clock_rate) == (101, 8000)
