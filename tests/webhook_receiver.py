"""A tiny HTTP server on loopback standing in for the user's own server (batch webhooks, the SIP
fallback handler): it keeps every request it is sent and answers each with `status` and `body`; with
`hold`, it answers nothing until it is closed (a handler that never decides)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time


class WebhookReceiver:
    def __init__(self, status: int = 200, body: bytes = b"", *, hold: bool = False) -> None:
        self.status = status
        self.body = body
        self.hold = hold
        self.received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()

    async def __aenter__(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/calls"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._closing.set()
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.put_nowait((headers, body))
            if self.hold:
                await self._closing.wait()
            else:
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(self.body)}\r\nconnection: close\r\n\r\n".encode()
                    + self.body
                )
                await writer.drain()
        writer.close()


def signature_verifies(secret: str, headers: dict[str, str], body: bytes, max_age_s: float = 300) -> bool:
    """A receiver's check, as the README's snippet does it: a fresh timestamp and any one signature of the
    comma-separated header matching HMAC-SHA256(secret, body + timestamp)."""
    timestamp = headers["x-callbridge-webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > max_age_s:
        return False
    expected = hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()
    signatures = headers["x-callbridge-webhook-signature"].split(",")
    return any(hmac.compare_digest(signature.strip(), expected) for signature in signatures)
