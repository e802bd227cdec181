"""A WHIP client's SDP offer, checked before any peer connection is made for it.

WHIP here is non-trickle: the client waits for ICE gathering to finish, so its offer carries its
candidates. The offer must have an audio section that can carry Opus (`opus/48000/2`), the one audio codec
the webRtc medium speaks.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InvalidInput, ServiceError

SDP_MEDIA_TYPE = "application/sdp"
#: How a call the client left ends (its DELETE, its peer connection closed, `hang_up` on the data channel).
CLIENT_HUNG_UP = "the client hung up"
#: An SDP offer longer than this is not one a browser makes (Chromium's are 2-6 kB).
MAX_OFFER_BYTES = 64 * 1024


class UnsupportedMediaType(ServiceError):
    """The body is not `application/sdp`: 415."""

    status = 415


@dataclass(frozen=True, slots=True)
class Offer:
    """A checked offer: its text, and whether it also opens a data channel."""

    sdp: str
    data_channel: bool


def check_offer(content_type: str | None, body: bytes) -> Offer:
    """The offer in a WHIP POST, or the refusal (415 not SDP, 400 unusable) that says what is wrong."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != SDP_MEDIA_TYPE:
        raise UnsupportedMediaType(
            "not_sdp", f"post the SDP offer with Content-Type: {SDP_MEDIA_TYPE} (not {media_type or 'none'})"
        )
    if len(body) > MAX_OFFER_BYTES:
        raise InvalidInput("invalid_offer", f"the offer is over {MAX_OFFER_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("invalid_offer", "the offer is not UTF-8 text") from None
    if not text.lstrip().startswith("v=0"):
        raise InvalidInput("invalid_offer", "the body is not an SDP offer (it must start with v=0)")
    from aiortc.sdp import SessionDescription  # aiortc loads with the first webRtc offer, not at start-up

    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the malformed line gives (ValueError, ...)
        raise InvalidInput("invalid_offer", f"the SDP offer cannot be parsed: {exc}") from None
    audio = [m for m in parsed.media if m.kind == "audio" and m.port != 0 and m.direction != "inactive"]
    if not any(c.mimeType.lower() == "audio/opus" for m in audio for c in m.rtp.codecs):
        raise InvalidInput("no_opus_audio", "the offer has no audio section with Opus (opus/48000/2)")
    if not any(m.ice_candidates for m in parsed.media):
        raise InvalidInput(
            "no_ice_candidates",
            "the offer has no ICE candidates: wait for ICE gathering to complete before posting it "
            "(this WHIP endpoint does not take trickled candidates)",
        )
    return Offer(text, data_channel=any(m.kind == "application" for m in parsed.media))
