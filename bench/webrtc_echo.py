"""webRtc echo calls: the round trip a WebRTC client hears, and how well the echo matches what it sent.

Run: `.venv/bin/python bench/webrtc_echo.py [--calls 5] [--seconds 3] [--concurrent 0]`. Prints numbers;
asserts nothing.

One real `callbridge serve` subprocess (server_process.run_server; ICE on 127.0.0.1 through
CALLBRIDGE_WEBRTC_HOST_ADDRESSES) with an echo agent. Calls one after another, each from an aiortc client
(app/simulator/webrtc_client.py) on 127.0.0.1: create the call (`medium: {"webRtc": {}}`), post the complete
offer to the joinUrl, wait for the agent's first frame, play `speech_like` at 48 kHz, record what comes
back from the moment it starts playing, hang up with DELETE.

- `answer ms`: from the offer's POST to its 201 (the server's peer connection, ICE gathered);
- `media ms`: from the 201 to the client's first received frame (ICE checks, DTLS, SRTP);
- `round trip ms`: the echo's lag in the recording, i.e. mouth to ear: the client's track, the server's
  jitter buffer and Opus decode, the call's playout lead, Opus encode, the client's jitter buffer;
- `correlation`: of the echo against what was sent at that lag (Opus both ways, 48 kHz).

`--concurrent N` then joins N calls, plays the audio on all of them at once and prints the server's CPU
(user+sys over its process tree) per call-second over that stretch, and each call's round trip and
correlation. The N clients run in this one process, beside the server on the same cores: past a few calls
the clients' own lateness shows in the echoes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx
from server_process import API_KEY, run_server, tree_cpu_seconds

from app.simulator.audio import measure_round_trip, speech_like
from app.simulator.webrtc_client import WebRtcClient
from app.webrtc.ice import use_host_addresses
from app.webrtc.tracks import SAMPLE_RATE

TAIL_S = 1.0  # recorded after the audio, so the last echoes come back


async def one_call(api: httpx.AsyncClient, agent: str, seconds: float, seed: int) -> dict[str, float]:
    call = (await api.post(f"/api/agents/{agent}/calls", json={"medium": {"webRtc": {}}})).json()
    client = WebRtcClient()
    try:
        posted = time.perf_counter()
        await client.join(api, call["joinUrl"])
        answered = time.perf_counter()
        await client.hear()
        first_frame = time.perf_counter()
        sent = speech_like(seconds, SAMPLE_RATE, seed=seed)
        client.play(sent)
        await client.hear(seconds + TAIL_S)
        trip = measure_round_trip(sent, client.heard(), SAMPLE_RATE)
        await client.hang_up(api)
    finally:
        await client.close()
    return {
        "answer_ms": (answered - posted) * 1000,
        "media_ms": (first_frame - answered) * 1000,
        "round_trip_ms": trip.lag_ms if trip else float("nan"),
        "correlation": trip.correlation if trip else 0.0,
    }


def summary(results: list[dict[str, float]], keys: tuple[str, ...]) -> None:
    for key in keys:
        values = [r[key] for r in results]
        fmt = "{:.3f}" if key == "correlation" else "{:.0f}"
        line = " ".join(fmt.format(v) for v in values)
        print(
            f"  {key:14} median {fmt.format(statistics.median(values))}  min {fmt.format(min(values))}  "
            f"max {fmt.format(max(values))}   ({line})"
        )


async def main(calls: int, seconds: float, concurrent: int) -> None:
    use_host_addresses(["127.0.0.1"])
    with run_server(WEBRTC_HOST_ADDRESSES="127.0.0.1") as (base_url, pid):
        async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=10) as api:
            agent = (
                (await api.post("/api/agents", json={"name": "webrtc"})).raise_for_status().json()["agentId"]
            )
            await one_call(api, agent, 0.5, seed=0)  # warm-up: imports and first-use set-up out of the clock
            results = [await one_call(api, agent, seconds, seed=1 + i) for i in range(calls)]
            print(f"webRtc echo: {calls} calls of {seconds:g} s, one after another, ICE on 127.0.0.1")
            summary(results, ("answer_ms", "media_ms", "round_trip_ms", "correlation"))
            if not concurrent:
                return
            await at_once(api, agent, pid, concurrent, seconds)


async def at_once(api: httpx.AsyncClient, agent: str, pid: int, n: int, seconds: float) -> None:
    """N calls joined first, then all playing at once: the server's CPU over that stretch only."""
    calls = [
        (await api.post(f"/api/agents/{agent}/calls", json={"medium": {"webRtc": {}}})).json()
        for _ in range(n)
    ]
    clients = [WebRtcClient() for _ in range(n)]
    try:
        for client, call in zip(clients, calls, strict=True):
            await client.join(api, call["joinUrl"])
        await asyncio.gather(*(client.hear() for client in clients))
        sent = [speech_like(seconds, SAMPLE_RATE, seed=100 + i) for i in range(n)]
        cpu_before, started = tree_cpu_seconds(pid), time.perf_counter()
        for client, audio in zip(clients, sent, strict=True):
            client.play(audio)
        await asyncio.gather(*(client.hear(seconds + TAIL_S) for client in clients))
        cpu, wall = tree_cpu_seconds(pid) - cpu_before, time.perf_counter() - started
        trips = [measure_round_trip(a, c.heard(), SAMPLE_RATE) for a, c in zip(sent, clients, strict=True)]
        for client in clients:
            await client.hang_up(api)
    finally:
        for client in clients:
            await client.close()
    print(f"webRtc echo: {n} calls at once, {seconds:g} s of audio each ({wall:.1f} s measured)")
    print(f"  server CPU     {cpu / (n * wall) * 1000:.1f} ms per call-second (media only, set-up excluded)")
    results = [
        {"round_trip_ms": t.lag_ms if t else float("nan"), "correlation": t.correlation if t else 0.0}
        for t in trips
    ]
    summary(results, ("round_trip_ms", "correlation"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrent", type=int, default=0, help="then this many calls at once")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.seconds, args.concurrent))
