"""WebSocket framing per media message: callbridge's direct path against what uvicorn's sans-I/O protocol
runs (websockets' ServerProtocol), for one 20 ms Twilio media message each way.

Run: `.venv/bin/python bench/websocket_frames.py [--messages N] [--repeats R]`. Prints µs per message;
asserts nothing. Parsing is a client's masked frame in, a whole str out; sending is a str in, the bytes to
write out (the write itself is the same syscall on both paths, so it is left out).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections.abc import Callable

from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from app.api.websocket_frames import FrameParser, encode_frame
from app.api.websocket_frames import Opcode as DirectOpcode

STREAM_SID = "MZ" + "0" * 32


def media_message() -> str:
    """What Twilio sends every 20 ms (and, with `streamSid`, what callbridge sends back)."""
    payload = base64.b64encode(bytes(160)).decode()
    return json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}})


def open_protocol() -> ServerProtocol:
    """websockets' server protocol past the handshake, as uvicorn's sans-I/O implementation holds it."""
    protocol = ServerProtocol(max_size=1 << 20)
    protocol.receive_data(
        b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    (request,) = protocol.events_received()
    protocol.send_response(protocol.accept(request))
    protocol.data_to_send()
    return protocol


def per_message(work: Callable[[], object], messages: int, repeats: int) -> float:
    """Median over `repeats` of µs per call of `work`, `messages` calls each."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(messages):
            work()
        runs.append((time.perf_counter() - start) / messages * 1e6)
    return statistics.median(runs)


def main(messages: int, repeats: int) -> None:
    text = media_message()
    frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=True)
    protocol = open_protocol()
    parser = FrameParser(1 << 20)

    def websockets_parse() -> object:
        protocol.receive_data(frame)
        return protocol.events_received()[0].data.decode()

    def direct_parse() -> object:
        return parser.feed(frame)[0][1]

    def websockets_send() -> object:
        protocol.send_text(text.encode())
        return b"".join(protocol.data_to_send())

    def direct_send() -> object:
        return encode_frame(DirectOpcode.TEXT, text.encode())

    assert direct_parse() == websockets_parse() == text
    assert direct_send() == websockets_send()
    print(f"one Twilio media message ({len(text)} characters), median of {repeats} runs of {messages:,}")
    print(f"{'':28}{'websockets (uvicorn)':>22}{'direct':>10}")
    for name, theirs, ours in (
        ("parse (masked frame → str)", websockets_parse, direct_parse),
        ("send (str → frame bytes)", websockets_send, direct_send),
    ):
        theirs_us, ours_us = per_message(theirs, messages, repeats), per_message(ours, messages, repeats)
        print(f"{name:28}{theirs_us:>19.2f} µs{ours_us:>7.2f} µs")


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--messages", type=int, default=50_000)
    cli.add_argument("--repeats", type=int, default=5)
    args = cli.parse_args()
    main(args.messages, args.repeats)
