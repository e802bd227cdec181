"""Server CPU per call-second: N concurrent SIP echo calls (PCMU, G.722) next to N Twilio media-stream calls.

Run: `.venv/bin/python bench/sip_calls.py [--calls 20,50] [--seconds 15]`. Prints numbers; asserts nothing.
bench/README.md says what each number means.

One real `callbridge serve` subprocess (server_process.run_server: temp data dir, embedded SQLite; SIP on
a free UDP loopback port and an RTP port range through CALLBRIDGE_SIP_LISTEN / CALLBRIDGE_RTP_PORTS, the
settings `--sip` sets) with an echo agent. Each level (transport, codec, N) runs in a separate
load-generator process (this script with `--generate`), which places N calls whose starts are spread over
STAGGER_S and reports per-call timings and media counts as JSON. This process samples the server's
user+sys CPU (/proc/<pid>/stat) every SAMPLE_S meanwhile, so the steady-state window (from the last call's
first media packet to the first call's last) can be cut out afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import bench_frames as bf
import httpx
import numpy as np
from loop_lateness import Lateness
from server_process import ACCOUNT_SID, API_KEY, AUTH_TOKEN, ServerSampler, cpu_seconds, run_server, setup

from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.formats import PCMU_8K
from app.media.g722 import G722Decoder, G722Encoder
from app.simulator.audio import measure_round_trip, speech_like
from app.simulator.carrier import Progress
from app.simulator.twilio import CallScript, FakeTwilio
from app.sip.ports import RtpPortRange
from app.sip.rtp_session import RtpAudio, RtpClosed, RtpSession
from app.sip.sdp import parse_sdp
from tests.api.sip_phone import SipPhone, sdp_offer

HOST = "127.0.0.1"
SERVER_RTP_PORTS = "30000-31999"
PHONE_RTP = RtpPortRange(34000, 35999)
STAGGER_S = 1.0
TAIL_S = 0.5  # silence after the audio, to hear the last echoes (the Twilio script's tail is the same)
FRAME_S = 0.020
LATE_GAP_S = 0.040  # an echoed packet arriving this long after its predecessor counts as late
SAMPLE_S = 0.05
SETTLE_S = 2.0
DTMF_PT = 101
SEARCH_FRAMES = 5
MATCH = 0.9


@dataclass(frozen=True)
class SipCodec:
    name: str
    payload_type: int
    rtpmap: str
    rate: int  # of the PCM behind it


CODECS = {
    "PCMU": SipCodec("PCMU", 0, "a=rtpmap:0 PCMU/8000", 8000),
    "G722": SipCodec("G722", 9, "a=rtpmap:9 G722/8000", 16000),  # RTP clock 8000 (RFC 3551 §4.5.2)
}


@dataclass
class CallResult:
    """One call as the load generator saw it; times are time.monotonic() (shared across processes)."""

    ok: bool
    error: str = ""
    started: float = 0.0  # INVITE / webhook
    ended: float = 0.0  # BYE answered / stream closed
    media_start: float = 0.0  # first packet or media message sent
    media_end: float = 0.0  # last one sent
    packets_sent: int = 0  # 20 ms packets or media messages, the tail included
    packets_back: int = 0  # 20 ms of audio that came back (callbridge keeps RTP flowing: may exceed sent)
    frames_checked: int = 0  # 20 ms frames of the caller's audio (the tail left out)
    frames_echoed: int = 0  # of those, found in what came back (see echoed_frames)
    lost: int = 0  # SIP: sequence gaps at the phone's RtpSession
    late: int = 0  # SIP: arrivals over LATE_GAP_S after the previous one; Twilio: 20 ms ticks without audio
    max_gap_ms: float = 0.0  # SIP only: longest silence between two echoed packets
    correlation: float = 0.0  # whole-call round trip; 0 when no audio came back
    lag_ms: float = float("nan")
    stalls: int = 0  # this generator fell over a frame behind real time and re-anchored its clock


@dataclass
class Captured:
    """A call's result with the audio to analyse once every call of the level is over."""

    result: CallResult
    sent: bytes  # s16le caller audio at `rate`, without the tail
    returned: list[bytes]  # what came back, in order: RTP payloads, or one s16le chunk (Twilio, played)
    codec: str  # how to decode `returned`: "PCMU" | "G722" | "pcm"


@dataclass
class Level:
    """One run: what to place and where."""

    transport: str  # "sip" | "twilio"
    codec: str  # "PCMU" | "G722"; Twilio is always μ-law
    calls: int
    seconds: float
    base_url: str
    sip_port: int
    agent_id: str


# --- the load generator (its own process) ------------------------------------------------------------


def caller_frames(codec: SipCodec, pcm: bytes) -> list[bytes]:
    """The caller's RTP payloads: `pcm` (s16le at codec.rate) then TAIL_S of silence, 20 ms each."""
    samples = round(codec.rate * FRAME_S)
    pcm += bytes(2 * round(codec.rate * TAIL_S))
    pcm += bytes(-len(pcm) % (2 * samples))
    chunks = [pcm[i : i + 2 * samples] for i in range(0, len(pcm), 2 * samples)]
    if codec.name == "G722":
        encoder = G722Encoder()
        return [encoder.encode(chunk) for chunk in chunks]
    return [encode_from_pcm16(chunk, PCMU_8K) for chunk in chunks]


def decode(codec: str, payloads: list[bytes]) -> bytes:
    if codec == "pcm":
        return b"".join(payloads)
    if codec == "G722":
        decoder = G722Decoder()
        return b"".join(decoder.decode(p) for p in payloads)
    return decode_to_pcm16(b"".join(payloads), PCMU_8K)


async def send_paced(rtp: RtpSession, frames: list[bytes], result: CallResult) -> None:
    """One packet per 20 ms of wall-clock time; after a stall of this process, pause the clock (no burst)."""
    start = time.monotonic()
    result.media_start = start
    for index, frame in enumerate(frames):
        due = start + index * FRAME_S
        late = time.monotonic() - due
        if late > FRAME_S:
            start += late
            result.stalls += 1
        await asyncio.sleep(max(0.0, start + index * FRAME_S - time.monotonic()))
        rtp.send_audio(frame)
    result.media_end = time.monotonic()


async def collect(rtp: RtpSession, payloads: list[bytes], arrivals: list[float]) -> None:
    while True:
        try:
            item = await rtp.receive()
        except RtpClosed:
            return
        if isinstance(item, RtpAudio):
            arrivals.append(time.monotonic())
            payloads.append(item.payload)


async def sip_call(level: Level, codec: SipCodec, index: int, pcm: bytes, frames: list[bytes]) -> Captured:
    """INVITE, ACK, D s of paced RTP (echo collected), BYE; from a phone with its own SIP socket."""
    await asyncio.sleep(STAGGER_S * index / level.calls)
    result = CallResult(ok=False, started=time.monotonic())
    phone = await SipPhone(HOST, (HOST, level.sip_port)).open()
    rtp = await RtpSession.open(HOST, PHONE_RTP)
    payloads: list[bytes] = []
    arrivals: list[float] = []
    try:
        offer = sdp_offer(HOST, rtp.local_port, f"{codec.payload_type} {DTMF_PT}", codec.rtpmap)
        dialed = phone.invite(f"agent_{level.agent_id}", offer)
        answer = await phone.response()
        if answer.status != 200:
            return Captured(
                dataclasses.replace(result, error=f"INVITE answered {answer.status}"), pcm, b"", 1
            )
        phone.ack(dialed, answer.to.tag or "")
        sdp = parse_sdp(answer.body)
        media = sdp.media[0]
        rtp.configure(sdp.connection_of(media) or HOST, media.port, codec.payload_type, 8000, DTMF_PT, 160)
        receiver = asyncio.create_task(collect(rtp, payloads, arrivals))
        await send_paced(rtp, frames, result)
        await asyncio.sleep(0.1)  # the last echoes are in flight
        receiver.cancel()
        phone.bye(dialed)
        bye = await phone.response("BYE")
        result.ended = time.monotonic()
        result.ok = bye.status == 200
        result.error = "" if result.ok else f"BYE answered {bye.status}"
    except Exception as exc:  # a failed call is a row entry, not a crash of the whole level
        error = "no answer from callbridge" if isinstance(exc, TimeoutError) else repr(exc)
        return Captured(dataclasses.replace(result, error=error), pcm, [], "pcm")
    finally:
        stats = rtp.stats.sequence
        rtp.close()
        phone.close()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    result = dataclasses.replace(
        result,
        packets_sent=len(frames),
        packets_back=len(payloads),
        lost=stats.lost,
        late=sum(1 for gap in gaps if gap > LATE_GAP_S),
        max_gap_ms=1000 * max(gaps, default=0.0),
    )
    return Captured(result, pcm, payloads, codec.name)


async def twilio_call(level: Level, fake: FakeTwilio, index: int, pcm: bytes) -> Captured:
    """One simulated Twilio call (webhook, media stream) with the same audio and tail as a SIP call."""
    await asyncio.sleep(STAGGER_S * index / level.calls)
    result = CallResult(ok=False, started=time.monotonic())

    def on_progress(progress: Progress) -> None:
        if not result.media_start:
            result.media_start = time.monotonic()

    try:
        report = await fake.call(level.agent_id, CallScript(audio=pcm, tail_seconds=TAIL_S), on_progress)
    except Exception as exc:  # a failed call is a row entry, not a crash of the whole level
        return Captured(dataclasses.replace(result, error=repr(exc)), pcm, [], "pcm")
    result.ended = result.media_end = time.monotonic()
    result = dataclasses.replace(
        result,
        ok=True,
        packets_sent=report.frames_sent,
        packets_back=report.received_bytes // 160,  # μ-law 8 kHz: 160 bytes per 20 ms
        late=report.underrun_ticks,
        stalls=report.carrier_stalls,
    )
    return Captured(result, pcm, [report.played], "pcm")  # played: with silence for each underrun tick


def echoed_frames(sent: bytes, returned: bytes, rate: int, lag_ms: float) -> tuple[int, int]:
    """(frames checked, frames found): each 20 ms frame of `sent` is looked for in `returned` at the call's
    lag, give or take SEARCH_FRAMES whole frames (a lost packet or an underrun shifts what follows by
    frames), and counts as found at a correlation over MATCH."""
    x = np.frombuffer(sent, dtype="<i2").astype(np.float64)
    y = np.frombuffer(returned, dtype="<i2").astype(np.float64)
    size, lag = round(rate * FRAME_S), round(lag_ms * rate / 1000)
    frames = len(x) // size
    found = 0
    for i in range(frames):
        a = x[i * size : (i + 1) * size]
        for shift in range(-SEARCH_FRAMES, SEARCH_FRAMES + 1):
            start = lag + (i + shift) * size
            if start < 0 or start + size > len(y):
                continue
            b = y[start : start + size]
            denominator = np.linalg.norm(a) * np.linalg.norm(b)
            if denominator and a @ b / denominator > MATCH:
                found += 1
                break
    return frames, found


def analysed(captured: Captured) -> CallResult:
    """The call's result with its round trip and echoed frames filled in."""
    result = captured.result
    if not result.ok or not captured.returned:
        return result
    rate = CODECS["G722"].rate if captured.codec == "G722" else 8000
    returned = decode(captured.codec, captured.returned)
    trip = measure_round_trip(captured.sent, returned, rate)
    if trip is None:
        return result
    checked, found = echoed_frames(captured.sent, returned, rate, trip.lag_ms)
    return dataclasses.replace(
        result, correlation=trip.correlation, lag_ms=trip.lag_ms, frames_checked=checked, frames_echoed=found
    )


async def generate(level: Level) -> dict[str, Any]:
    """Place the level's calls at once; the calls' results and this process's own load."""
    codec = CODECS[level.codec if level.transport == "sip" else "PCMU"]
    # The audio is made (and encoded) before the clock starts, so the calls' start is not held up by it.
    audios = [speech_like(level.seconds, codec.rate, seed=1000 * level.calls + i) for i in range(level.calls)]
    if level.transport == "sip":
        calls = [sip_call(level, codec, i, pcm, caller_frames(codec, pcm)) for i, pcm in enumerate(audios)]
    else:
        fake = FakeTwilio(level.base_url, ACCOUNT_SID, AUTH_TOKEN)
        calls = [twilio_call(level, fake, i, pcm) for i, pcm in enumerate(audios)]
    lateness = Lateness()
    watcher = asyncio.create_task(lateness.watch())
    cpu0, wall0 = time.process_time(), time.monotonic()
    captured = await asyncio.gather(*calls)
    watcher.cancel()
    load = {
        "cpu_percent": 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0),
        "stall_ms": lateness.worst_ms,
    }
    return {"calls": [dataclasses.asdict(analysed(c)) for c in captured], **load}


# --- the orchestrator -----------------------------------------------------------------------------


def run_generator(level: Level) -> dict[str, Any]:
    spec = json.dumps(dataclasses.asdict(level))
    done = subprocess.run(
        [sys.executable, __file__, "--generate", spec], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


ROW = "{:<6} {:<5} {:>3} | {:>6} {:>6} {:>5} {:>9} {:>6} | "
ROW += "{:>5} {:>6} {:>6} {:>4} {:>4} {:>4} {:>6} {:>4} | {:>4} {:>5}"
HEADER = ["call", "codec", "N", "window", "CPU s", "%core", "ms/call-s", "all-in"]
HEADER += ["ok", "rx/tx", "echoed", "lost", "late", "gap", "corr", "lag", "%cpu", "stall"]


def report(level: Level, sampler: ServerSampler, out: dict[str, Any]) -> str:
    calls = [CallResult(**c) for c in out["calls"]]
    good = [c for c in calls if c.ok]
    if not good:
        return f"{level.transport} {level.codec} {level.calls}: every call failed: {calls[0].error}"
    window0 = max(c.media_start for c in good)
    window1 = min(c.media_end for c in good)
    window = window1 - window0
    cpu = sampler.at(window1) - sampler.at(window0)
    all_cpu = sampler.at(max(c.ended for c in good)) - sampler.at(min(c.started for c in good))
    call_seconds = sum(c.ended - c.started for c in good)
    back = sum(c.packets_back for c in good) / sum(c.packets_sent for c in good)
    echoed = sum(c.frames_echoed for c in good) / max(1, sum(c.frames_checked for c in good))
    sip = level.transport == "sip"
    row = [level.transport, level.codec, level.calls, f"{window:.1f}", f"{cpu:.2f}"]
    row += [f"{100 * cpu / window:.0f}%", f"{1000 * cpu / (len(good) * window):.2f}"]
    row += [
        f"{1000 * all_cpu / call_seconds:.2f}",
        f"{len(good)}/{len(calls)}",
        f"{back:.3f}",
        f"{echoed:.4f}",
    ]
    row += [sum(c.lost for c in good) if sip else "-", sum(c.late for c in good)]
    row += [f"{max(c.max_gap_ms for c in good):.0f}" if sip else "-"]
    row += [
        f"{min(c.correlation for c in good):.3f}",
        "-" if sip else f"{statistics.median(c.lag_ms for c in good):.0f}",
    ]
    row += [f"{out['cpu_percent']:.0f}%", f"{out['stall_ms']:.0f}"]
    line = ROW.format(*row)
    failures = sorted({c.error for c in calls if not c.ok})
    return line + (f"\n        failed calls: {'; '.join(failures)}" if failures else "")


def allow_sip(base_url: str) -> None:
    body = {"allowedCidrRanges": [f"{HOST}/32"], "allowAllAgents": True}
    httpx.patch(f"{base_url}/api/sip", json=body, headers={"X-API-Key": API_KEY}).raise_for_status()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


LEGEND = """
window = last call's first packet sent to first call's last packet sent (every call up); CPU s = the
  server's user+sys in it; ms/call-s = CPU s / (N x window). all-in = server CPU from the first INVITE or
  webhook to the last BYE answer or hang-up / sum of each call's own duration (setup and teardown in).
rx/tx = 20 ms of audio that came back / packets sent. echoed = caller frames found in what came back
  (20 ms frame correlation > {match} at the call's lag +- {search} frames). lost = RTP sequence gaps at the
  phone. late: SIP, echoed packets arriving over {late_ms:.0f} ms after the previous one; Twilio, 20 ms
  playback ticks without agent audio. gap = longest SIP inter-arrival, ms. corr = lowest whole-call
  round-trip correlation; lag = Twilio's median echo lag, ms (the SIP phone keeps no playout clock).
  gen = the load generator (all N phones or fake carriers): its CPU, its event loop's worst lateness (ms)."""


def main(levels: list[int], seconds: float, kinds: list[tuple[str, str]]) -> None:
    bf.print_machine("SIP calls vs Twilio media streams: server CPU per call-second, echo agent")
    print(f"each call: {seconds:g} s speech_like audio + {TAIL_S:g} s silence, real time, 20 ms packets")
    print(f"N calls start over {STAGGER_S:g} s, placed by a separate load-generator process\n")
    sip_port = free_udp_port()
    os.environ["CALLBRIDGE_SIP_LISTEN"] = f"udp:{HOST}:{sip_port}"
    os.environ["CALLBRIDGE_RTP_PORTS"] = SERVER_RTP_PORTS
    # Every phone calls from one address: the per-source INVITE limit (10/s, a burst of 20) would refuse
    # most of a level's set-up burst with 503.
    os.environ.setdefault("CALLBRIDGE_SIP_INVITE_RATE", "1000")
    os.environ.setdefault("CALLBRIDGE_SIP_INVITE_BURST", "1000")
    with run_server() as (base_url, pid):
        agent_id = asyncio.run(setup(base_url))
        allow_sip(base_url)
        for transport, codec in kinds:  # warm-up: imports, codecs, first connections
            run_generator(Level(transport, codec, 1, 1.0, base_url, sip_port, agent_id))
        idle0 = cpu_seconds(pid)
        time.sleep(SETTLE_S)
        print(f"server idle CPU: {100 * (cpu_seconds(pid) - idle0) / SETTLE_S:.1f}% of one core\n")
        print(f"{'':16}{' server ':-^43}   {' at the phone ':-^54}   {' gen ':-^10}")
        print(ROW.format(*HEADER))
        for n in levels:
            for transport, codec in kinds:
                level = Level(transport, codec, n, seconds, base_url, sip_port, agent_id)
                with ServerSampler(pid) as sampler:
                    out = run_generator(level)
                print(report(level, sampler, out), flush=True)
                time.sleep(SETTLE_S)  # transactions linger, RTP ports close: let the server go quiet
    print(LEGEND.format(late_ms=1000 * LATE_GAP_S, search=SEARCH_FRAMES, match=MATCH))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="20,50", help="comma-separated numbers of concurrent calls")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of caller audio per call")
    parser.add_argument("--kinds", default="sip:PCMU,sip:G722,twilio:PCMU", help="which calls to place")
    parser.add_argument("--generate", help=argparse.SUPPRESS)  # a Level as JSON: be the load generator
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(asyncio.run(generate(Level(**json.loads(args.generate))))))
    else:
        kinds = [(k.split(":")[0], k.split(":")[1]) for k in args.kinds.split(",")]
        main([int(n) for n in args.calls.split(",")], args.seconds, kinds)
