"""webRtc calls against a real `callbridge serve`: an aiortc client posts its offer to the WHIP joinUrl.

ICE stays on 127.0.0.1 both ways: the server is told so by CALLBRIDGE_WEBRTC_HOST_ADDRESSES
(tests/conftest.py), this client by `use_host_addresses`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from app.simulator.audio import RoundTrip, measure_round_trip, speech_like
from app.simulator.webrtc_client import JoinRefused, WebRtcClient
from app.webrtc.ice import use_host_addresses
from app.webrtc.tracks import SAMPLE_RATE
from tests.conftest import RunningServer, ended, events_of, get_call, run_server, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    use_host_addresses(["127.0.0.1"])
    yield
    use_host_addresses([])


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with server.api() as api:
        yield api


@pytest.fixture
async def webrtc_call(http: httpx.AsyncClient, make_agent) -> dict:  # type: ignore[no-untyped-def]
    """A new call with medium webRtc to an echo agent."""
    agent = await make_agent()
    response = await http.post(f"/api/agents/{agent}/calls", json={"medium": {"webRtc": {}}})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def client() -> AsyncIterator[WebRtcClient]:
    client = WebRtcClient()
    yield client
    await client.close()


async def joined_client(http: httpx.AsyncClient, call: dict, client: WebRtcClient) -> WebRtcClient:
    """`client` joined to `call`, with the agent's audio arriving."""
    await client.join(http, call["joinUrl"])

    async def hearing() -> bool:
        return client.frames_in > 0

    await wait_for(hearing)
    return client


async def refusals(server: RunningServer, call_id: str) -> list[dict]:
    return [e for e in await events_of(server, call_id) if e["type"] == "join_refused"]


def without_opus(sdp: str) -> str:
    """`sdp` with Opus taken out of its audio section (the other codecs left)."""
    opus = re.search(r"a=rtpmap:(\d+) opus/48000/2", sdp)
    assert opus is not None
    pt = opus[1]
    lines = [line for line in sdp.splitlines() if not re.match(rf"a=(rtpmap|fmtp|rtcp-fb):{pt} ", line)]
    lines = [re.sub(rf"^(m=audio \S+ \S+(?: \d+)*?) {pt}\b", r"\1", line) for line in lines]
    return "\r\n".join(lines) + "\r\n"


async def test_the_join_url_of_a_webrtc_call_is_its_whip_endpoint(
    server: RunningServer, webrtc_call: dict
) -> None:
    url = urlsplit(webrtc_call["joinUrl"])
    assert url.scheme == "http" and url.netloc == urlsplit(server.base_url).netloc
    assert re.fullmatch(rf"/calls/{webrtc_call['callId']}/webrtc/[\w-]+", url.path), url.path


async def test_the_offer_is_answered_with_sdp_and_a_session_location(
    http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    response = await http.post(
        webrtc_call["joinUrl"], content=await client.offer(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/sdp")
    assert response.text.startswith("v=0") and "opus/48000/2" in response.text
    assert response.headers["location"] == webrtc_call["joinUrl"] + "/session"


async def echo_of_speech(client: WebRtcClient) -> RoundTrip | None:
    """Three seconds of speech-like audio played to the agent, and how what came back matches it."""
    sent = speech_like(3.0, SAMPLE_RATE)
    client.play(sent)

    async def heard_it_all() -> bool:
        return client.heard_seconds() >= 4.0

    await wait_for(heard_it_all, within=15)
    return measure_round_trip(sent, client.heard(), SAMPLE_RATE)


async def test_a_callers_audio_comes_back_from_the_echo_agent(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    await joined_client(http, webrtc_call, client)
    trip = await echo_of_speech(client)
    assert trip is not None and 0 <= trip.lag_ms <= 500 and trip.correlation >= 0.9, trip
    joined = [e for e in await events_of(server, webrtc_call["callId"]) if e["type"] == "joined"]
    assert joined and joined[0]["extras"]["wireFormat"] == "L16 48000 Hz/little-endian"


async def test_an_agent_at_16_khz_hears_and_answers_through_the_resampler(
    server: RunningServer, http: httpx.AsyncClient, make_agent, client: WebRtcClient
) -> None:
    agent = await make_agent(pipeline={"echo": {"sampleRate": 16000}})
    call = (await http.post(f"/api/agents/{agent}/calls", json={"medium": {"webRtc": {}}})).json()
    await joined_client(http, call, client)
    trip = await echo_of_speech(client)
    assert trip is not None and trip.correlation >= 0.9, trip
    joined = [e for e in await events_of(server, call["callId"]) if e["type"] == "joined"]
    assert joined[0]["extras"]["resampled"] is True


async def test_delete_on_the_session_url_ends_the_call_as_a_hangup(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    await joined_client(http, webrtc_call, client)
    response = await client.hang_up(http)
    assert response.status_code == 204
    call = await ended(server, webrtc_call["callId"])
    assert call["endReason"] == "hangup" and call["joined"] is not None
    assert call["billedDuration"] == "6s"


async def test_delete_before_the_connection_is_up_ends_the_call_as_a_hangup(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    response = await http.post(
        webrtc_call["joinUrl"], content=await client.offer(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 201  # the answer is never set: no media will flow
    assert (await http.delete(response.headers["location"])).status_code == 204
    call = await ended(server, webrtc_call["callId"])
    assert call["endReason"] == "hangup" and call["joined"] is None


async def test_the_client_closing_its_peer_connection_ends_the_call_as_a_hangup(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    await joined_client(http, webrtc_call, client)
    await client.close()
    call = await ended(server, webrtc_call["callId"])
    assert call["endReason"] == "hangup"


async def test_the_api_hanging_up_closes_the_clients_connection(
    http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    await joined_client(http, webrtc_call, client)
    call_id = webrtc_call["callId"]
    response = await http.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
    assert response.status_code == 204

    async def client_closed() -> bool:
        return client.peer.connectionState == "closed"

    await wait_for(client_closed)


async def test_a_second_offer_is_refused_and_recorded(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    await joined_client(http, webrtc_call, client)
    second = WebRtcClient()
    try:
        with pytest.raises(JoinRefused) as refused:
            await second.join(http, webrtc_call["joinUrl"])
    finally:
        await second.close()
    assert refused.value.status == 409 and orjson.loads(refused.value.body)["code"] == "already_joined"
    assert [e["extras"]["code"] for e in await refusals(server, webrtc_call["callId"])] == ["already_joined"]
    assert (await get_call(server, webrtc_call["callId"]))["ended"] is None


async def test_a_wrong_token_is_refused_without_touching_the_call(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    forged = webrtc_call["joinUrl"].rsplit("/", 1)[0] + "/not-the-token"
    response = await http.post(
        forged, content=await client.offer(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 403 and response.json()["code"] == "invalid_credential"
    call = await get_call(server, webrtc_call["callId"])
    assert call["joined"] is None and call["ended"] is None
    await joined_client(http, webrtc_call, client)  # the real client still joins


async def test_a_body_that_is_not_sdp_is_refused_and_recorded(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict
) -> None:
    response = await http.post(webrtc_call["joinUrl"], json={"sdp": "v=0"})
    assert response.status_code == 415 and response.json()["code"] == "not_sdp"
    assert [e["extras"]["code"] for e in await refusals(server, webrtc_call["callId"])] == ["not_sdp"]


async def test_an_offer_without_opus_is_refused_and_the_call_waits_for_another(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    offer = without_opus(await client.offer())
    assert "opus" not in offer and "m=audio" in offer
    response = await http.post(
        webrtc_call["joinUrl"], content=offer, headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 400 and response.json()["code"] == "no_opus_audio"
    assert [e["extras"]["code"] for e in await refusals(server, webrtc_call["callId"])] == ["no_opus_audio"]
    assert (await get_call(server, webrtc_call["callId"]))["ended"] is None


async def test_an_offer_for_a_call_of_another_medium_is_refused(
    http: httpx.AsyncClient, make_agent, client: WebRtcClient
) -> None:
    agent = await make_agent()
    call = (await http.post(f"/api/agents/{agent}/calls", json={"medium": {"twilio": {}}})).json()
    stream_url = urlsplit(call["joinUrl"])
    webrtc_url = f"http://{stream_url.netloc}{stream_url.path.replace('/stream/', '/webrtc/')}"
    response = await http.post(
        webrtc_url, content=await client.offer(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 409 and response.json()["code"] == "wrong_medium"


async def test_the_data_channel_carries_the_call_started_and_state_messages(
    http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    client.open_data_channel()
    await joined_client(http, webrtc_call, client)

    async def started() -> list[dict]:
        return [m for m in map(orjson.loads, client.messages) if m["type"] == "call_started"]

    assert (await wait_for(started))[0]["callId"] == webrtc_call["callId"]


async def test_a_hang_up_on_the_data_channel_ends_the_call_as_a_hangup(
    server: RunningServer, http: httpx.AsyncClient, webrtc_call: dict, client: WebRtcClient
) -> None:
    client.open_data_channel()
    await joined_client(http, webrtc_call, client)

    async def started() -> bool:
        return any(orjson.loads(m)["type"] == "call_started" for m in client.messages)

    await wait_for(started)
    assert client.channel is not None
    client.channel.send(orjson.dumps({"type": "hang_up"}).decode())
    call = await ended(server, webrtc_call["callId"])
    assert call["endReason"] == "hangup"


@pytest.fixture(scope="module")
def quick_idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose calls end after 2 s without the client's audio."""
    with run_server(tmp_path_factory.mktemp("idle"), CALLBRIDGE_RTP_TIMEOUT="2") as running:
        yield running


async def test_a_client_that_stops_sending_audio_is_ended_as_a_connection_error(
    quick_idle_server: RunningServer, client: WebRtcClient
) -> None:
    server = quick_idle_server
    async with server.api() as api:
        agent = (await api.post("/api/agents", json={"name": "idle", "callTemplate": {}})).json()["agentId"]
        call = (await api.post(f"/api/agents/{agent}/calls", json={"medium": {"webRtc": {}}})).json()
        await joined_client(api, call, client)
    client.outbound.stop()  # the track ends: aiortc sends no more RTP, the connection stays up
    ended_call = await ended(server, call["callId"], within=15)
    assert ended_call["endReason"] == "connection_error"
