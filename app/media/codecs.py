"""Sample codecs: G.711 μ-law/A-law and L16 of either byte order, to and from s16le PCM."""

from __future__ import annotations

import sys
import warnings

from app.media.formats import AudioFormat, Encoding

with warnings.catch_warnings():
    # Python 3.11/3.12 ship audioop with a deprecation warning; 3.13+ get it from audioop-lts.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


class MediaError(ValueError):
    """Audio that cannot be decoded in its declared format (e.g. odd-length L16)."""


_NATIVE_LITTLE = sys.byteorder == "little"


def _swap16(data: bytes) -> bytes:
    return audioop.byteswap(data, 2)


def decode_to_pcm16(data: bytes, fmt: AudioFormat) -> bytes:
    """Decode `data` in `fmt` to little-endian 16-bit PCM at the same rate."""
    if fmt.encoding is Encoding.PCMU:
        pcm = audioop.ulaw2lin(data, 2)
    elif fmt.encoding is Encoding.PCMA:
        pcm = audioop.alaw2lin(data, 2)
    else:
        if len(data) % 2:
            raise MediaError(f"L16 payload has an odd length ({len(data)} bytes)")
        return _swap16(data) if fmt.byte_order == "big" else data
    # audioop works in native byte order.
    return pcm if _NATIVE_LITTLE else _swap16(pcm)


def encode_from_pcm16(pcm: bytes, fmt: AudioFormat) -> bytes:
    """Encode little-endian 16-bit PCM into `fmt` (same rate)."""
    if len(pcm) % 2:
        raise MediaError(f"PCM buffer has an odd length ({len(pcm)} bytes)")
    if fmt.encoding is Encoding.L16:
        return _swap16(pcm) if fmt.byte_order == "big" else pcm
    native = pcm if _NATIVE_LITTLE else _swap16(pcm)
    if fmt.encoding is Encoding.PCMU:
        return audioop.lin2ulaw(native, 2)
    return audioop.lin2alaw(native, 2)


def validate_payload(data: bytes, fmt: AudioFormat) -> None:
    """Raise MediaError when `data` cannot be a whole number of samples in `fmt`."""
    if fmt.encoding is Encoding.L16 and len(data) % 2:
        raise MediaError(f"L16 payload has an odd length ({len(data)} bytes)")
