"""Headless baresip (1.0) as a SIP peer: one account on a free loopback port, audio from a WAV made at test
time (aufile), what it hears recorded by sndfile, driven over ctrl_tcp; started and stopped by its PID."""

from __future__ import annotations

import contextlib
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from app.simulator.audio import read_wav, speech_like, write_wav
from tests.sip_peers.ctrl_tcp import CtrlTcpClient
from tests.sip_peers.ports import HOST, free_sip_port
from tests.sip_peers.process import PeerProcess, start_peer

MODULES = Path("/usr/lib/baresip/modules")
#: baresip's names for the codecs an account may be limited to; the source WAV must have the codec's
#: audio rate (aufile does not resample in 1.0).
WAV_HEADER_BYTES = 44  # sndfile's 16-bit PCM WAV
CODECS = {
    "G722": ("G722/16000/1", 16000),
    "PCMU": ("PCMU/8000/1", 8000),
    "PCMA": ("PCMA/8000/1", 8000),
    "opus": ("opus/48000/2", 48000),
}


@dataclass(frozen=True)
class BaresipOptions:
    """One baresip: its account user, answer mode ("auto" or "manual"), codec, and how long its prompt is
    (when the prompt ends, baresip 1.0's menu hangs up: make it longer than the call). With `certificate`
    (key and certificate in one PEM) it also listens for TLS, on `sip_port + 1`, and its account speaks
    TLS (reference/sip.md §3.5)."""

    user: str = "bot"
    answermode: str = "auto"
    codec: str = "G722"
    prompt_seconds: float = 20.0
    sip_port: int = field(default_factory=free_sip_port)
    ctrl_port: int = field(default_factory=free_sip_port)
    certificate: Path | None = None

    @property
    def tls_port(self) -> int:
        """Where it listens for TLS (baresip's choice: the SIP port + 1)."""
        return self.sip_port + 1

    @property
    def rate(self) -> int:
        return CODECS[self.codec][1]

    @property
    def uri(self) -> str:
        """Where to call this baresip (over TLS when it has a certificate)."""
        if self.certificate is not None:
            return f"sip:{self.user}@{HOST}:{self.tls_port};transport=tls"
        return f"sip:{self.user}@{HOST}:{self.sip_port}"


@dataclass
class Baresip:
    """A running baresip: `ctrl` to drive it, `sent()` what it plays, `heard()` what it recorded."""

    options: BaresipOptions
    peer: PeerProcess
    ctrl: CtrlTcpClient

    @property
    def workdir(self) -> Path:
        return self.peer.workdir

    def sent(self) -> bytes:
        """The prompt it plays, s16le mono at the codec's rate."""
        return read_wav(self.workdir / "prompt.wav", self.options.rate)

    def heard_seconds(self) -> float:
        """How much decoded audio its latest call has recorded so far (from the file size: mid-call the
        WAV header does not count the frames yet, but has the rate and channels)."""
        recordings = sorted((self.workdir / "rec").glob("*-dec.wav"))
        if not recordings:
            return 0.0
        with recordings[-1].open("rb") as recording:
            header = recording.read(WAV_HEADER_BYTES)
        if len(header) < WAV_HEADER_BYTES:  # the header is not written yet
            return 0.0
        # The fmt chunk of sndfile's canonical header: channels, rate, then (at 34) bits per sample. The
        # `wave` module cannot be used mid-call: it refuses a data chunk whose size is not written yet.
        channels = int.from_bytes(header[22:24], "little")
        rate = int.from_bytes(header[24:28], "little")
        bits = int.from_bytes(header[34:36], "little")
        return max(recordings[-1].stat().st_size - WAV_HEADER_BYTES, 0) / (channels * rate * bits // 8)

    def heard(self) -> bytes:
        """The decoded audio of its (latest) call, s16le mono at the codec's rate (b"" when none)."""
        recordings = sorted((self.workdir / "rec").glob("*-dec.wav"))
        if not recordings:
            return b""
        with wave.open(str(recordings[-1]), "rb") as wav:
            if wav.getnframes() == 0:
                return b""
        return read_wav(recordings[-1], self.options.rate)


def write_config(options: BaresipOptions, workdir: Path) -> None:
    """config, accounts and prompt.wav (speech-like noise: unambiguous to correlate) in `workdir`."""
    (workdir / "rec").mkdir(parents=True, exist_ok=True)
    write_wav(workdir / "prompt.wav", speech_like(options.prompt_seconds, rate=options.rate), options.rate)
    modules = ("g711.so", "g722.so", "opus.so", "aufile.so", "sndfile.so", "ctrl_tcp.so")
    lines = [
        f"sip_listen {HOST}:{options.sip_port}",
        "audio_player aufile,/dev/null",
        f"audio_source aufile,{workdir / 'prompt.wav'}",
        "audio_alert aufile,/dev/null",
        f"module_path {MODULES}",
        *(f"module {name}" for name in modules),
        "module_tmp account.so",
        "module_app menu.so",
        f"snd_path {workdir / 'rec'}",
        f"ctrl_tcp_listen {HOST}:{options.ctrl_port}",
    ]
    if options.codec == "opus":  # the WAV is mono: baresip converts to and from Opus's two channels
        lines += ["ausrc_channels 1", "auplay_channels 1"]
    if options.certificate is not None:
        lines.append(f"sip_certificate {options.certificate}")
    (workdir / "config").write_text("\n".join(lines) + "\n")
    transport = "tls" if options.certificate is not None else "udp"
    account = (
        f"<sip:{options.user}@{HOST}:{options.sip_port};transport={transport}>;regint=0"
        f";answermode={options.answermode};audio_codecs={CODECS[options.codec][0]}"
    )
    (workdir / "accounts").write_text(account + "\n")


@contextlib.asynccontextmanager
async def baresip(
    options: BaresipOptions, workdir: Path, ready_within: float = 10.0
) -> AsyncIterator[Baresip]:
    """baresip on loopback (`-4 -n 127.0.0.1`) configured in `workdir`, ready once ctrl_tcp answers;
    stopped by its PID on the way out, whatever happened."""
    write_config(options, workdir)
    argv = ["baresip", "-4", "-n", HOST, "-f", str(workdir), "-v"]
    peer = await start_peer("baresip", argv, workdir)
    ctrl: CtrlTcpClient | None = None
    try:
        ctrl = await CtrlTcpClient.connect(HOST, options.ctrl_port, within=ready_within)
        yield Baresip(options, peer, ctrl)
    finally:
        if ctrl is not None:
            await ctrl.close()
        await peer.stop()
