"""What `callbridge simulate sip` prints: the call's report, or why callbridge refused it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from app.simulator.audio import RoundTrip, measure_round_trip, round_trip_line
from app.simulator.sip_media import MediaResult
from app.sip.sdp import Negotiated

#: What to change in callbridge when it refuses an INVITE with this status.
REFUSAL_HINTS = {
    403: "callbridge refused this source address: add it with PATCH /api/sip allowedCidrRanges",
    404: "no agent is routed for this user: PATCH /api/sip allowAllAgents or an allowedAgents pattern "
    "(and check the agent id)",
    488: "no codec in common: try another --codec, or check CALLBRIDGE_SIP_CODECS",
    503: "callbridge is busy or shutting down: try again after its Retry-After",
}


def refusal_text(status: int, reason: str, warning: str | None = None) -> str:
    """`refused: 404 Not Found` and, when there is one, the hint saying what to change."""
    lines = [f"refused: {status} {reason}"]
    if warning:
        lines.append(f"  warning: {warning}")
    hint = REFUSAL_HINTS.get(status)
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)


@dataclass
class SipCallReport:
    """One simulated SIP call from the simulator's side."""

    direction: str  # "to callbridge" (we called) | "from callbridge" (callbridge called us)
    sip_call_id: str
    call_id: str | None  # callbridge's, when the API told us
    target: str  # the INVITE's Request-URI
    transport: str
    signalling: list[str]  # the INVITE's responses, "100 Trying", "180 Ringing", "200 OK"
    negotiated: Negotiated
    media: MediaResult
    ended_by: str  # "simulator" | "callbridge"
    bye_answer: str | None  # our BYE's answer ("200 OK"), None when callbridge hung up or did not answer

    @property
    def sample_rate(self) -> int:
        """The rate of the PCM sent and heard (G.722: 16 kHz)."""
        return self.negotiated.codec.sample_rate

    @cached_property
    def round_trip(self) -> RoundTrip | None:
        return measure_round_trip(self.media.sent, self.media.played, self.sample_rate)

    def summary(self) -> str:
        media = self.media
        codec = self.negotiated.codec
        where = f"callbridge call {self.call_id}, " if self.call_id else ""
        dtmf_pt = self.negotiated.dtmf_payload_type
        dtmf = f", telephone-event {dtmf_pt}" if dtmf_pt is not None else ""
        lines = [
            f"sip call {self.direction}: {self.target} over {self.transport}"
            f"  ({where}Call-ID {self.sip_call_id})",
            f"  signalling: {', '.join(self.signalling) or 'none'}",
            f"  audio {codec.name} {self.sample_rate} Hz (payload type {self.negotiated.payload_type}{dtmf})",
            f"  RTP packets sent {media.packets_sent}, received {media.packets_received} (lost {media.lost})",
            f"  gaps in agent audio: {media.underrun_ticks} playback ticks"
            + (f" (the simulator itself stalled {media.stalls}x)" if media.stalls else ""),
            f"  DTMF sent: {self._digits_sent()}",
        ]
        if media.digits_received:
            lines.append(f"  DTMF received: {' '.join(media.digits_received)}")
        lines.append(f"  ended by {self.ended_by}" + self._bye_text())
        lines.append(round_trip_line(self.round_trip))
        return "\n".join(lines)

    def _digits_sent(self) -> str:
        if self.media.digits_sent:
            return " ".join(self.media.digits_sent)
        return "none" if self.media.dtmf_negotiated else "none (no telephone-event in the answer)"

    def _bye_text(self) -> str:
        if self.ended_by != "simulator":
            return " (BYE)"
        return f" (BYE answered {self.bye_answer})" if self.bye_answer else " (BYE unanswered)"
