"""The webRtc medium through the API, in process: its joinUrl is an HTTP(S) WHIP endpoint, and what the
endpoint refuses before any WebRTC is made."""

from __future__ import annotations

from starlette.testclient import TestClient


def new_webrtc_call(client: TestClient) -> dict:
    response = client.post("/api/calls", json={"medium": {"webRtc": {}}})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_webrtc_calls_join_url_is_https_under_the_public_url(client: TestClient) -> None:
    call = new_webrtc_call(client)
    assert call["medium"] == {"webRtc": {}}
    assert call["joinUrl"].startswith(f"https://bridge.example.com/calls/{call['callId']}/webrtc/")


def test_other_media_keep_websocket_join_urls(client: TestClient) -> None:
    call = client.post("/api/calls", json={"medium": {"serverWebSocket": {"inputSampleRate": 16000}}}).json()
    assert call["joinUrl"].startswith("wss://bridge.example.com/calls/")


def test_the_webrtc_medium_takes_no_options(client: TestClient) -> None:
    response = client.post("/api/calls", json={"medium": {"webRtc": {"video": True}}})
    assert response.status_code == 400


def test_the_join_url_needs_no_api_key_but_its_token(client: TestClient) -> None:
    call = new_webrtc_call(client)
    path = call["joinUrl"].removeprefix("https://bridge.example.com")
    anonymous = TestClient(client.app)
    response = anonymous.post(path, content=b"v=0", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json()["code"] == "not_sdp"
    forged = anonymous.post(
        path.rsplit("/", 1)[0] + "/x", content=b"v=0", headers={"Content-Type": "application/sdp"}
    )
    assert forged.status_code == 403 and forged.json()["code"] == "invalid_credential"


def test_the_session_url_of_an_unjoined_call_hangs_it_up(client: TestClient) -> None:
    call = new_webrtc_call(client)
    path = call["joinUrl"].removeprefix("https://bridge.example.com")
    assert TestClient(client.app).delete(path + "/session").status_code == 204
    ended = client.get(f"/api/calls/{call['callId']}").json()
    assert ended["endReason"] == "hangup"
