"""A bridged transfer's media and lifetime: two SIP legs relaying RTP to each other, without the agent.

Audio payloads pass unchanged when both legs use the same codec (the second leg is offered the first leg's
codec first, so they usually do); otherwise each packet is decoded to PCM, resampled if the rates differ,
and encoded for the other leg. RFC 4733 digits are sent on as digits where the other leg negotiated them.
Either leg's BYE, or either RTP stream silent for the RTP timeout, ends the bridge: the other leg gets a BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from app.media.framing import FrameSplitter
from app.media.path import AudioConverter, build_converter
from app.sip.call_transport import PACKET_MS, PayloadCodec, transcoder_for, wire_format
from app.sip.leg import SipLeg
from app.sip.rtp_session import RtpAudio, RtpClosed, RtpDigit, RtpSession
from app.sip.sdp import Negotiated

log = logging.getLogger(__name__)

#: How long a relayed RFC 4733 digit lasts on the other leg (the original's length is not known up front).
RELAYED_DIGIT_MS = 160


@dataclass(frozen=True)
class BridgeLeg:
    """One side of a bridge: its dialog, its RTP stream and the media negotiated on it."""

    leg: SipLeg
    rtp: RtpSession
    negotiated: Negotiated

    @property
    def codec(self) -> str:
        return self.negotiated.codec.name


class PayloadRelay:
    """One direction's payload conversion: none for the same codec, else through PCM, in 20 ms frames."""

    def __init__(self, source: str, target: str) -> None:
        self.passthrough = source == target
        self._decoder: PayloadCodec | None = transcoder_for(source)
        self._encoder: PayloadCodec | None = transcoder_for(target)
        out = wire_format(target)
        self._converter: AudioConverter = build_converter(wire_format(source), out)
        self._frames = FrameSplitter(out.bytes_for_ms(PACKET_MS))

    def packets(self, payload: bytes) -> list[bytes]:
        """The payloads to send on for one received payload (none while a frame is still filling)."""
        if self.passthrough:
            return [payload]
        wire = self._decoder.decode(payload) if self._decoder else payload
        frames = self._frames.push(self._converter.convert(wire))
        return [self._encoder.encode(frame) if self._encoder else frame for frame in frames]


class SipBridge:
    """The two legs of a bridged transfer, from the second leg's answer until either side leaves."""

    def __init__(self, caller: BridgeLeg, target: BridgeLeg, rtp_timeout_s: float) -> None:
        self.caller, self.target = caller, target
        self._timeout_s = rtp_timeout_s
        self._ended = asyncio.Event()
        self.ended_because = ""
        #: Packets relayed (audio and digits): from the caller to the target, and back.
        self.to_target = 0
        self.to_caller = 0
        caller.leg.listen(_Side(self, "the caller hung up"))
        target.leg.listen(_Side(self, "the transfer target hung up"))

    def end(self, reason: str) -> None:
        """End the bridge (the first reason wins); `run` then hangs up whichever leg is still up."""
        if not self._ended.is_set():
            self.ended_because = reason
            self._ended.set()

    async def run(self) -> str:
        """Relay both ways until the bridge ends; both legs are hung up and both streams closed after.
        Returns why it ended."""
        relays = [
            asyncio.create_task(self._relay(self.caller, self.target), name="sip-bridge-to-target"),
            asyncio.create_task(self._relay(self.target, self.caller), name="sip-bridge-to-caller"),
        ]
        try:
            await self._ended.wait()
        finally:
            if not self.ended_because:
                self.ended_because = "the server stopped"
            for relay in relays:
                relay.cancel()
            for relay in relays:
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
            for side in (self.caller, self.target):
                side.leg.hang_up()  # no-op for the leg that sent BYE
                side.rtp.close()
                side.leg.let_go()  # its listener is this bridge: a cycle once nothing else holds it
        return self.ended_because

    async def _relay(self, source: BridgeLeg, target: BridgeLeg) -> None:
        payloads = PayloadRelay(source.codec, target.codec)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(source.rtp.receive(), self._timeout_s)
                except TimeoutError:
                    self.end(f"no RTP from the {_name(self, source)} for {self._timeout_s:g} s")
                    return
                if type(item) is RtpAudio:
                    for payload in payloads.packets(item.payload):
                        target.rtp.send_audio(payload)
                        self._count(target)
                elif type(item) is RtpDigit and await target.rtp.send_digits(
                    item.digit, RELAYED_DIGIT_MS, gap_ms=0
                ):
                    self._count(target)
        except RtpClosed:
            self.end(f"the {_name(self, source)}'s RTP stream closed")
        except Exception:
            log.exception("SIP bridge relay failed")
            self.end("internal error while relaying the bridge's audio")

    def _count(self, sent_to: BridgeLeg) -> None:
        if sent_to is self.target:
            self.to_target += 1
        else:
            self.to_caller += 1


def _name(bridge: SipBridge, side: BridgeLeg) -> str:
    return "caller" if side is bridge.caller else "transfer target"


class _Side:
    """A bridge leg's listener (`app.sip.leg.LegListener`): its BYE ends the bridge."""

    def __init__(self, bridge: SipBridge, reason: str) -> None:
        self._bridge, self._reason = bridge, reason

    def far_end_hung_up(self, reason: str) -> None:
        self._bridge.end(self._reason)

    def signalled_digit(self, digit: str) -> None:
        """SIP INFO digits are not relayed (RFC 4733 ones are)."""
