"""RFC 6455 frames on the server side of a connection without extensions: client frames parsed into whole
messages, server frames built.

This is the media streams' hot path (two messages per call every 20 ms), so the common case, one whole
masked frame per read, is parsed straight from the bytes read, without copying them into a buffer first.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import TypeAlias

from websockets.speedups import apply_mask


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


#: Close codes (RFC 6455 §7.4.1).
PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009
NO_STATUS = 1005

#: Opcode by its 4 bits (an enum call per frame costs more than the rest of the header).
_OPCODES = {opcode.value: opcode for opcode in Opcode}
_CONTROL_OPCODES = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))
_MAX_CONTROL_PAYLOAD = 125


class FrameViolation(Exception):
    """The client broke the protocol: the connection is closed with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


#: (opcode, payload): a whole message (TEXT: `str`, BINARY: `bytes`) or a control frame (its payload as
#: bytes). A plain tuple: a named one cost more to build than the rest of a frame's parsing.
Received: TypeAlias = tuple[Opcode, str | bytes]

_TEXT, _CONTINUATION = Opcode.TEXT, Opcode.CONTINUATION


class FrameParser:
    """Client-to-server frames from a byte stream. `feed` returns what became whole, in order, and raises
    FrameViolation for anything RFC 6455 forbids (unmasked frames, reserved bits or opcodes, bad control
    frames, interleaved fragments, invalid UTF-8) or for a message over `max_message_bytes`."""

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._fragmented: Opcode | None = None

    def feed(self, data: bytes) -> list[Received]:
        received: list[Received] = []
        if self._buffer:
            self._buffer += data
            view = bytes(self._buffer)
            self._buffer.clear()
        else:
            view = data
        offset, end = 0, len(view)
        while offset < end:
            frame_end = self._frame(view, offset, received)
            if frame_end < 0:  # incomplete: keep the rest for the next read
                self._buffer += view[offset:]
                break
            offset = frame_end
        return received

    def _frame(self, data: bytes, offset: int, received: list[Received]) -> int:
        """Parse the frame at `offset`; returns where it ends, or -1 when it is not all here yet."""
        available = len(data) - offset
        if available < 2:
            return -1
        first, second = data[offset], data[offset + 1]
        if first & 0x70:
            raise FrameViolation(PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            raise FrameViolation(PROTOCOL_ERROR, "client frames must be masked")
        opcode = _OPCODES.get(first & 0x0F)
        if opcode is None:
            raise FrameViolation(PROTOCOL_ERROR, f"reserved opcode {first & 0x0F:#x}")
        length = second & 0x7F
        header = 6
        if length == 126:
            header = 8
            if available < header:
                return -1
            (length,) = struct.unpack_from("!H", data, offset + 2)
        elif length == 127:
            header = 14
            if available < header:
                return -1
            (length,) = struct.unpack_from("!Q", data, offset + 2)
        if length > self._max:
            raise FrameViolation(
                MESSAGE_TOO_BIG, f"a frame of {length} bytes is over the {self._max}-byte limit"
            )
        if available < header + length:
            return -1
        start = offset + header
        mask = data[start - 4 : start]
        payload = apply_mask(data[start : start + length], mask)
        if opcode is _TEXT and first & 0x80 and self._fragmented is None:  # the hot path: a whole text
            received.append((opcode, _text(payload)))
        else:
            self._message(opcode, bool(first & 0x80), payload, received)
        return start + length

    def _message(self, opcode: Opcode, fin: bool, payload: bytes, received: list[Received]) -> None:
        if opcode in _CONTROL_OPCODES:
            if not fin or len(payload) > _MAX_CONTROL_PAYLOAD:
                raise FrameViolation(PROTOCOL_ERROR, "control frames must be whole and at most 125 bytes")
            received.append((opcode, payload))
            return
        if opcode is _CONTINUATION:
            if self._fragmented is None:
                raise FrameViolation(PROTOCOL_ERROR, "a continuation frame without a message to continue")
            self._fragments_size += len(payload)
            if self._fragments_size > self._max:
                raise FrameViolation(MESSAGE_TOO_BIG, f"a message over the {self._max}-byte limit")
            self._fragments.append(payload)
            if fin:
                opcode, payload = self._fragmented, b"".join(self._fragments)
                self._fragments, self._fragments_size, self._fragmented = [], 0, None
                received.append((opcode, _text(payload) if opcode is _TEXT else payload))
            return
        if self._fragmented is not None:
            raise FrameViolation(PROTOCOL_ERROR, "a new message inside a fragmented one")
        if fin:
            received.append((opcode, _text(payload) if opcode is _TEXT else payload))
            return
        self._fragmented, self._fragments, self._fragments_size = opcode, [payload], len(payload)


def _text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise FrameViolation(INVALID_PAYLOAD, "a text message that is not UTF-8") from None


def close_status(payload: bytes) -> tuple[int, str]:
    """The (code, reason) of a close frame's payload; (1005, "") when it has none."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise FrameViolation(PROTOCOL_ERROR, "a close frame with a one-byte payload")
    (code,) = struct.unpack_from("!H", payload)
    if not _sendable_close_code(code):
        raise FrameViolation(PROTOCOL_ERROR, f"close code {code} may not be sent")
    return code, _text(payload[2:])


def _sendable_close_code(code: int) -> bool:
    """RFC 6455 §7.4: 1000-1015 less the reserved ones, 3000-4999 for libraries and applications."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def encode_frame(opcode: Opcode, payload: bytes) -> bytes:
    """One whole, unmasked server frame."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame; code 1005 means none is sent."""
    if code == NO_STATUS:
        return encode_frame(Opcode.CLOSE, b"")
    return encode_frame(Opcode.CLOSE, struct.pack("!H", code) + reason.encode()[: _MAX_CONTROL_PAYLOAD - 2])
