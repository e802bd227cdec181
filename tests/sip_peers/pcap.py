"""RTP pcap files for SIPp's play_pcap_audio, written at test time (nothing large is committed): a μ-law
(PCMU) stream made with sox, packetised in 20 ms RTP packets inside Ethernet/IPv4/UDP frames."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

PCMU_PAYLOAD_TYPE = 0
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz, one byte per μ-law sample
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET
_ETHERNET = bytes(6) + bytes(6) + b"\x08\x00"  # IPv4
# Addresses and ports are placeholders: SIPp sends the payloads from its media port to the peer's.
_SOURCE, _DESTINATION = (127, 0, 0, 1), (127, 0, 0, 1)
_SOURCE_PORT, _DESTINATION_PORT = 40000, 40002


def mulaw_chirp(seconds: float, path: Path) -> bytes:
    """Raw μ-law 8 kHz mono: a 300→3000 Hz sine sweep at -6 dBFS, made by sox (also written to `path`)."""
    subprocess.run(
        [
            *("sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(path)),
            *("synth", f"{seconds:g}", "sine", "300-3000", "vol", "0.5"),
        ],
        check=True,
        timeout=30,
    )
    return path.read_bytes()


def write_rtp_pcap(path: Path, payloads: list[bytes], payload_type: int, ssrc: int = 0x5EED0001) -> None:
    """One RTP packet per payload, 20 ms apart in capture time, timestamps stepping by the payload size."""
    frames = [_PCAP_HEADER]
    for index, payload in enumerate(payloads):
        rtp = (
            struct.pack(
                "!BBHII",
                0x80,
                (0x80 if index == 0 else 0) | payload_type,
                index & 0xFFFF,
                index * SAMPLES_PER_PACKET,
                ssrc,
            )
            + payload
        )
        frame = _ETHERNET + _ipv4_udp(rtp)
        capture_us = index * 20_000
        frames.append(
            struct.pack("<IIII", capture_us // 1_000_000, capture_us % 1_000_000, len(frame), len(frame))
        )
        frames.append(frame)
    path.write_bytes(b"".join(frames))


def pcmu_pcap(path: Path, seconds: float = 7.0) -> Path:
    """A PCMU RTP pcap of a `seconds`-long chirp at `path` (for the PCMU variant of uac_pcap_xheader.xml)."""
    audio = mulaw_chirp(seconds, path.with_suffix(".ul"))
    payloads = [audio[i : i + SAMPLES_PER_PACKET] for i in range(0, len(audio), SAMPLES_PER_PACKET)]
    write_rtp_pcap(path, [p for p in payloads if len(p) == SAMPLES_PER_PACKET], PCMU_PAYLOAD_TYPE)
    return path


def _ipv4_udp(payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", _SOURCE_PORT, _DESTINATION_PORT, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4B4B", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, *_SOURCE, *_DESTINATION)
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + udp


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
