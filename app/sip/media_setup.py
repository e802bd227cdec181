"""How SIP calls get their media: RTP ports, the codecs offered and accepted, the address in SDP."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.media.opus import opus_unavailable
from app.sip.ports import RtpPortRange
from app.sip.rtp_session import RtpSession
from app.sip.sdp import CODECS, PTIME_MS, Negotiated, accept_answer, answer_offer, parse_sdp

log = logging.getLogger(__name__)


#: The preference order when CALLBRIDGE_SIP_CODECS is empty.
DEFAULT_SIP_CODECS = ("opus", "G722", "PCMU", "PCMA")


def parse_codecs(spec: str) -> list[str]:
    """`opus,G722,PCMU,PCMA` → the codec names, best first; ValueError naming an unknown one (or opus
    without libopus). Empty: DEFAULT_SIP_CODECS, without opus (and a warning) when libopus is missing, so
    a machine without it still answers calls in G.722 and G.711."""
    if not spec.strip():
        if opus_unavailable():
            log.warning("SIP calls without Opus: %s", opus_unavailable())
            return [name for name in DEFAULT_SIP_CODECS if name != "opus"]
        return list(DEFAULT_SIP_CODECS)
    known = {name.upper(): name for name in CODECS}
    names: list[str] = []
    for raw in spec.split(","):
        name = raw.strip()
        if not name:
            continue
        if name.upper() not in known:
            raise ValueError(f"unknown codec {name!r} in CALLBRIDGE_SIP_CODECS; known: {', '.join(CODECS)}")
        if known[name.upper()] == "opus" and opus_unavailable():
            raise ValueError(f"CALLBRIDGE_SIP_CODECS names opus: {opus_unavailable()} (or leave opus out)")
        names.append(known[name.upper()])
    if not names:
        raise ValueError("CALLBRIDGE_SIP_CODECS names no codec")
    return names


@dataclass
class SipMediaSetup:
    """The media side of every SIP call on this instance."""

    ports: RtpPortRange
    #: Where RTP sockets are bound (the SIP listen host) and the address put in SDP `c=`.
    bind_host: str
    sdp_host: str
    codecs: list[str]
    rtp_timeout_s: float
    answer_delay_s: float = 0.0
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(int(time.time())))

    def session_id(self) -> int:
        """A fresh SDP `o=` session id (RFC 8866 suggests an NTP-ish timestamp; unique per call here)."""
        return next(self._versions)

    async def open_rtp(self) -> RtpSession | None:
        """A new RTP session on a free port pair; None when the range is used up."""
        try:
            return await RtpSession.open(self.bind_host, self.ports)
        except OSError as exc:
            log.warning("SIP: no RTP port free in %s: %s", self.ports, exc)
            return None


class RunningMedia:
    """One running call's negotiated media, as re-INVITEs and UPDATEs change it.

    The codec stays (the session's wire format is fixed once the call joined); the far end's address, its
    payload numbers and the direction may change: a PBX re-anchoring media, a hold."""

    def __init__(
        self,
        setup: SipMediaSetup,
        rtp: RtpSession,
        negotiated: Negotiated,
        on_hold: Callable[[bool], None] | None = None,
    ) -> None:
        self._setup = setup
        self._rtp = rtp
        self.negotiated = negotiated
        #: Told True when an offer puts the call on hold, False when one takes it off.
        self._on_hold = on_hold

    def answer(self, offer: bytes, previous_answer: bytes) -> bytes:
        """Our answer to a new offer (same o= session, next version), applied to the RTP stream.

        SdpError for an offer that does not parse; NoCommonCodec when it drops the call's codec."""
        origin = parse_sdp(previous_answer).origin
        answer, negotiated = answer_offer(
            parse_sdp(offer),
            [self.negotiated.codec.name],
            self._setup.sdp_host,
            self._rtp.local_port,
            int(origin.session_id),
            session_version=int(origin.session_version) + 1,
        )
        self._apply(negotiated)
        return answer

    def accept(self, answer: bytes) -> None:
        """Apply the far end's answer to an offer of ours (a session refresh's re-INVITE).

        SdpError or NoCommonCodec when it is unusable (the media then stays as it was)."""
        self._apply(accept_answer([self.negotiated.codec.name], parse_sdp(answer)))

    def _apply(self, negotiated: Negotiated) -> None:
        point_rtp(self._rtp, negotiated)
        was_held, self.negotiated = is_held(self.negotiated), negotiated
        if self._on_hold is not None and is_held(negotiated) != was_held:
            self._on_hold(is_held(negotiated))


def is_held(negotiated: Negotiated) -> bool:
    """Whether media flows only one way or not at all (RFC 3264 §8.4 sendonly/inactive, or RFC 2543's
    c=0.0.0.0): the far end has put the call on hold."""
    return not (negotiated.sends and negotiated.receives)


def point_rtp(rtp: RtpSession, negotiated: Negotiated) -> None:
    """Point `rtp` at the far end with what the offer/answer agreed (callbridge's and the simulator's)."""
    codec = negotiated.codec
    rtp.configure(
        negotiated.remote_host,
        negotiated.remote_port,
        negotiated.payload_type,
        codec.clock_rate,
        negotiated.dtmf_payload_type,
        # 20 ms packets are sent whatever ptime the far end asked for (it must take any).
        codec.samples_per_packet(PTIME_MS),
        negotiated.dtmf_clock_rate,
        sends=negotiated.sends,
    )
