"""The direct WebSocket path as `callbridge serve` runs it: uvicorn with DirectMessagesProtocol on a loopback
port, a route reading and writing through WebSocketMessages, and websockets' own client (or raw bytes, for
what no client library will send) on the other side."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from app.api.websocket_protocol import DIRECT_MESSAGES, DirectMessagesProtocol
from app.api.websocket_transport import WebSocketMessages
from app.calls.transport import MessageTooLarge, TransportClosed
from tests.conftest import wait_for

ROUTE_LIMIT = 1000


@dataclass
class EchoRoute:
    """Echoes each message; "close" makes it close with 4000. Records how each connection ended."""

    endings: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    direct: list[bool] = field(default_factory=list)

    async def serve(self, websocket: WebSocket) -> None:
        self.direct.append(DIRECT_MESSAGES in websocket.scope["extensions"])
        messages = WebSocketMessages(websocket, ROUTE_LIMIT)
        await websocket.accept()
        try:
            while True:
                message = await messages.receive()
                if message == "close":
                    await messages.close(4000, "asked to")
                    await messages.receive()
                await messages.send(message)
        except MessageTooLarge:
            await self.endings.put("too large")
        except TransportClosed as closed:
            await self.endings.put(str(closed))


@dataclass
class EchoServer:
    url: str
    port: int
    route: EchoRoute


@contextlib.asynccontextmanager
async def serving(route: Callable[[WebSocket], Awaitable[None]]) -> AsyncIterator[tuple[str, int]]:
    """uvicorn as `serve` runs it, with `route` at /echo; yields the route's URL and the port."""
    app = Starlette(routes=[WebSocketRoute("/echo", route)])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=DirectMessagesProtocol,
        ws_per_message_deflate=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    running = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started)
    yield f"ws://127.0.0.1:{port}/echo", port
    server.should_exit = True
    await running


@pytest.fixture
async def echo_server() -> AsyncIterator[EchoServer]:
    route = EchoRoute()
    async with serving(route.serve) as (url, port):
        yield EchoServer(url, port, route)


async def next_ending(server: EchoServer) -> str:
    return await asyncio.wait_for(server.route.endings.get(), 5)


async def test_the_route_is_served_on_the_direct_path(echo_server: EchoServer) -> None:
    async with websockets.connect(echo_server.url, compression=None) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    assert echo_server.route.direct[-1] is True


async def test_text_and_binary_messages_come_back_as_sent(echo_server: EchoServer) -> None:
    async with websockets.connect(echo_server.url, compression=None) as ws:
        await ws.send('{"event": "media", "payload": "é"}')
        await ws.send(b"\x00\x01" * 200)
        assert await ws.recv() == '{"event": "media", "payload": "é"}'
        assert await ws.recv() == b"\x00\x01" * 200


async def test_a_fragmented_message_is_received_whole(echo_server: EchoServer) -> None:
    async with websockets.connect(echo_server.url, compression=None) as ws:
        await ws.send(["frag", "ments"])
        assert await ws.recv() == "fragments"


async def test_a_ping_is_answered(echo_server: EchoServer) -> None:
    async with websockets.connect(echo_server.url, compression=None, ping_interval=None) as ws:
        latency = await asyncio.wait_for(await ws.ping(b"are you there"), 5)
        assert latency >= 0


async def test_a_client_close_ends_the_routes_receive_with_its_code(echo_server: EchoServer) -> None:
    async with websockets.connect(echo_server.url, compression=None) as ws:
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.close(4321, "done")
        assert ws.close_code == 4321
    assert await next_ending(echo_server) == "closed with code 4321"


async def test_the_routes_close_reaches_the_client_with_its_code(echo_server: EchoServer) -> None:
    async with websockets.connect(echo_server.url, compression=None) as ws:
        await ws.send("close")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4000
    assert await next_ending(echo_server) == "closed with code 4000"


async def test_a_message_over_the_routes_limit_closes_with_1009(echo_server: EchoServer) -> None:
    async with websockets.connect(echo_server.url, compression=None) as ws:
        await ws.send("x" * (ROUTE_LIMIT + 1))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1009
    assert await next_ending(echo_server) == "too large"


async def raw_connection(server: EchoServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand, to send what client libraries refuse to."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_an_unmasked_frame_closes_the_connection_with_1002(echo_server: EchoServer) -> None:
    reader, writer = await raw_connection(echo_server)
    writer.write(bytes((0x81, 2)) + b"hi")  # FIN + text, not masked
    close = await asyncio.wait_for(reader.readexactly(4), 5)
    assert close[0] == 0x88 and struct.unpack("!H", close[2:4])[0] == 1002
    writer.close()
    assert await next_ending(echo_server) == "closed with code 1002"


async def test_a_dropped_connection_ends_the_routes_receive(echo_server: EchoServer) -> None:
    _, writer = await raw_connection(echo_server)
    writer.transport.abort()
    assert await next_ending(echo_server) == "closed with code 1006"


async def test_messages_pipelined_in_one_write_all_come_back_in_order(echo_server: EchoServer) -> None:
    reader, writer = await raw_connection(echo_server)
    mask = b"\x01\x02\x03\x04"
    frames = b""
    for i in range(100):
        data = f"m{i:03d}".encode()
        frames += bytes((0x81, 0x80 | len(data))) + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(data))
    writer.write(frames)
    echoed = [await asyncio.wait_for(reader.readexactly(6), 5) for _ in range(100)]
    assert [frame[2:].decode() for frame in echoed] == [f"m{i:03d}" for i in range(100)]
    with contextlib.suppress(OSError):
        writer.close()
    await next_ending(echo_server)


@dataclass
class HandlingRoute:
    """Answers "ping" from the socket's callback (never through `receive`); anything else is queued for
    `receive`, which records it; "fail" makes the handler raise."""

    received: asyncio.Queue[object] = field(default_factory=asyncio.Queue)

    async def serve(self, websocket: WebSocket) -> None:
        messages = WebSocketMessages(websocket, ROUTE_LIMIT)
        await websocket.accept()
        assert messages.handle_messages_now is not None and messages.send_now is not None
        send_now = messages.send_now

        def handle(message: object) -> object | None:
            if message == "fail":
                raise ValueError("the handler failed")
            if message == "ping":
                send_now("pong")
                return None
            return message

        messages.handle_messages_now(handle)
        try:
            while True:
                await self.received.put(await messages.receive())
        except ValueError as exc:
            await self.received.put(f"raised: {exc}")
        except TransportClosed:
            pass


async def test_a_message_handled_now_is_answered_without_the_routes_receive() -> None:
    route = HandlingRoute()
    async with serving(route.serve) as (url, _), websockets.connect(url, compression=None) as ws:
        for _ in range(3):
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"
        await ws.send("other")
        assert await asyncio.wait_for(route.received.get(), 5) == "other"
    assert route.received.empty()


async def test_a_handler_failure_is_raised_by_the_routes_next_receive() -> None:
    route = HandlingRoute()
    async with serving(route.serve) as (url, _), websockets.connect(url, compression=None) as ws:
        await ws.send("fail")
        assert await asyncio.wait_for(route.received.get(), 5) == "raised: the handler failed"


async def test_a_closed_connection_is_freed_by_reference_counting_alone(no_cycle_collector: None) -> None:
    protocols: list[weakref.ref[object]] = []

    async def route(websocket: WebSocket) -> None:
        protocols.append(weakref.ref(websocket.scope["extensions"][DIRECT_MESSAGES]))
        messages = WebSocketMessages(websocket, ROUTE_LIMIT)
        await websocket.accept()
        with contextlib.suppress(TransportClosed):
            while True:
                await messages.send(await messages.receive())

    async with serving(route) as (url, _):
        async with websockets.connect(url, compression=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"

        async def freed() -> bool:
            return protocols[0]() is None

        await wait_for(freed)
