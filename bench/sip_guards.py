"""What SIP part 2's guards cost per message: the per-source rate limit and the sip_logs observer.

(a) `SourceRateLimiter.take` for one source (its bucket found, refilled and taken) and for a new source
every time (a bucket made, an idle one looked at for eviction, the 10 000-bucket bound kept).
(b) `SipMessageLog.observe` for a message whose Call-ID is no call's (what every other message pays: the
Call-ID read and a dict lookup), and for a carrier-style INVITE of a bound call (serialize, redact, a row
queued on the write-behind; the queue is emptied untimed between runs).
µs per message as min / median of `--repeats` runs of `--frames` messages (`perf_counter`, GC off).

    .venv/bin/python bench/sip_guards.py [--frames N] [--repeats R]
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import bench_frames as bf

from app.sip.message import SipRequest, parse_message
from app.sip.message_log import SipMessageLog
from app.sip.rate_limit import RateLimit, SourceRateLimiter
from app.sip.transport import Peer
from app.store.tables import CallRow, SipMessageRow

PEER = Peer("udp", "192.0.2.10", 5060)
INVITE = (
    "INVITE sip:agent_0123456789abcdef@203.0.113.5:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "+1 555 000 1111" <sip:+15550001111@192.0.2.10>;tag=as5f2a\r\n'
    "To: <sip:agent_0123456789abcdef@203.0.113.5>\r\n"
    "Call-ID: {call_id}\r\n"
    "CSeq: 102 INVITE\r\n"
    "Contact: <sip:+15550001111@192.0.2.10:5060>\r\n"
    'Proxy-Authorization: Digest username="trunk", realm="pbx", nonce="abc", response="0a1b2c"\r\n'
    "X-Customer-Id: 42\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n"
)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 16384 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(call_id: str) -> SipRequest:
    message = parse_message((INVITE.format(call_id=call_id, length=len(OFFER)) + OFFER).encode())
    assert isinstance(message, SipRequest)
    return message


class QueuedRows:
    """The write-behind's queue, without a database."""

    def __init__(self) -> None:
        self.rows: list[SipMessageRow] = []

    def store(self, row: SipMessageRow) -> None:
        self.rows.append(row)

    def clear(self) -> None:
        self.rows.clear()


def main() -> None:
    args = bf.bench_args(__doc__)
    bf.print_machine("SIP guards: µs per message (min / median)")
    limits = {"INVITE": RateLimit(rate=1e9, burst=10**9)}  # never refuses: the bookkeeping is what is timed

    one = SourceRateLimiter(limits)
    addresses = itertools.count()
    many = SourceRateLimiter(limits)

    def same_source(n: int) -> None:
        for _ in range(n):
            one.take("INVITE", "192.0.2.10")

    def new_sources(n: int) -> None:
        for _ in range(n):
            i = next(addresses)
            many.take("INVITE", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")

    queued = QueuedRows()
    log = SipMessageLog(queued, max_messages=10**12)  # type: ignore[arg-type]  # no cap: timed runs go on
    log.bind("bound-call", CallRow(id="call-1", created=datetime.now(UTC)))
    bound, stranger = invite("bound-call"), invite("nobody's")

    def unbound(n: int) -> None:
        for _ in range(n):
            log.observe("in", stranger, PEER)

    def kept(n: int) -> None:
        for _ in range(n):
            log.observe("in", bound, PEER)

    rows = [
        ("rate limit, same source", same_source, None),
        ("rate limit, a new source each time", new_sources, None),
        ("sip_logs observer, not a call's message", unbound, None),
        ("sip_logs observer, an INVITE kept", kept, queued.clear),
    ]
    for name, run, setup in rows:
        best, median = bf.time_per_frame(run, args.frames, args.repeats, setup)
        print(f"{name:<42} {best:8.2f} / {median:8.2f}")


if __name__ == "__main__":
    main()
