"""Answering a checked offer: a peer connection that speaks Opus only, with the call's transport on it."""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from app.errors import InvalidInput
from app.webrtc.offer import Offer
from app.webrtc.transport import WebRtcTransport


async def answer_offer(offer: Offer, media_idle_timeout_s: float | None) -> tuple[WebRtcTransport, str]:
    """The call's transport and the SDP answer (ICE gathered: non-trickle). 400 when aiortc cannot take
    the offer (no peer connection is left behind)."""
    # No ICE servers: aiortc's default is a public STUN server; host candidates are what a server has.
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transport = WebRtcTransport(peer, media_idle_timeout_s, offer.data_channel)
    try:
        await peer.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        audio = next(t for t in peer.getTransceivers() if t.kind == "audio")
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        audio.setCodecPreferences(opus)
        peer.addTrack(transport.outbound)
        await peer.setLocalDescription(await peer.createAnswer())
    except Exception as exc:  # aiortc refuses what it cannot negotiate with ValueError and others
        await transport.close()
        raise InvalidInput("invalid_offer", f"the offer cannot be answered: {exc}") from None
    return transport, peer.localDescription.sdp
