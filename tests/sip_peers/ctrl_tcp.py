"""A client for baresip's ctrl_tcp module: netstring-framed JSON commands, their responses, and events."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import orjson

#: Events a call goes through (baresip 1.0): CALL_INCOMING / CALL_RINGING, CALL_ESTABLISHED, CALL_CLOSED.
CALL_ESTABLISHED = "CALL_ESTABLISHED"
CALL_CLOSED = "CALL_CLOSED"
CALL_INCOMING = "CALL_INCOMING"


class CtrlTcpClient:
    """Commands in, responses and events out; every wait bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._tokens = itertools.count(1)
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []  # every event so far, oldest first
        self._new_event = asyncio.Condition()
        self._pump = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, host: str, port: int, within: float = 10.0) -> CtrlTcpClient:
        """Connect, retrying while baresip starts up (bounded by `within`)."""
        async with asyncio.timeout(within):
            while True:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                    return cls(reader, writer)
                except OSError:
                    await asyncio.sleep(0.1)

    async def command(self, name: str, params: str = "", within: float = 10.0) -> dict[str, Any]:
        """Send one command and wait for its response (`{"response": true, "ok": ..., "data": ...}`)."""
        token = f"t{next(self._tokens)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        body = orjson.dumps({"command": name, "params": params, "token": token})
        self._writer.write(b"%d:%s," % (len(body), body))
        await self._writer.drain()
        async with asyncio.timeout(within):
            return await future

    async def dial(self, uri: str) -> dict[str, Any]:
        return await self.command("dial", uri)

    async def hangup(self) -> dict[str, Any]:
        return await self.command("hangup")

    async def wait_event(self, event_type: str, within: float = 10.0, after: int = 0) -> dict[str, Any]:
        """The first event of `event_type` at index >= `after` in `events`, waiting up to `within` seconds."""
        async with asyncio.timeout(within), self._new_event:
            while True:
                for event in self.events[after:]:
                    if event.get("type") == event_type:
                        return event
                await self._new_event.wait()

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = await self._reader.readuntil(b":")
                body = await self._reader.readexactly(int(length[:-1]))
                await self._reader.readexactly(1)  # the netstring's ","
                await self._dispatch(orjson.loads(body))
        for future in self._responses.values():
            if not future.done():
                future.set_exception(ConnectionError("baresip closed ctrl_tcp"))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("response"):
            future = self._responses.pop(str(message.get("token")), None)
            if future is not None and not future.done():
                future.set_result(message)
        elif message.get("event"):
            async with self._new_event:
                self.events.append(message)
                self._new_event.notify_all()
