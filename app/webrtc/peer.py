"""Answering a checked offer: a peer connection that speaks Opus only, with the call's transport on it."""

from __future__ import annotations

import logging

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer

from app.errors import InvalidInput
from app.webrtc.offer import Offer
from app.webrtc.transport import WebRtcTransport

log = logging.getLogger(__name__)

#: aiortc holds 4 frames of the client's audio (80 ms) before decoding the first; a frame is whole only
#: once the next packet is in, so 1 is its least: 20 ms. The agent takes audio as it arrives, as it does
#: from every provider stream (none has a jitter buffer), so nothing is gained by waiting longer.
JITTER_PREFETCH_FRAMES = 1
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"  # aiortc's own (not configurable): checked by a test


def shorten_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Give an audio receiver the shortest jitter buffer; False (logged) where aiortc has changed."""
    if not isinstance(getattr(receiver, _JITTER_BUFFER, None), JitterBuffer):
        log.warning("aiortc's RTCRtpReceiver has no %s: its default jitter buffer is used", _JITTER_BUFFER)
        return False
    setattr(receiver, _JITTER_BUFFER, JitterBuffer(capacity=16, prefetch=JITTER_PREFETCH_FRAMES))
    return True


async def answer_offer(offer: Offer, media_idle_timeout_s: float | None) -> tuple[WebRtcTransport, str]:
    """The call's transport and the SDP answer (ICE gathered: non-trickle). 400 when aiortc cannot take
    the offer (no peer connection is left behind)."""
    # No ICE servers: aiortc's default is a public STUN server; host candidates are what a server has.
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transport = WebRtcTransport(peer, media_idle_timeout_s, offer.data_channel)
    try:
        await peer.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        audio = next(t for t in peer.getTransceivers() if t.kind == "audio")
        shorten_jitter_buffer(audio.receiver)
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        audio.setCodecPreferences(opus)
        peer.addTrack(transport.outbound)
        await peer.setLocalDescription(await peer.createAnswer())
    except Exception as exc:  # aiortc refuses what it cannot negotiate with ValueError and others
        await transport.close()
        raise InvalidInput("invalid_offer", f"the offer cannot be answered: {exc}") from None
    return transport, peer.localDescription.sdp
