"""Cost per SIP request: `parse_message`, and server transactions through `TransactionLayer` on asyncio.

(a) `parse_message` of a carrier-style INVITE with an SDP offer, and of an in-dialog BYE. The parse only:
From, To, Via, CSeq are parsed again on each access later (the transaction layer reads them), so they are
not in this figure.
(b) OPTIONS: `TransactionLayer.receive(request)` → the request handler gets the new server transaction →
`await transaction.respond(response_to(request, 200))`, the send a no-op coroutine. The transaction then
lingers in Completed with its Timer J, as on a real UDP server.
(c) INVITE: `receive(INVITE)` (Timer 100 armed) → `respond(200 with a To tag)` (Accepted: Timers L and G)
→ `receive(ACK)` (matched by Call-ID + CSeq, timers stopped, handler called for the ACK).
(b) and (c) each print three rows: the transaction alone on pre-parsed requests, then parse included,
then parse plus `serialize` of every response in the send (what the UDP transport adds before `sendto`).
Every round uses its own branch and Call-ID (a reused one would be a retransmission); a fresh
`TransactionLayer` per timed run is closed afterwards, untimed. `perf_counter`, GC off; µs per request
(per INVITE + ACK round for (c)) as min / median of `--repeats` runs of `--requests` rounds.

    .venv/bin/python bench/sip_requests.py [--requests N] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import bench_frames as bf

from app.sip.message import SipMessage, SipRequest, parse_message, response_to, serialize
from app.sip.transaction import LoopClock, ServerTransaction, TransactionLayer
from app.sip.transport import Peer

PEER = Peer("udp", "192.0.2.10", 5060)
HERE = "203.0.113.5:5060"
OFFER = (
    "v=0\r\n"
    "o=- 4858375867 4858375867 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 16384 RTP/AVP 9 0 8 101\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)
DIALOG = (
    "Max-Forwards: 70\r\n"
    'From: "+1 555 000 1111" <sip:+15550001111@192.0.2.10>;tag=as5f2a{i}\r\n'
    "To: <sip:agent_0123456789abcdef@203.0.113.5>{to_tag}\r\n"
    "Call-ID: {i}-7d3c9a1e@192.0.2.10\r\n"
)
INVITE = (
    "INVITE sip:agent_0123456789abcdef@203.0.113.5:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-inv-{i};rport\r\n" + DIALOG + "CSeq: 102 INVITE\r\n"
    "Contact: <sip:+15550001111@192.0.2.10:5060>\r\n"
    "User-Agent: Carrier-SBC 4.2\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO\r\n"
    "Supported: replaces, timer\r\n"
    "X-Customer-Id: 88120\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(OFFER)}\r\n\r\n" + OFFER.replace("{", "{{").replace("}", "}}")
)
ACK = (
    "ACK sip:callbridge@{here} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ack-{i};rport\r\n"
    + DIALOG
    + "CSeq: 102 ACK\r\nContent-Length: 0\r\n\r\n"
)
BYE = (
    "BYE sip:callbridge@{here} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-bye-{i};rport\r\n"
    + DIALOG
    + "CSeq: 103 BYE\r\nContent-Length: 0\r\n\r\n"
)
OPTIONS = (
    "OPTIONS sip:203.0.113.5:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-opt-{i};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:ping@192.0.2.10>;tag=pp{i}\r\n"
    "To: <sip:203.0.113.5>\r\n"
    "Call-ID: opt-{i}@192.0.2.10\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Accept: application/sdp\r\n"
    "Content-Length: 0\r\n\r\n"
)
TO_TAG = ";tag=cb77e1"


def datagram(template: str, i: int, *, dialog: bool = False) -> bytes:
    return template.format(i=i, here=HERE, to_tag=TO_TAG if dialog else "").encode()


@dataclass
class Variant:
    """One row of (b)/(c): whether the round parses the datagrams and serializes the responses."""

    name: str
    parse: bool
    serialize: bool


VARIANTS = [
    Variant("transaction only (pre-parsed)", parse=False, serialize=False),
    Variant("+ parse_message", parse=True, serialize=False),
    Variant("+ parse + serialize responses", parse=True, serialize=True),
]

Round = Callable[[int], Awaitable[None]]


async def time_rounds(
    run: Round, rounds: int, repeats: int, cleanup: Callable[[], None]
) -> tuple[float, float]:
    """µs per round (min, median over `repeats` runs of `rounds`); `cleanup` runs untimed after each."""
    await run(200)  # warm-up
    cleanup()
    results: list[float] = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            await run(rounds)
            results.append((time.perf_counter() - start) / rounds * 1e6)
        finally:
            gc.enable()
        cleanup()
        await asyncio.sleep(0)  # let the loop drop the cancelled timers
    return min(results), statistics.median(results)


def time_parse(data: bytes, rounds: int, repeats: int) -> tuple[float, float]:
    parse_message(data)  # warm-up, and a check that it parses
    results = []
    for _ in range(repeats):
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(rounds):
                parse_message(data)
            results.append((time.perf_counter() - start) / rounds * 1e6)
        finally:
            gc.enable()
    return min(results), statistics.median(results)


class Harness:
    """A fresh TransactionLayer per run, with a no-op (or serializing) send and a handler that keeps the
    last server transaction it was given."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.transaction: ServerTransaction | None = None
        self.acks = 0
        self.layer = self._new_layer()

    def _new_layer(self) -> TransactionLayer:
        async def send(message: SipMessage, peer: Peer) -> None:
            if self.variant.serialize:
                serialize(message)

        def on_request(request: SipRequest, peer: Peer, transaction: ServerTransaction | None) -> None:
            if transaction is None:
                self.acks += 1
            else:
                self.transaction = transaction

        return TransactionLayer(send, LoopClock(), on_request, lambda response, peer: None)

    def reset(self) -> None:
        self.layer.close()
        self.layer = self._new_layer()

    def take(self) -> ServerTransaction:
        transaction, self.transaction = self.transaction, None
        assert transaction is not None, "the handler was not given a transaction"
        return transaction


def inputs(variant: Variant, datagrams: list[bytes]) -> list[bytes] | list[SipMessage]:
    return datagrams if variant.parse else [parse_message(d) for d in datagrams]


def as_message(item: bytes | SipMessage) -> SipMessage:
    return parse_message(item) if isinstance(item, bytes) else item


async def bench_options(variant: Variant, rounds: int, repeats: int) -> tuple[float, float]:
    harness = Harness(variant)
    requests = inputs(variant, [datagram(OPTIONS, i) for i in range(rounds)])

    async def run(n: int) -> None:
        layer = harness.layer
        for i in range(n):
            request = as_message(requests[i])
            layer.receive(request, PEER)
            transaction = harness.take()
            await transaction.respond(response_to(transaction.request, 200))

    return await time_rounds(run, rounds, repeats, harness.reset)


async def bench_invite(variant: Variant, rounds: int, repeats: int) -> tuple[float, float]:
    harness = Harness(variant)
    invites = inputs(variant, [datagram(INVITE, i) for i in range(rounds)])
    acks = inputs(variant, [datagram(ACK, i, dialog=True) for i in range(rounds)])

    async def run(n: int) -> None:
        layer = harness.layer
        for i in range(n):
            layer.receive(as_message(invites[i]), PEER)
            transaction = harness.take()
            await transaction.respond(response_to(transaction.request, 200, to_tag="cb77e1"))
            layer.receive(as_message(acks[i]), PEER)
        assert transaction.acked.done() and transaction.acked.result(), "the ACK did not reach the INVITE"

    return await time_rounds(run, rounds, repeats, harness.reset)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000, help="rounds per timed run (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per number (default 5)")
    return parser.parse_args()


def row(name: str, result: tuple[float, float]) -> str:
    low, median = result
    return f"{name:<40} {f'{low:.1f} / {median:.1f}':>18}"


async def main() -> None:
    args = parse_args()
    bf.print_machine("SIP requests: parse_message and server transactions (asyncio loop, no-op send)")
    invite, bye = datagram(INVITE, 0), datagram(BYE, 0, dialog=True)
    bf.note("", f"{args.requests} rounds x {args.repeats} runs; µs per request, min / median")
    bf.note("", f"{'(a) parse_message':<40} {'µs min / median':>18}")
    bf.note(row(f"INVITE with SDP ({len(invite)} B)", time_parse(invite, args.requests, args.repeats)))
    bf.note(row(f"BYE ({len(bye)} B)", time_parse(bye, args.requests, args.repeats)))
    bf.note("", f"{'(b) OPTIONS → 200':<40} {'µs min / median':>18}")
    for variant in VARIANTS:
        bf.note(row(variant.name, await bench_options(variant, args.requests, args.repeats)))
    bf.note("", f"{'(c) INVITE → 200 → ACK (per call)':<40} {'µs min / median':>18}")
    for variant in VARIANTS:
        bf.note(row(variant.name, await bench_invite(variant, args.requests, args.repeats)))


if __name__ == "__main__":
    asyncio.run(main())
