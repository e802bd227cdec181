"""Opus (RFC 6716, RTP payload RFC 7587) ↔ 16 kHz s16le mono PCM, on `opuslib-next` (ctypes to libopus).

The call pipeline runs Opus calls at 16 kHz, as it runs G.722: libopus encodes from and decodes to that
rate itself (no resampler of ours), while the RTP clock stays 48 kHz. We always send mono (RFC 7587 §3.4
lets a receiver that prefers stereo get mono). bench/opus_codecs.py chose opuslib-next over PyAV: a
280 kB wrapper over Debian's libopus0 against a 128 MB wheel of FFmpeg, faster per 20 ms frame, and it
decodes straight to 16 kHz (PyAV's libopus decoder gives 48 kHz, to be resampled).

The far end's fmtp shapes what we send: `maxplaybackrate` caps the encoded bandwidth, `useinbandfec=1`
turns on in-band forward error correction (it can use it to hide a lost packet).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from app.media.codecs import MediaError

SAMPLE_RATE = 16000
RTP_CLOCK = 48000
#: 20 ms at the pipeline's rate: what every encode takes.
FRAME_SAMPLES = 320
#: The longest Opus packet (120 ms) at 16 kHz: what one decode may give.
MAX_DECODED_SAMPLES = 1920
#: Wideband speech at this rate is transparent enough for a voice agent and a few kB/s on the wire.
BITRATE = 32000
#: Encoded frame sizes libopus takes (2.5 to 60 ms at 16 kHz).
_FRAME_SIZES = frozenset({40, 80, 160, 320, 640, 960})
#: With in-band FEC on, the loss rate the encoder plans for (it spends bits on FEC only above 0).
FEC_LOSS_PERCENT = 10

try:  # libopus0 is a Debian package: without it Opus is unavailable, and the rest of SIP still works
    import opuslib_next as _opus

    _UNAVAILABLE: str | None = None
except Exception as exc:  # opuslib_next raises a bare Exception when it finds no libopus
    _opus = None
    _UNAVAILABLE = f"Opus needs libopus (apt-get install libopus0): {exc}"


def opus_unavailable() -> str | None:
    """Why Opus cannot be used here (libopus missing), or None when it can."""
    return _UNAVAILABLE


@dataclass(frozen=True)
class OpusFmtp:
    """RFC 7587 §6.1 fmtp parameters one side gives for the stream it receives."""

    max_playback_rate: int = 48000
    inband_fec: bool = False
    stereo: bool = False

    @classmethod
    def parse(cls, fmtp: str | None) -> OpusFmtp:
        """`maxplaybackrate=16000;useinbandfec=1;stereo=0` (missing or malformed values: the defaults)."""
        params: dict[str, str] = {}
        for item in (fmtp or "").split(";"):
            name, _, value = item.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        rate = params.get("maxplaybackrate", "")
        return cls(
            max_playback_rate=int(rate) if rate.isdigit() and int(rate) >= 8000 else 48000,
            inband_fec=params.get("useinbandfec") == "1",
            stereo=params.get("stereo") == "1",
        )


#: What we ask to receive and say we send: 16 kHz is all the pipeline keeps; mono both ways. No
#: useinbandfec=1: our decoder conceals a lost packet but does not recover it from the next one's FEC
#: (the RTP stream does not report losses to it), so the far end would spend those bits for nothing.
OUR_FMTP = "maxplaybackrate=16000;sprop-maxcapturerate=16000;stereo=0;sprop-stereo=0"


def _bandwidth_for(max_playback_rate: int) -> int:
    """The widest Opus audio bandwidth a receiver playing at `max_playback_rate` can use."""
    assert _opus is not None
    if max_playback_rate <= 8000:
        return _opus.BANDWIDTH_NARROWBAND
    if max_playback_rate <= 12000:
        return _opus.BANDWIDTH_MEDIUMBAND
    return _opus.BANDWIDTH_WIDEBAND  # our 16 kHz input has nothing wider


def _require() -> Any:
    if _opus is None:
        raise MediaError(_UNAVAILABLE or "Opus is unavailable")
    return _opus


class OpusEncoder:
    """16 kHz s16le mono PCM → one Opus packet per call (2.5-60 ms of samples, 20 ms in calls)."""

    def __init__(self, far_end: OpusFmtp = OpusFmtp(), bitrate: int = BITRATE) -> None:
        opus = _require()
        self._encoder = opus.Encoder(SAMPLE_RATE, 1, opus.APPLICATION_VOIP)
        self._encoder.bitrate = bitrate
        self._encoder.max_bandwidth = _bandwidth_for(far_end.max_playback_rate)
        if far_end.inband_fec:
            self._encoder.inband_fec = 1
            self._encoder.packet_loss_perc = FEC_LOSS_PERCENT

    def encode(self, pcm: bytes) -> bytes:
        """One packet for `pcm`; MediaError unless it is an Opus frame's worth (20 ms: 640 bytes)."""
        samples = len(pcm) // 2
        if len(pcm) % 2 or samples not in _FRAME_SIZES:
            raise MediaError(f"an Opus frame is 2.5-60 ms of 16 kHz PCM, not {len(pcm)} bytes")
        return bytes(self._encoder.encode(pcm, samples))


class OpusDecoder:
    """Opus packets → 16 kHz s16le mono PCM (a stereo stream is mixed down by libopus)."""

    def __init__(self) -> None:
        opus = _require()
        self._state = opus.api.decoder.create_state(SAMPLE_RATE, 1)
        self._destroy = opus.api.decoder.destroy
        self._decode = opus.api.decoder.libopus_decode
        # One buffer for every packet: the high-level Decoder.decode makes a list of ints per packet.
        self._pcm = (ctypes.c_int16 * MAX_DECODED_SAMPLES)()
        self._pcm_pointer = ctypes.cast(self._pcm, ctypes.POINTER(ctypes.c_int16))

    def __del__(self) -> None:
        if hasattr(self, "_state"):
            self._destroy(self._state)

    def decode(self, payload: bytes) -> bytes:
        """The PCM of one packet; an empty or corrupt packet is concealed like a lost one (20 ms)."""
        if not payload:
            return self.conceal()
        samples = self._decode(self._state, payload, len(payload), self._pcm_pointer, MAX_DECODED_SAMPLES, 0)
        if samples < 0:  # a damaged packet is one lost packet, not the end of the call
            return self.conceal()
        return ctypes.string_at(self._pcm, samples * 2)

    def conceal(self) -> bytes:
        """20 ms standing in for a packet that never came (libopus's packet loss concealment)."""
        samples = self._decode(self._state, None, 0, self._pcm_pointer, FRAME_SAMPLES, 0)
        return ctypes.string_at(self._pcm, max(samples, 0) * 2)
