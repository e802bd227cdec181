"""The media streams' RFC 6455 frames: client frames as websockets' own client serializes them, parsed into
whole messages; violations refused with the close code the RFC gives."""

from __future__ import annotations

import struct

import pytest
from websockets.frames import Frame
from websockets.frames import Opcode as WsOpcode

from app.api.websocket_frames import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    PROTOCOL_ERROR,
    FrameParser,
    FrameViolation,
    Opcode,
    close_status,
    encode_close,
    encode_frame,
)


def client_frame(opcode: WsOpcode, data: bytes, fin: bool = True) -> bytes:
    """A frame as a client sends it: masked, serialized by websockets itself."""
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def forbidden_frame(first_byte: int, payload: bytes) -> bytes:
    """A masked frame websockets refuses to write (the header given whole, an all-zero mask)."""
    assert len(payload) < 126
    return bytes((first_byte, 0x80 | len(payload))) + b"\x00" * 4 + payload


def parser(limit: int = 1 << 20) -> FrameParser:
    return FrameParser(limit)


def violation_code(data: bytes, limit: int = 1 << 20) -> int:
    with pytest.raises(FrameViolation) as raised:
        parser(limit).feed(data)
    return raised.value.code


def test_a_masked_text_frame_is_one_text_message() -> None:
    frame = client_frame(WsOpcode.TEXT, b'{"event":"media"}')
    assert parser().feed(frame) == [(Opcode.TEXT, '{"event":"media"}')]


def test_a_binary_frame_is_bytes() -> None:
    assert parser().feed(client_frame(WsOpcode.BINARY, b"\x00\xff" * 80)) == [
        (Opcode.BINARY, b"\x00\xff" * 80)
    ]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 200_000])
def test_every_length_encoding_is_read(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert parser().feed(client_frame(WsOpcode.BINARY, payload)) == [(Opcode.BINARY, payload)]


def test_frames_split_across_reads_at_every_byte_are_put_back_together() -> None:
    stream = client_frame(WsOpcode.TEXT, b"x" * 300) + client_frame(WsOpcode.TEXT, b"second")
    for cut in range(1, len(stream)):
        frames = parser()
        assert frames.feed(stream[:cut]) + frames.feed(stream[cut:]) == [
            (Opcode.TEXT, "x" * 300),
            (Opcode.TEXT, "second"),
        ], cut


def test_many_frames_in_one_read_come_out_in_order() -> None:
    stream = b"".join(client_frame(WsOpcode.TEXT, str(i).encode()) for i in range(50))
    assert [payload for _, payload in parser().feed(stream)] == [str(i) for i in range(50)]


def test_a_fragmented_message_is_delivered_whole_with_a_ping_between_its_fragments() -> None:
    stream = (
        client_frame(WsOpcode.TEXT, "héllo ".encode()[:2], fin=False)
        + client_frame(WsOpcode.PING, b"p")
        + client_frame(WsOpcode.CONT, "héllo ".encode()[2:], fin=False)
        + client_frame(WsOpcode.CONT, b"world")
    )
    assert parser().feed(stream) == [(Opcode.PING, b"p"), (Opcode.TEXT, "héllo world")]


def test_control_frames_come_out_with_their_payload() -> None:
    close = struct.pack("!H", 1000) + b"bye"
    stream = client_frame(WsOpcode.PONG, b"1234") + client_frame(WsOpcode.CLOSE, close)
    assert parser().feed(stream) == [
        (Opcode.PONG, b"1234"),
        (Opcode.CLOSE, close),
    ]


def test_an_unmasked_client_frame_is_a_protocol_error() -> None:
    assert violation_code(Frame(WsOpcode.TEXT, b"hi").serialize(mask=False)) == PROTOCOL_ERROR


def test_reserved_bits_without_an_extension_are_a_protocol_error() -> None:
    assert violation_code(forbidden_frame(0x80 | 0x40 | 0x1, b"hi")) == PROTOCOL_ERROR  # FIN RSV1 TEXT


def test_a_reserved_opcode_is_a_protocol_error() -> None:
    assert violation_code(forbidden_frame(0x80 | 0x3, b"hi")) == PROTOCOL_ERROR


def test_a_fragmented_control_frame_is_a_protocol_error() -> None:
    assert violation_code(forbidden_frame(0x9, b"p")) == PROTOCOL_ERROR  # PING without FIN


def test_a_control_frame_over_125_bytes_is_a_protocol_error() -> None:
    # websockets refuses to serialize one, so the header is written here: FIN+PING, masked, 16-bit length 126.
    frame = bytes((0x89, 0x80 | 126)) + struct.pack("!H", 126) + b"\x00" * 4 + b"p" * 126
    assert violation_code(frame) == PROTOCOL_ERROR


def test_a_continuation_without_a_message_is_a_protocol_error() -> None:
    assert violation_code(client_frame(WsOpcode.CONT, b"orphan")) == PROTOCOL_ERROR


def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error() -> None:
    stream = client_frame(WsOpcode.TEXT, b"a", fin=False) + client_frame(WsOpcode.TEXT, b"b")
    assert violation_code(stream) == PROTOCOL_ERROR


def test_text_that_is_not_utf8_is_an_invalid_payload() -> None:
    assert violation_code(client_frame(WsOpcode.TEXT, b"\xff\xfe")) == INVALID_PAYLOAD


def test_a_frame_over_the_limit_is_refused_from_its_header_alone() -> None:
    header_only = client_frame(WsOpcode.BINARY, b"x" * 2000)[:8]
    assert violation_code(header_only, limit=1000) == MESSAGE_TOO_BIG


def test_fragments_adding_up_over_the_limit_are_refused() -> None:
    stream = client_frame(WsOpcode.BINARY, b"x" * 600, fin=False) + client_frame(WsOpcode.CONT, b"x" * 600)
    assert violation_code(stream, limit=1000) == MESSAGE_TOO_BIG


def test_server_frames_are_what_websockets_parses_back() -> None:
    for size in (0, 125, 126, 70_000):
        frame = encode_frame(Opcode.BINARY, b"a" * size)
        assert frame[0] == 0x82 and not frame[1] & 0x80  # FIN + binary, unmasked
        header = 2 if size < 126 else 4 if size < 65536 else 10
        assert frame[header:] == b"a" * size


def test_a_close_status_is_read_and_written_both_ways() -> None:
    frame = encode_close(4000, "bye")
    assert frame[0] == 0x88
    assert close_status(frame[2:]) == (4000, "bye")
    assert close_status(b"") == (1005, "")
    assert encode_close(1005) == bytes((0x88, 0))


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_a_close_code_that_may_not_be_sent_is_a_protocol_error(code: int) -> None:
    with pytest.raises(FrameViolation) as raised:
        close_status(struct.pack("!H", code))
    assert raised.value.code == PROTOCOL_ERROR
