"""The cheapest correct conversion between two audio formats, and pipeline format negotiation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.media.codecs import decode_to_pcm16, encode_from_pcm16, validate_payload
from app.media.formats import AudioFormat, Encoding
from app.media.resample import StreamResampler


class AudioConverter(Protocol):
    """Converts a stream of chunks from one format to another, keeping state between chunks."""

    source: AudioFormat
    target: AudioFormat
    delay_ms: float

    def convert(self, data: bytes) -> bytes: ...

    def reset(self) -> None: ...


class Passthrough:
    """Formats match: bytes pass unchanged (after a sanity check on sample alignment)."""

    delay_ms = 0.0

    def __init__(self, fmt: AudioFormat) -> None:
        self.source = self.target = fmt

    def convert(self, data: bytes) -> bytes:
        validate_payload(data, self.source)
        return data

    def reset(self) -> None:
        pass


class Transcoder:
    """decode → (resample) → encode, with one streaming resampler when the rates differ."""

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        self.source, self.target = source, target
        self._resampler = (
            StreamResampler(source.sample_rate, target.sample_rate)
            if source.sample_rate != target.sample_rate
            else None
        )
        self.delay_ms = self._resampler.delay_ms if self._resampler else 0.0

    def convert(self, data: bytes) -> bytes:
        pcm = decode_to_pcm16(data, self.source)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return encode_from_pcm16(pcm, self.target)

    def reset(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()


def build_converter(source: AudioFormat, target: AudioFormat) -> AudioConverter:
    """Return the cheapest converter from `source` to `target` (none at all when they match)."""
    if source == target:
        return Passthrough(source)
    return Transcoder(source, target)


def negotiate(wire: AudioFormat, accepted: Sequence[AudioFormat] | None) -> AudioFormat:
    """Pick the pipeline format for a stream: the wire format itself when the pipeline takes it.

    `accepted` lists what the pipeline can take, best first; None means "anything". Otherwise prefer an
    accepted format at the wire's rate (no resampling), then the pipeline's first choice.
    """
    if not accepted or wire in accepted:
        return wire
    same_rate = [f for f in accepted if f.sample_rate == wire.sample_rate and f.encoding is Encoding.L16]
    return same_rate[0] if same_rate else accepted[0]
