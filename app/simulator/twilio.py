"""A fake Twilio: signed voice webhook → TwiML `<Connect><Stream>` → signed handshake → Media Streams.

Message shapes follow Twilio's Media Streams docs (every number in `sequenceNumber`, `chunk`, `timestamp`
is a string); a `clear` returns the marks still queued.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from twilio.request_validator import RequestValidator

from app.media.formats import PCMU_8K
from app.simulator.carrier import (
    CallReport,
    CallScript,
    CarrierWire,
    FakeCarrier,
    OutAudio,
    Outbound,
    OutClear,
    OutMark,
    Progress,
    ProtocolViolation,
    StreamSetup,
    WebhookRejected,
    check,
    decode_strict_base64,
    new_sid,
)

__all__ = ["CallReport", "CallScript", "FakeTwilio", "ProtocolViolation", "WebhookRejected"]


class TwilioWire(CarrierWire):
    provider = "twilio"
    sequence_key = "sequenceNumber"
    stream_key = "streamSid"

    def new_stream_id(self) -> str:
        return new_sid("MZ")

    def opening(self) -> list[dict[str, Any]]:
        start = {
            "accountSid": self.account_id,
            "streamSid": self.stream_id,
            "callSid": self.setup.provider_call_id,
            "tracks": ["inbound"],
            "customParameters": self.setup.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        return [
            {"event": "connected", "protocol": "Call", "version": "1.0.0"},
            self.numbered("start", start=start),
        ]

    def dtmf(self, digit: str) -> dict[str, Any]:
        return self.numbered("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def closing(self) -> dict[str, Any]:
        stop = {"accountSid": self.account_id, "callSid": self.setup.provider_call_id}
        return self.numbered("stop", stop=stop)

    def parse(self, message: dict[str, Any]) -> Outbound:
        check(message.get("streamSid") == self.stream_id, f"message for another stream: {message}")
        event = message.get("event")
        if event == "media":
            return OutAudio(decode_strict_base64(message["media"]["payload"]))
        if event == "mark":
            return OutMark(str(message["mark"]["name"]))
        if event == "clear":
            return OutClear()
        raise ProtocolViolation(f"Twilio would reject event {event!r}: {message}")


def parse_connect_stream(twiml: str) -> tuple[str, dict[str, str]]:
    """(stream URL, `<Parameter>`s) from `<Response><Connect><Stream url>`."""
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ProtocolViolation(f"TwiML has no <Connect><Stream url>: {twiml}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


class FakeTwilio(FakeCarrier):
    """One Twilio account that sends calls to `base_url` (callbridge's CALLBRIDGE_PUBLIC_URL)."""

    provider = "twilio"

    def __init__(self, base_url: str, account_sid: str, auth_token: str) -> None:
        super().__init__(base_url)
        self.account_sid = account_sid
        self.validator = RequestValidator(auth_token)

    def new_call_id(self) -> str:
        return new_sid("CA")

    def incoming_params(self, script: CallScript, provider_call_id: str) -> dict[str, str]:
        return {
            "CallSid": provider_call_id,
            "AccountSid": self.account_sid,
            "From": script.from_number,
            "To": script.to_number,
            "CallStatus": "ringing",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
            "Caller": script.from_number,
            "Called": script.to_number,
        }

    def sign(self, url: str, body: bytes, params: dict[str, str]) -> dict[str, str]:
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)}

    def parse_xml(self, xml: str, provider_call_id: str) -> StreamSetup:
        url, parameters = parse_connect_stream(xml)
        return self.stream_setup(url, parameters, provider_call_id)

    def stream_setup(
        self, url: str, parameters: dict[str, str], call_sid: str, *, sign: bool = True
    ) -> StreamSetup:
        """The stream Twilio opens for `<Stream url>`; the handshake is signed like Twilio signs it."""
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, {})} if sign else {}
        return StreamSetup(url, PCMU_8K, call_sid, parameters, headers)

    def wire(self, setup: StreamSetup) -> CarrierWire:
        return TwilioWire(setup, self.account_sid)

    async def voice_webhook(
        self, agent_id: str, params: dict[str, str], *, sign: bool = True, signature: str | None = None
    ) -> Any:
        """The voice webhook, signed (default), unsigned, or with a given signature."""
        if signature is not None:
            return await self.webhook(agent_id, params, headers={"X-Twilio-Signature": signature})
        return await self.webhook(agent_id, params, headers=None if sign else {})

    async def stream(
        self,
        url: str,
        parameters: dict[str, str],
        call_sid: str,
        script: CallScript,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        sign: bool = True,
    ) -> CallReport:
        """Open the media stream on `url` (as `<Connect><Stream>` makes Twilio do) and run the call."""
        return await self.run_stream(
            self.stream_setup(url, parameters, call_sid, sign=sign), script, on_progress
        )
