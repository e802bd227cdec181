"""Calling an agent from the console's "Call this agent" button: Chromium's fake microphone plays the probe
over WebRTC (ICE on 127.0.0.1) to the echo agent, and what comes back is the probe."""

from __future__ import annotations

import base64
from statistics import median

import pytest
from playwright.async_api import expect

from app.simulator.audio import RoundTrip, measure_round_trip
from tests.browser.conftest import A_LEVEL, PROBE_RATE, log_in, probe_audio, screenshot
from tests.conftest import RunningServer, ended, events_of
from tests.live_call import server_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

#: Keeps each RTCPeerConnection the page makes, so the test can reach the microphone track it sends.
KEEP_PEERS = """
window.testPeers = [];
const Original = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Original {
  constructor(...args) { super(...args); window.testPeers.push(this); }
};
"""
#: Records the microphone as sent (left) and the agent as heard (right) for `seconds`, at PROBE_RATE;
#: returns both as base64 s16le.
RECORD = """
async ([seconds, rate]) => {
  const peer = window.testPeers[window.testPeers.length - 1];
  const sent = new MediaStream([peer.getSenders()[0].track]);
  const heard = document.getElementById("agent-audio").srcObject;
  const context = new AudioContext({ sampleRate: rate });
  await context.resume();
  const merger = context.createChannelMerger(2);
  context.createMediaStreamSource(sent).connect(merger, 0, 0);
  context.createMediaStreamSource(heard).connect(merger, 0, 1);
  const recorder = context.createScriptProcessor(4096, 2, 1);
  const channels = [[], []];
  recorder.onaudioprocess = (event) => {
    for (const c of [0, 1]) channels[c].push(new Float32Array(event.inputBuffer.getChannelData(c)));
  };
  merger.connect(recorder);
  recorder.connect(context.destination);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  recorder.disconnect();
  await context.close();
  return channels.map((chunks) => {
    const samples = new Int16Array(chunks.reduce((n, chunk) => n + chunk.length, 0));
    let i = 0;
    for (const chunk of chunks) for (const x of chunk) samples[i++] = Math.max(-1, Math.min(1, x)) * 32767;
    let text = "";
    const bytes = new Uint8Array(samples.buffer);
    for (let j = 0; j < bytes.length; j += 8192) text += String.fromCharCode(...bytes.subarray(j, j + 8192));
    return btoa(text);
  });
}
"""
RECORD_SECONDS = 5.0
#: The addresses of the ICE candidate pair the browser's call uses: [its own, the server's].
ICE_PAIR = """
async () => {
  const stats = await window.testPeers[window.testPeers.length - 1].getStats();
  const transport = [...stats.values()].find((report) => report.type === "transport");
  const pair = stats.get(transport.selectedCandidatePairId);
  return [stats.get(pair.localCandidateId).address, stats.get(pair.remoteCandidateId).address];
}
"""


#: The audio is compared in windows this long, each at its own lag: the jitter buffer may stretch time by a
#: frame now and then (the lag moves by 20 ms), which would blur one long comparison.
WINDOW_S = 0.25
#: Where the windows start: the browser's processing of the microphone has settled by then.
SETTLED_S = 1.0


def windows(audio: bytes) -> list[tuple[int, bytes]]:
    """(byte offset, window) of s16le audio at PROBE_RATE, from SETTLED_S on."""
    size = int(WINDOW_S * PROBE_RATE) * 2
    start = int(SETTLED_S * PROBE_RATE) * 2
    return [(at, audio[at : at + size]) for at in range(start, len(audio) - size + 1, size)]


def echo_match(sent: bytes, heard: bytes) -> RoundTrip:
    """The median lag and correlation of each window of what was sent found again in what was heard."""
    trips = [
        measure_round_trip(chunk, heard[at : at + len(chunk) * 4], PROBE_RATE) for at, chunk in windows(sent)
    ]
    found = [t for t in trips if t is not None]
    assert found, "nothing came back"
    return RoundTrip(median([t.lag_ms for t in found]), median([t.correlation for t in found]))


def probe_correlation(heard: bytes) -> float:
    """The median correlation of each window of what was heard with the looping probe (anywhere in it)."""
    looped = probe_audio() * 2
    trips = [measure_round_trip(chunk, looped, PROBE_RATE) for _, chunk in windows(heard)]
    return median([t.correlation if t is not None else 0.0 for t in trips])


async def test_calling_the_echo_agent_from_the_console_plays_back_the_probe(
    page, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with server.api() as api:
        body = {"name": "browser-echo", "callTemplate": {"pipeline": {"echo": {}}}}
        agent = (await api.post("/api/agents", json=body)).json()["agentId"]
    await page.add_init_script(KEEP_PEERS)
    await log_in(page)
    await page.goto(f"/console#/agents/{agent}")
    await page.click("#call-agent")
    await expect(page.locator("#call-state")).to_have_text("connected", timeout=15_000)
    call_id = (await page.locator("#call-link a").get_attribute("href")).rsplit("/", 1)[1]
    sent_b64, heard_b64 = await page.evaluate(RECORD, [RECORD_SECONDS, PROBE_RATE])
    browser_address, server_address = await page.evaluate(ICE_PAIR)
    assert server_address == "127.0.0.1"  # the media goes to the server over loopback
    await screenshot(page, "agent-calling")

    async with server.api() as api:  # server side: the caller's audio is the probe's level
        stream = server_events(api, f"/api/calls/{call_id}/events/stream")
        level = None
        async for event, data in stream:
            if event == "levels" and data.get("callerToAgent") is not None:
                level = data["callerToAgent"]
                break
        await stream.aclose()
    await page.click("#call-link a")  # the call goes on while its timeline is open
    await expect(page.locator("#level-caller")).to_have_attribute("data-dbfs", A_LEVEL)
    await expect(page.locator("#level-agent")).to_have_attribute("data-dbfs", A_LEVEL)
    await expect(page.locator("#call-summary")).to_contain_text("medium: webRtc")
    await screenshot(page, "call-webrtc-live")
    await page.go_back()
    await page.click("#hang-up")
    await expect(page.locator("#call-state")).to_have_text("ended")
    await expect(page.locator("#call-agent")).to_be_enabled()

    sent, heard = base64.b64decode(sent_b64), base64.b64decode(heard_b64)
    trip = echo_match(sent, heard)
    correlation = probe_correlation(heard)
    with capsys.disabled():
        print(
            f"\nbrowser echo: round trip {trip.lag_ms:.0f} ms (microphone track to what played), correlation "
            f"{trip.correlation:.3f} with what was sent, {correlation:.3f} with the probe; the server heard "
            f"the caller at {level} dBFS; ICE {browser_address} → {server_address}"
        )
    # Opus both ways and Chromium's processing of the microphone (unrelated audio: about 0).
    assert trip.correlation >= 0.7
    assert correlation >= 0.6
    assert level is not None and -50 < level < 0
    call = await ended(server, call_id)
    assert call["endReason"] == "hangup" and "webRtc" in call["medium"]
    assert [e["type"] for e in await events_of(server, call_id)].count("joined") == 1
