"""The fake provider REST APIs answer, call back and stream the way Twilio, Telnyx and Plivo document.

Each test starts one fake API and a tiny stand-in for callbridge (status callbacks, XML, an echoing stream
socket) and drives the fake with plain httpx; signatures are checked with the providers' own SDK code.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from plivo.utils.signature_v3 import validate_v3_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from telnyx.lib.webhook_verification import verify_webhook_signature
from twilio.request_validator import RequestValidator

from app.cli import build_parser
from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.cli import SetupError, api_base_refusal, check_outbound_args
from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeCall, FakeProviderApi
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio_api import FakeTwilioApi

TWILIO_SID, TWILIO_TOKEN = "AC" + "1" * 32, "twilio-token"
TELNYX_KEY = "KEY0123456789"
PLIVO_ID, PLIVO_TOKEN = "MA0123456789", "plivo-token"
SHORT_CALLEE = CallScript(audio=speech_like(0.3), tail_seconds=0.2)


# --- a stand-in for callbridge --------------------------------------------------------------------


@dataclass
class Hit:
    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    body: bytes


@dataclass
class Bridge:
    """Records every request and stream message; serves each provider's stream XML; echoes media."""

    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    streams: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    status_code: int = 200
    xml: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path

    def at(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.url.split("?")[0].endswith(path)]

    def default_xml(self, name: str) -> str:
        ws = self.base_url.replace("http://", "ws://") + f"/ws/{name}"
        if name == "twilio":
            stream = f'<Stream url="{ws}"><Parameter name="callId" value="c1"/></Stream>'
            return f"<Response><Connect>{stream}</Connect></Response>"
        if name == "telnyx":
            return (
                f'<Response><Connect><Stream url="{ws}" bidirectionalMode="rtp" codec="PCMU" '
                'bidirectionalCodec="PCMU"/></Connect></Response>'
            )
        if name == "plivo":
            return (
                '<Response><Stream bidirectional="true" keepCallAlive="true" '
                f'contentType="audio/x-mulaw;rate=8000">{ws}</Stream></Response>'
            )
        return self.xml[name]

    async def record(self, request: Request) -> Hit:
        body = await request.body()
        params = dict(parse_qsl(body.decode())) if request.method == "POST" else dict(request.query_params)
        hit = Hit(request.method, str(request.url), dict(request.headers), params, body)
        self.hits.append(hit)
        return hit

    async def status(self, request: Request) -> Response:
        await self.record(request)
        return Response(status_code=self.status_code)

    async def xml_for(self, request: Request) -> Response:
        await self.record(request)
        name = request.path_params["name"]
        return Response(self.xml.get(name) or self.default_xml(name), media_type="application/xml")

    async def stream(self, ws: WebSocket) -> None:
        provider = ws.path_params["provider"]
        await ws.accept()
        messages: list[dict[str, Any]] = []
        self.streams.append((provider, messages))
        stream_id, echoing = None, True
        while (event := await ws.receive())["type"] != "websocket.disconnect":
            message = orjson.loads(event["text"])
            messages.append(message)
            if message["event"] == "start":
                stream_id = message.get("streamSid") or message.get("stream_id")
            elif message["event"] == "media" and echoing:
                payload = message["media"]["payload"]
                if provider == "plivo":
                    media = {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload}
                    reply: dict[str, Any] = {"event": "playAudio", "media": media}
                else:
                    reply = {"event": "media", "streamSid": stream_id, "media": {"payload": payload}}
                try:
                    await ws.send_text(orjson.dumps(reply).decode())
                except WebSocketDisconnect:  # the peer is closing: read what it sent before
                    echoing = False


async def serve(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "the stand-in did not start"
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    stand_in = Bridge()
    app = Starlette(
        routes=[
            Route("/status/{name}", stand_in.status, methods=["GET", "POST"]),
            Route("/xml/{name}", stand_in.xml_for, methods=["GET", "POST"]),
            WebSocketRoute("/ws/{provider}", stand_in.stream),
        ]
    )
    server, task, stand_in.base_url = await serve(app)
    yield stand_in
    server.should_exit = True
    await task


async def started(fake: FakeProviderApi) -> AsyncIterator[Any]:
    fake.ring_seconds = 0.05
    fake.initiate_delay = 0.01
    fake.callee = SHORT_CALLEE
    await fake.start()
    yield fake
    await fake.stop()


#: Each fake as these tests make it.
FAKES: dict[str, Callable[[], FakeProviderApi]] = {
    "twilio": lambda: FakeTwilioApi(TWILIO_SID, TWILIO_TOKEN),
    "telnyx": lambda: FakeTelnyxApi(
        TELNYX_KEY, Ed25519PrivateKey.from_private_bytes(b"k" * 32), account_sid="acct-1"
    ),
    "plivo": lambda: FakePlivoApi(PLIVO_ID, PLIVO_TOKEN),
}


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioApi]:
    async for fake in started(FAKES["twilio"]()):
        yield fake


@pytest.fixture
async def telnyx() -> AsyncIterator[FakeTelnyxApi]:
    async for fake in started(FAKES["telnyx"]()):
        yield fake


@pytest.fixture
async def plivo() -> AsyncIterator[FakePlivoApi]:
    async for fake in started(FAKES["plivo"]()):
        yield fake


@pytest.fixture(params=list(FAKES))
async def any_fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeProviderApi]:
    """Each of the three fakes in turn."""
    async for fake in started(FAKES[request.param]()):
        yield fake


async def until(condition: Callable[[], object], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def ended(call: FakeCall) -> FakeCall:
    await asyncio.wait_for(call.ended.wait(), 5)
    return call


def streaming(bridge: Bridge, provider: str) -> Callable[[], bool]:
    """True once the stream is up and media flows."""
    return lambda: any(p == provider and len(m) > 3 for p, m in bridge.streams)


# --- Twilio ---------------------------------------------------------------------------------------


def twilio_client(fake: FakeTwilioApi, token: str = TWILIO_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fake.base_url, auth=(TWILIO_SID, token))


CALLS = f"/2010-04-01/Accounts/{TWILIO_SID}/Calls"


def twilio_dial(bridge: Bridge, *events: str, **extra: str) -> dict[str, Any]:
    """The create form: `StatusCallbackEvent` repeated once per event, as twilio-python sends it."""
    form: dict[str, Any] = {
        "To": "+15005550006",
        "From": "+15005550001",
        "StatusCallback": bridge.url("/status/twilio"),
        "StatusCallbackMethod": "POST",
    }
    if events:
        form["StatusCallbackEvent"] = list(events)
    if "Url" not in extra:
        form["Twiml"] = bridge.default_xml("twilio")
    return {**form, **extra}


async def test_twilio_wrong_credentials_answer_401_code_20003(twilio: FakeTwilioApi, bridge: Bridge) -> None:
    async with twilio_client(twilio, "wrong") as client:
        response = await client.post(f"{CALLS}.json", data=twilio_dial(bridge))
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


async def test_twilio_missing_to_answers_400_code_21201(twilio: FakeTwilioApi, bridge: Bridge) -> None:
    async with twilio_client(twilio) as client:
        response = await client.post(
            f"{CALLS}.json", data={k: v for k, v in twilio_dial(bridge).items() if k != "To"}
        )
    assert response.status_code == 400
    assert response.json()["code"] == 21201
    assert response.json()["message"] == "No 'To' number is specified"


async def test_twilio_create_answers_201_with_the_queued_call_resource(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    async with twilio_client(twilio) as client:
        response = await client.post(f"{CALLS}.json", data=twilio_dial(bridge, Record="true"))
    body = response.json()
    assert response.status_code == 201
    assert body["sid"].startswith("CA") and len(body["sid"]) == 34
    assert body["status"] == "queued"
    assert body["direction"] == "outbound-api"
    assert (body["to"], body["from"], body["account_sid"]) == ("+15005550006", "+15005550001", TWILIO_SID)
    assert body["uri"] == f"{CALLS}/{body['sid']}.json"
    call = await twilio.wait_for_call()
    assert call.params["Record"] == "true"


async def test_twilio_status_callbacks_arrive_in_order_signed_for_the_request_validator(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    async with twilio_client(twilio) as client:
        await client.post(
            f"{CALLS}.json", data=twilio_dial(bridge, "initiated", "ringing", "answered", "completed")
        )
    call = await ended(await twilio.wait_for_call())
    hits = bridge.at("/status/twilio")
    assert [h.params["CallStatus"] for h in hits] == ["initiated", "ringing", "in-progress", "completed"]
    assert [h.params["SequenceNumber"] for h in hits] == ["0", "1", "2", "3"]
    validator = RequestValidator(TWILIO_TOKEN)
    assert all(validator.validate(h.url, h.params, h.headers["x-twilio-signature"]) for h in hits)
    assert hits[-1].params["CallDuration"] == str(call.duration)
    assert {h.params["Direction"] for h in hits} == {"outbound-api"}
    assert [c.http_status for c in call.callbacks] == [200, 200, 200, 200]
    assert call.statuses == ["queued", "initiated", "ringing", "in-progress", "completed"]
    assert call.report is not None and call.report.media_received > 0 and call.report.call_id == "c1"


async def test_twilio_sends_only_completed_when_no_event_is_asked_for(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    async with twilio_client(twilio) as client:
        await client.post(f"{CALLS}.json", data=twilio_dial(bridge))
    await ended(await twilio.wait_for_call())
    assert [h.params["CallStatus"] for h in bridge.at("/status/twilio")] == ["completed"]


async def test_twilio_fetches_url_with_a_signed_post_of_the_call(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    async with twilio_client(twilio) as client:
        await client.post(f"{CALLS}.json", data=twilio_dial(bridge, Url=bridge.url("/xml/twilio")))
    call = await ended(await twilio.wait_for_call())
    (fetch,) = bridge.at("/xml/twilio")
    assert fetch.method == "POST"
    assert fetch.params["CallSid"] == call.sid and fetch.params["CallStatus"] == "in-progress"
    assert RequestValidator(TWILIO_TOKEN).validate(
        fetch.url, fetch.params, fetch.headers["x-twilio-signature"]
    )
    assert call.report is not None


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
async def test_twilio_unanswered_outcomes_end_with_that_status_and_no_stream(
    twilio: FakeTwilioApi, bridge: Bridge, outcome: str
) -> None:
    twilio.queue_outcome(outcome)  # type: ignore[arg-type]
    async with twilio_client(twilio) as client:
        await client.post(f"{CALLS}.json", data=twilio_dial(bridge, "completed"))
    call = await ended(await twilio.wait_for_call())
    assert call.end_status == outcome and call.report is None and not bridge.streams
    assert bridge.at("/status/twilio")[-1].params["CallStatus"] == outcome


async def test_twilio_fail_next_429_answers_retry_after_then_succeeds(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    twilio.fail_next(429, retry_after="1")
    async with twilio_client(twilio) as client:
        refused = await client.post(f"{CALLS}.json", data=twilio_dial(bridge))
        accepted = await client.post(f"{CALLS}.json", data=twilio_dial(bridge))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == 20429
    assert accepted.status_code == 201
    assert len(twilio.requests) == 2


async def test_twilio_hang_up_on_a_live_call_sends_stop_then_completed(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    twilio.callee = CallScript(audio=speech_like(3.0), tail_seconds=1.0)
    async with twilio_client(twilio) as client:
        sid = (await client.post(f"{CALLS}.json", data=twilio_dial(bridge))).json()["sid"]
        await until(streaming(bridge, "twilio"))
        response = await client.post(f"{CALLS}/{sid}.json", data={"Status": "completed"})
    call = await ended(twilio.calls[sid])
    assert response.status_code == 200
    assert bridge.streams[0][1][-1]["event"] == "stop"
    assert call.end_status == "completed" and call.hangups == 1
    assert call.report is not None and call.report.ended_by == "carrier"


async def test_twilio_canceling_a_ringing_call_ends_it_canceled_without_a_stream(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    twilio.ring_seconds = 5
    async with twilio_client(twilio) as client:
        sid = (await client.post(f"{CALLS}.json", data=twilio_dial(bridge, "ringing", "completed"))).json()[
            "sid"
        ]
        await until(lambda: bridge.at("/status/twilio"))
        response = await client.post(f"{CALLS}/{sid}.json", data={"Status": "canceled"})
    call = await ended(twilio.calls[sid])
    assert response.status_code == 200
    assert call.end_status == "canceled" and not bridge.streams
    assert [h.params["CallStatus"] for h in bridge.at("/status/twilio")] == ["ringing", "canceled"]


async def test_twilio_status_canceled_leaves_a_live_call_up(twilio: FakeTwilioApi, bridge: Bridge) -> None:
    async with twilio_client(twilio) as client:
        sid = (await client.post(f"{CALLS}.json", data=twilio_dial(bridge))).json()["sid"]
        await until(streaming(bridge, "twilio"))
        response = await client.post(f"{CALLS}/{sid}.json", data={"Status": "canceled"})
    call = await ended(twilio.calls[sid])
    assert response.json()["status"] == "in-progress"
    assert call.hangups == 0 and call.ended_by == "callee"


async def test_twilio_dial_twiml_stops_the_stream_and_records_the_target(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    twilio.callee = CallScript(audio=speech_like(3.0), tail_seconds=1.0)
    async with twilio_client(twilio) as client:
        sid = (await client.post(f"{CALLS}.json", data=twilio_dial(bridge))).json()["sid"]
        await until(streaming(bridge, "twilio"))
        twiml = "<Response><Dial><Sip>sip:agent@pbx.example.com</Sip></Dial></Response>"
        response = await client.post(f"{CALLS}/{sid}.json", data={"Twiml": twiml})
    call = await ended(twilio.calls[sid])
    assert response.status_code == 200
    assert call.transfers == ["sip:agent@pbx.example.com"]
    assert bridge.streams[0][1][-1]["event"] == "stop"
    assert call.end_status == "completed"


async def test_twilio_unknown_call_answers_404_code_20404(twilio: FakeTwilioApi) -> None:
    async with twilio_client(twilio) as client:
        response = await client.post(f"{CALLS}/CA{'0' * 32}.json", data={"Status": "completed"})
    assert response.status_code == 404
    assert response.json()["code"] == 20404
    assert set(response.json()) == {"code", "message", "more_info", "status"}


async def test_twilio_new_twiml_for_an_ended_call_answers_400_code_21220(
    twilio: FakeTwilioApi, bridge: Bridge
) -> None:
    twilio.queue_outcome("busy")
    async with twilio_client(twilio) as client:
        sid = (await client.post(f"{CALLS}.json", data=twilio_dial(bridge))).json()["sid"]
        await ended(twilio.calls[sid])
        response = await client.post(
            f"{CALLS}/{sid}.json", data={"Twiml": "<Response><Dial>+1</Dial></Response>"}
        )
    assert response.status_code == 400
    assert response.json()["code"] == 21220


async def test_one_broken_call_does_not_affect_another(twilio: FakeTwilioApi, bridge: Bridge) -> None:
    bridge.xml["broken"] = "<Response><Say>no stream here</Say></Response>"
    async with twilio_client(twilio) as client:
        await client.post(f"{CALLS}.json", data=twilio_dial(bridge, Url=bridge.url("/xml/broken")))
        await client.post(f"{CALLS}.json", data=twilio_dial(bridge, Url=bridge.url("/xml/twilio")))
    broken, fine = await twilio.wait_for_call(), await twilio.wait_for_call()
    await ended(broken)
    await ended(fine)
    assert broken.error is not None and "Connect" in broken.error and broken.report is None
    assert fine.error is None and fine.report is not None


# --- Telnyx ---------------------------------------------------------------------------------------


def telnyx_client(fake: FakeTelnyxApi, key: str = TELNYX_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {key}"})


TEXML_CALLS = "/v2/texml/Accounts/acct-1/Calls"


def telnyx_dial(bridge: Bridge, events: str = "", **extra: Any) -> dict[str, Any]:
    body = {
        "ApplicationSid": "1293384261075731499",
        "To": "+13121230000",
        "From": "+13120001234",
        "Url": bridge.url("/xml/telnyx"),
        "StatusCallback": bridge.url("/status/telnyx"),
    }
    if events:
        body["StatusCallbackEvent"] = events
    return {**body, **extra}


async def telnyx_live_call(fake: FakeTelnyxApi, bridge: Bridge, client: httpx.AsyncClient) -> FakeCall:
    await client.post(TEXML_CALLS, json=telnyx_dial(bridge))
    call = await fake.wait_for_call()
    await until(streaming(bridge, "telnyx"))
    return call


async def test_telnyx_wrong_api_key_answers_401_code_10009(telnyx: FakeTelnyxApi, bridge: Bridge) -> None:
    async with telnyx_client(telnyx, "KEYwrong") as client:
        response = await client.post(TEXML_CALLS, json=telnyx_dial(bridge))
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "10009"
    assert response.json()["errors"][0]["title"] == "Authentication failed"


async def test_telnyx_missing_to_answers_422_with_a_source_pointer(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    body = telnyx_dial(bridge)
    del body["To"]
    async with telnyx_client(telnyx) as client:
        response = await client.post(TEXML_CALLS, json=body)
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert (error["code"], error["source"]) == ("10004", {"pointer": "/To"})


async def test_telnyx_create_answers_the_documented_body(telnyx: FakeTelnyxApi, bridge: Bridge) -> None:
    async with telnyx_client(telnyx) as client:
        account = await client.post(TEXML_CALLS, json=telnyx_dial(bridge))
        scoped = await client.post("/v2/texml/calls/1293384261075731499", json=telnyx_dial(bridge))
    assert account.status_code == 200
    assert account.json() == {"from": "+13120001234", "to": "+13121230000", "status": "queued"}
    first_call, second_call = await telnyx.wait_for_call(), await telnyx.wait_for_call()
    assert scoped.json() == {
        "call_sid": second_call.sid,
        "from": "+13120001234",
        "to": "+13121230000",
        "status": "queued",
    }
    assert first_call.sid.startswith("v3:")


async def test_telnyx_callbacks_arrive_in_order_signed_with_ed25519(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    async with telnyx_client(telnyx) as client:
        await client.post(TEXML_CALLS, json=telnyx_dial(bridge, "initiated ringing answered completed"))
    call = await ended(await telnyx.wait_for_call())
    hits = bridge.at("/status/telnyx")
    assert [h.params["CallStatus"] for h in hits] == ["initiated", "ringing", "in-progress", "completed"]
    assert [h.params["SequenceNumber"] for h in hits] == ["0", "1", "2", "3"]
    for hit in [*hits, *bridge.at("/xml/telnyx")]:
        verify_webhook_signature(hit.body, hit.headers, telnyx.public_key)
    assert {h.params["CallSid"] for h in hits} == {call.sid}
    assert hits[-1].params["HangupCause"] == "normal_clearing"
    assert hits[-1].params["CallDuration"] == str(call.duration)
    assert call.report is not None and call.report.media_received > 0


async def test_telnyx_no_answer_ends_no_answer_without_a_stream(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    telnyx.queue_outcome("no-answer")
    async with telnyx_client(telnyx) as client:
        await client.post(TEXML_CALLS, json=telnyx_dial(bridge))
    call = await ended(await telnyx.wait_for_call())
    (final,) = bridge.at("/status/telnyx")
    assert final.params["CallStatus"] == "no-answer" and "CallDuration" not in final.params
    assert call.report is None and not bridge.at("/xml/telnyx")


async def test_telnyx_hangup_on_a_live_call_sends_stop_then_completed(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    telnyx.callee = CallScript(audio=speech_like(3.0), tail_seconds=1.0)
    async with telnyx_client(telnyx) as client:
        call = await telnyx_live_call(telnyx, bridge, client)
        response = await client.post(f"/v2/calls/{call.sid}/actions/hangup", json={})
    await ended(call)
    assert response.json() == {"data": {"result": "ok"}}
    assert bridge.streams[0][1][-1]["event"] == "stop"
    assert call.end_status == "completed"
    assert bridge.at("/status/telnyx")[-1].params["CallStatus"] == "completed"


async def test_telnyx_hangup_while_ringing_ends_canceled(telnyx: FakeTelnyxApi, bridge: Bridge) -> None:
    telnyx.ring_seconds = 5
    async with telnyx_client(telnyx) as client:
        await client.post(TEXML_CALLS, json=telnyx_dial(bridge))
        call = await telnyx.wait_for_call()
        await until(lambda: call.state == "ringing")
        await client.post(f"/v2/calls/{call.sid}/actions/hangup", json={})
    await ended(call)
    assert call.end_status == "canceled" and not bridge.streams
    assert bridge.at("/status/telnyx")[-1].params["HangupCause"] == "originator_cancel"


async def test_telnyx_transfer_stops_the_stream_and_records_the_target(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    telnyx.callee = CallScript(audio=speech_like(3.0), tail_seconds=1.0)
    async with telnyx_client(telnyx) as client:
        call = await telnyx_live_call(telnyx, bridge, client)
        response = await client.post(f"/v2/calls/{call.sid}/actions/transfer", json={"to": "+13125550100"})
    await ended(call)
    assert response.status_code == 200
    assert call.transfers == ["+13125550100"]
    assert bridge.streams[0][1][-1]["event"] == "stop"


async def test_telnyx_send_dtmf_is_recorded_once_per_command_id(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    telnyx.callee = CallScript(audio=speech_like(1.0), tail_seconds=0.5)
    async with telnyx_client(telnyx) as client:
        call = await telnyx_live_call(telnyx, bridge, client)
        body = {"digits": "1w2#", "duration_millis": 250, "command_id": "cmd-1"}
        answers = [await client.post(f"/v2/calls/{call.sid}/actions/send_dtmf", json=body) for _ in range(2)]
        await client.post(f"/v2/calls/{call.sid}/actions/send_dtmf", json={"digits": "9"})
    assert [a.json() for a in answers] == [{"data": {"result": "ok"}}] * 2
    assert call.dtmf == ["1w2#", "9"]


async def test_telnyx_command_on_an_ended_call_answers_422_code_90018(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    telnyx.queue_outcome("busy")
    async with telnyx_client(telnyx) as client:
        await client.post(TEXML_CALLS, json=telnyx_dial(bridge))
        call = await ended(await telnyx.wait_for_call())
        ended_answer = await client.post(f"/v2/calls/{call.sid}/actions/hangup", json={})
        unknown = await client.post("/v2/calls/v3:nope/actions/hangup", json={})
    assert ended_answer.status_code == 422
    assert ended_answer.json()["errors"][0]["code"] == "90018"
    assert ended_answer.json()["errors"][0]["title"] == "Call has already ended"
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "10005"


async def test_telnyx_texml_without_rtp_mode_is_recorded_as_the_calls_error(
    telnyx: FakeTelnyxApi, bridge: Bridge
) -> None:
    bridge.xml["telnyx"] = '<Response><Connect><Stream url="ws://127.0.0.1:9/x"/></Connect></Response>'
    async with telnyx_client(telnyx) as client:
        await client.post(TEXML_CALLS, json=telnyx_dial(bridge))
    call = await ended(await telnyx.wait_for_call())
    assert call.error is not None and "bidirectionalMode" in call.error
    assert call.end_status == "completed" and call.report is None


# --- Plivo ----------------------------------------------------------------------------------------


def plivo_client(fake: FakePlivoApi, token: str = PLIVO_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fake.base_url, auth=(PLIVO_ID, token))


PLIVO_CALLS = f"/v1/Account/{PLIVO_ID}/Call/"


def plivo_dial(bridge: Bridge, **extra: Any) -> dict[str, Any]:
    body = {
        "from": "+14151234567",
        "to": "+14157654321",
        "answer_url": bridge.url("/xml/plivo"),
        "answer_method": "POST",
        "ring_url": bridge.url("/status/ring"),
        "hangup_url": bridge.url("/status/hangup"),
        "ring_timeout": 30,
    }
    return {**body, **extra}


def plivo_signed(hit: Hit) -> bool:
    nonce, signature = hit.headers["x-plivo-signature-v3-nonce"], hit.headers["x-plivo-signature-v3"]
    return validate_v3_signature(hit.method, hit.url, nonce, PLIVO_TOKEN, signature, hit.params)


async def plivo_live_call(fake: FakePlivoApi, bridge: Bridge, client: httpx.AsyncClient) -> FakeCall:
    await client.post(PLIVO_CALLS, json=plivo_dial(bridge))
    call = await fake.wait_for_call()
    await until(streaming(bridge, "plivo"))
    return call


async def test_plivo_wrong_credentials_answer_401(plivo: FakePlivoApi, bridge: Bridge) -> None:
    async with plivo_client(plivo, "wrong") as client:
        response = await client.post(PLIVO_CALLS, json=plivo_dial(bridge))
    assert response.status_code == 401
    assert set(response.json()) == {"api_id", "error"}


async def test_plivo_missing_to_answers_400_with_api_id_and_error(
    plivo: FakePlivoApi, bridge: Bridge
) -> None:
    body = plivo_dial(bridge)
    del body["to"]
    async with plivo_client(plivo) as client:
        response = await client.post(PLIVO_CALLS, json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"api_id", "error"} and "to" in response.json()["error"]


async def test_plivo_make_call_answers_201_call_fired(plivo: FakePlivoApi, bridge: Bridge) -> None:
    async with plivo_client(plivo) as client:
        response = await client.post(PLIVO_CALLS, json=plivo_dial(bridge))
    body = response.json()
    assert response.status_code == 201
    assert set(body) == {"api_id", "message", "request_uuid"} and body["message"] == "call fired"
    call = await plivo.wait_for_call()
    assert call.ids["request_uuid"] == body["request_uuid"]


async def test_plivo_ring_answer_and_hangup_requests_are_v3_signed_in_order(
    plivo: FakePlivoApi, bridge: Bridge
) -> None:
    async with plivo_client(plivo) as client:
        await client.post(PLIVO_CALLS, json=plivo_dial(bridge))
    call = await ended(await plivo.wait_for_call())
    assert [h.url.rsplit("/", 1)[-1] for h in bridge.hits] == ["ring", "plivo", "hangup"]
    assert all(plivo_signed(h) for h in bridge.hits)
    ring, answer, hangup = (h.params for h in bridge.hits)
    assert ring["CallStatus"] == "ringing" and ring["CallUUID"] == call.sid
    assert (answer["Event"], answer["CallStatus"], answer["Direction"]) == (
        "StartApp",
        "in-progress",
        "outbound",
    )
    assert answer["ALegRequestUUID"] == answer["RequestUUID"] == call.ids["request_uuid"]
    assert (hangup["Event"], hangup["CallStatus"]) == ("Hangup", "completed")
    assert hangup["Duration"] == hangup["BillDuration"] == str(call.duration)
    assert call.report is not None and call.report.media_received > 0


async def test_plivo_busy_reports_busy_at_the_hangup_url_without_a_stream(
    plivo: FakePlivoApi, bridge: Bridge
) -> None:
    plivo.queue_outcome("busy")
    async with plivo_client(plivo) as client:
        await client.post(PLIVO_CALLS, json=plivo_dial(bridge))
    call = await ended(await plivo.wait_for_call())
    (hangup,) = bridge.at("/status/hangup")
    assert (hangup.params["CallStatus"], hangup.params["HangupCause"]) == ("busy", "USER_BUSY")
    assert call.report is None and not bridge.at("/xml/plivo")


async def test_plivo_delete_call_closes_the_stream_and_reports_completed(
    plivo: FakePlivoApi, bridge: Bridge
) -> None:
    plivo.callee = CallScript(audio=speech_like(3.0), tail_seconds=1.0)
    async with plivo_client(plivo) as client:
        call = await plivo_live_call(plivo, bridge, client)
        response = await client.delete(f"{PLIVO_CALLS}{call.sid}/")
        await ended(call)
        again = await client.delete(f"{PLIVO_CALLS}{call.sid}/")
    assert response.status_code == 204
    assert all(m["event"] != "stop" for m in bridge.streams[0][1])  # Plivo just closes the socket
    hangup = bridge.at("/status/hangup")[-1].params
    assert (hangup["CallStatus"], hangup["HangupSource"], hangup["HangupCauseCode"]) == (
        "completed",
        "API Request",
        "4000",
    )
    assert again.status_code == 404 and set(again.json()) == {"api_id", "error"}


async def test_plivo_cancel_request_while_ringing_ends_cancel(plivo: FakePlivoApi, bridge: Bridge) -> None:
    plivo.ring_seconds = 5
    async with plivo_client(plivo) as client:
        request_uuid = (await client.post(PLIVO_CALLS, json=plivo_dial(bridge))).json()["request_uuid"]
        call = await plivo.wait_for_call()
        await until(lambda: bridge.at("/status/ring"))
        response = await client.delete(f"/v1/Account/{PLIVO_ID}/Request/{request_uuid}/")
    await ended(call)
    assert response.status_code == 204
    hangup = bridge.at("/status/hangup")[-1].params
    assert (hangup["CallStatus"], hangup["HangupCauseName"]) == ("cancel", "Canceled")
    assert not bridge.streams


async def test_plivo_transfer_fetches_aleg_url_and_records_the_dial_target(
    plivo: FakePlivoApi, bridge: Bridge
) -> None:
    plivo.callee = CallScript(audio=speech_like(3.0), tail_seconds=1.0)
    bridge.xml["transfer"] = "<Response><Dial><User>sip:agent@phone.plivo.com</User></Dial></Response>"
    async with plivo_client(plivo) as client:
        call = await plivo_live_call(plivo, bridge, client)
        body = {"legs": "aleg", "aleg_url": bridge.url("/xml/transfer"), "aleg_method": "POST"}
        response = await client.post(f"{PLIVO_CALLS}{call.sid}/", json=body)
    await ended(call)
    assert response.status_code == 202 and response.json()["message"] == "call transferred"
    assert call.transfers == ["sip:agent@phone.plivo.com"]
    assert plivo_signed(bridge.at("/xml/transfer")[0])
    assert call.end_status == "completed"


async def test_plivo_dtmf_is_recorded(plivo: FakePlivoApi, bridge: Bridge) -> None:
    async with plivo_client(plivo) as client:
        call = await plivo_live_call(plivo, bridge, client)
        response = await client.post(f"{PLIVO_CALLS}{call.sid}/DTMF/", json={"digits": "12#", "leg": "aleg"})
    assert response.status_code == 202 and response.json()["message"] == "digits sent"
    assert call.dtmf == ["12#"]
    await ended(call)


async def test_plivo_unknown_call_answers_404(plivo: FakePlivoApi) -> None:
    async with plivo_client(plivo) as client:
        response = await client.delete(f"{PLIVO_CALLS}00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json()["error"] == "not found"


# --- `callbridge simulate <provider> --outbound`: argument checks ----------------------------------


def simulate_args(*argv: str) -> Any:
    return build_parser().parse_args(["simulate", *argv])


def test_outbound_options_parse_with_the_default_api_port() -> None:
    args = simulate_args(
        "plivo", "--outbound", "--to", "+14157654321", "--from", "+14151234567", "--api-key", "k"
    )
    assert (args.outbound, args.to, args.from_number, args.api_port) == (
        True,
        "+14157654321",
        "+14151234567",
        8010,
    )
    check_outbound_args(args)


# --- every provider -------------------------------------------------------------------------------


def create_request(fake: FakeProviderApi, bridge: Bridge) -> tuple[httpx.AsyncClient, str, dict[str, Any]]:
    """(client, path, httpx keyword arguments) of a call create on `fake`."""
    if isinstance(fake, FakeTwilioApi):
        return twilio_client(fake), f"{CALLS}.json", {"data": twilio_dial(bridge, "completed")}
    if isinstance(fake, FakeTelnyxApi):
        return telnyx_client(fake), TEXML_CALLS, {"json": telnyx_dial(bridge)}
    assert isinstance(fake, FakePlivoApi)
    return plivo_client(fake), PLIVO_CALLS, {"json": plivo_dial(bridge)}


async def test_a_slow_answer_dials_first_and_the_default_outcome_ends_each_call(
    any_fake: FakeProviderApi, bridge: Bridge
) -> None:
    fake = any_fake
    fake.outcome, fake.answer_delay = "busy", 0.5
    client, path, body = create_request(fake, bridge)
    async with client:
        creating = asyncio.create_task(client.post(path, **body))
        call = await fake.wait_for_call()
        assert not creating.done() and fake.dials[call.to] == 1  # dialled before the answer
        assert (await creating).status_code in (200, 201)
    assert (await ended(call)).end_status == "busy" and call.report is None


def test_outbound_refuses_exotel() -> None:
    args = simulate_args("exotel", "--outbound", "--to", "+1", "--from", "+2", "--api-key", "k")
    with pytest.raises(SetupError, match="twilio, telnyx, plivo"):
        check_outbound_args(args)


def test_outbound_names_every_missing_option() -> None:
    with pytest.raises(SetupError, match="--to and --from and --api-key"):
        check_outbound_args(simulate_args("twilio", "--outbound"))


def test_outbound_refuses_an_impossible_api_port() -> None:
    args = simulate_args(
        "twilio", "--outbound", "--to", "+1", "--from", "+2", "--api-key", "k", "--api-port", "0"
    )
    with pytest.raises(SetupError, match="--api-port"):
        check_outbound_args(args)


def test_outbound_refuses_a_config_not_pointing_at_the_fake_with_the_patch_to_send() -> None:
    message = api_base_refusal("twilio", {"apiBaseUrl": None}, "http://cb:8000", "http://127.0.0.1:8010")
    assert message is not None and "the real twilio API" in message
    assert (
        "curl -X PATCH http://cb:8000/api/telephony_configs/twilio -H 'X-API-Key: ...' "
        "-H 'content-type: application/json' -d '{\"apiBaseUrl\": \"http://127.0.0.1:8010\"}'"
    ) in message
    pointed = {"apiBaseUrl": "http://127.0.0.1:8010/"}  # as callbridge answers it (a normalised URL)
    assert api_base_refusal("twilio", pointed, "http://cb:8000", "http://127.0.0.1:8010") is None
