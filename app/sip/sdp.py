"""SDP (RFC 8866) parsing and the offer/answer rules (RFC 3264) for one audio stream.

We answer with exactly one codec plus telephone-event (RFC 4733), keep the offerer's payload type
numbers, mirror every m-line (rejected ones with port 0) and mirror the direction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.media.opus import OUR_FMTP as OUR_OPUS_FMTP
from app.media.opus import SAMPLE_RATE as OPUS_RATE

__all__ = [
    "CODECS",
    "DTMF_EVENTS",
    "PTIME_MS",
    "Codec",
    "MediaDescription",
    "Negotiated",
    "NoCommonCodec",
    "Origin",
    "SdpError",
    "SessionDescription",
    "accept_answer",
    "answer_offer",
    "build_offer",
    "codecs_for",
    "parse_sdp",
    "serialize_sdp",
]


class SdpError(ValueError):
    """The body is not a usable session description."""


class NoCommonCodec(ValueError):
    """No offered (or answered) audio format is one we support: the INVITE gets 488.

    `warning` is the text for `Warning: 305 callbridge "<warning>"` (no quotes or backslashes in it).
    """

    def __init__(self, warning: str) -> None:
        super().__init__(warning)
        self.warning = warning


@dataclass(frozen=True)
class Codec:
    """An audio codec as negotiated in SDP."""

    name: str  # encoding name as written in a=rtpmap
    clock_rate: int  # the RTP clock (G.722: 8000, RFC 3551's quirk)
    channels: int = 1
    static_pt: int | None = None  # RFC 3551 static payload type, None for dynamic ones
    audio_rate: int | None = None  # PCM sample rate when it differs from the RTP clock
    fmtp: str | None = None  # the a=fmtp parameters we put in our offers and answers

    @property
    def sample_rate(self) -> int:
        """The PCM sample rate of the decoded audio."""
        return self.audio_rate or self.clock_rate

    @property
    def rtpmap(self) -> str:
        """The a=rtpmap encoding, e.g. "G722/8000" or "opus/48000/2"."""
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clock_rate}{suffix}"

    def samples_per_packet(self, ptime_ms: int) -> int:
        """RTP timestamp increment of one packet of `ptime_ms`."""
        return self.clock_rate * ptime_ms // 1000


# Every codec we can encode and decode. Opus (RFC 7587): always opus/48000/2 in SDP, a dynamic payload
# type; the pipeline hears and speaks it at 16 kHz (app/media/opus.py), and we send mono.
CODECS: dict[str, Codec] = {
    "opus": Codec("opus", 48000, 2, audio_rate=OPUS_RATE, fmtp=OUR_OPUS_FMTP),
    "PCMU": Codec("PCMU", 8000, 1, 0),
    "PCMA": Codec("PCMA", 8000, 1, 8),
    "G722": Codec("G722", 8000, 1, 9, audio_rate=16000),
}

PTIME_MS = 20  # what our playout sends and what we ask to receive
ALLOWED_PTIMES = (10, 20, 30, 40)
DTMF_EVENTS = "0-16"  # RFC 4733 DTMF digits 0-9 * # A-D and flash
_OUR_EVENTS = frozenset(range(17))
_DEFAULT_EVENTS = "0-15"  # RFC 4733 §2.4.1: an offer without fmtp means the DTMF events
TELEPHONE_EVENT = "telephone-event"
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRRORED = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_AUDIO_PROTOS = ("RTP/AVP", "RTP/AVPF")
_FIRST_DYNAMIC_PT = 96
_DTMF_PT_8000 = 101  # the customary number, used by most UAs for telephone-event/8000
_DTMF_CLOCK = 8000  # telephone-event's usual clock, taken beside a codec clocked faster when it is alone
_HELD_ADDRESS = "0.0.0.0"  # RFC 2543 hold: "do not send me media"
_LINE = re.compile(r"([a-z])=(.*)")


def codecs_for(preferences: list[str]) -> list[Codec]:
    """Codecs by name (case-insensitive), in the given order; ValueError for a name we do not support."""
    by_folded = {name.casefold(): codec for name, codec in CODECS.items()}
    codecs = []
    for name in preferences:
        codec = by_folded.get(name.strip().casefold())
        if codec is None:
            raise ValueError(f"unsupported codec {name!r} (supported: {', '.join(CODECS)})")
        if codec not in codecs:
            codecs.append(codec)
    if not codecs:
        raise ValueError("no codecs configured")
    return codecs


@dataclass
class Origin:
    """The o= line."""

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return " ".join(
            (self.username, self.session_id, self.session_version, self.nettype, self.addrtype, self.address)
        )


Attribute = tuple[str, str | None]  # ("rtpmap", "0 PCMU/8000") or ("sendonly", None)


@dataclass
class MediaDescription:
    """One m= section."""

    media: str  # "audio", "video", ...
    port: int
    proto: str  # "RTP/AVP", ...
    formats: list[str]
    attributes: list[Attribute] = field(default_factory=list)
    connection: str | None = None  # c= address of this section (TTL / count suffix dropped)
    port_count: int | None = None  # "m=audio 49170/2 ..."
    other_lines: list[tuple[str, str]] = field(default_factory=list)  # i=, b=, k= ... as received

    def attribute(self, name: str) -> str | None:
        """The value of the first a=<name> (None when absent or a flag)."""
        return next((value for key, value in self.attributes if key == name), None)

    def has_attribute(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    def rtpmap(self, payload_type: str) -> tuple[str, int, int] | None:
        """(encoding name, clock rate, channels) from a=rtpmap for a format, None if absent or malformed."""
        for key, value in self.attributes:
            if key != "rtpmap" or value is None:
                continue
            pt, _, encoding = value.partition(" ")
            if pt != payload_type:
                continue
            parts = encoding.strip().split("/")
            try:
                clock = int(parts[1])
                channels = int(parts[2]) if len(parts) > 2 else 1
            except (IndexError, ValueError):
                return None
            return parts[0], clock, channels
        return None

    def fmtp(self, payload_type: str) -> str | None:
        """The a=fmtp parameters of a format."""
        for key, value in self.attributes:
            if key == "fmtp" and value is not None:
                pt, _, params = value.partition(" ")
                if pt == payload_type:
                    return params.strip()
        return None

    def int_attribute(self, name: str) -> int | None:
        """An attribute holding a number (ptime, maxptime); None when absent or not a number."""
        value = self.attribute(name)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


@dataclass
class SessionDescription:
    """A parsed SDP body."""

    origin: Origin
    session_name: str = "-"
    connection: str | None = None  # session-level c= address
    timing: str = "0 0"
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)  # session-level lines we do not model
    version: int = 0

    def attribute(self, name: str) -> str | None:
        return next((value for key, value in self.attributes if key == name), None)

    def direction(self, media: MediaDescription) -> str:
        """A stream's direction: its own attribute, else the session's, else sendrecv."""
        for attributes in (media.attributes, self.attributes):
            for key, _ in attributes:
                if key in DIRECTIONS:
                    return key
        return "sendrecv"

    def connection_of(self, media: MediaDescription) -> str | None:
        """The address a stream's media goes to: its own c=, else the session's."""
        return media.connection or self.connection


@dataclass(frozen=True)
class Negotiated:
    """What one offer/answer exchange settled for the audio stream."""

    codec: Codec
    payload_type: int  # the number both sides use for the codec
    dtmf_payload_type: int | None  # telephone-event at the codec's clock, None if not negotiated
    ptime_ms: int  # packet interval the peer asked to receive (a=ptime 10/20/30/40), else 20
    remote_host: str  # "0.0.0.0" for an RFC 2543 hold: send nothing
    remote_port: int
    direction: str  # from our side: "recvonly" means we only receive
    #: The far end's a=fmtp for the codec (Opus: maxplaybackrate, useinbandfec, stereo), None if none.
    fmtp: str | None = None
    #: telephone-event's clock when it is not the codec's (Opus with telephone-event/8000), else None.
    dtmf_clock_rate: int | None = None

    @property
    def sends(self) -> bool:
        """Whether we may send media to the peer."""
        return self.direction in ("sendrecv", "sendonly") and self.remote_host != _HELD_ADDRESS

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


# --- parsing -----------------------------------------------------------------------------------------


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body (CRLF or LF line ends); SdpError when it is not SDP."""
    text = body.decode("utf-8", errors="replace")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise SdpError("empty session description")
    parsed: list[tuple[str, str]] = []
    for line in lines:
        match = _LINE.fullmatch(line)
        if match is None:
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        parsed.append((match[1], match[2]))
    kind, value = parsed[0]
    if kind != "v" or value.strip() != "0":
        raise SdpError("SDP must start with v=0")
    session: SessionDescription | None = None
    current: MediaDescription | None = None
    timing_seen = False
    for kind, value in parsed[1:]:
        if kind == "o":
            if session is not None:
                raise SdpError("duplicate o= line")
            session = SessionDescription(origin=_parse_origin(value))
            continue
        if session is None:
            raise SdpError("o= must follow v=")
        if kind == "m":
            current = _parse_media(value)
            session.media.append(current)
        elif kind == "a":
            (current.attributes if current else session.attributes).append(_parse_attribute(value))
        elif kind == "c":
            address = _parse_connection(value)
            if current is not None:
                current.connection = address
            else:
                session.connection = address
        elif current is not None:
            current.other_lines.append((kind, value))
        elif kind == "s":
            session.session_name = value
        elif kind == "t" and not timing_seen:
            session.timing = value.strip()
            timing_seen = True
        else:
            session.other_lines.append((kind, value))
    if session is None:
        raise SdpError("missing o= line")
    return session


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"malformed o= line {value[:60]!r}")
    return Origin(*parts)


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"malformed m= line {value[:60]!r}")
    port_text, _, count_text = parts[1].partition("/")
    try:
        port = int(port_text)
        port_count = int(count_text) if count_text else None
    except ValueError:
        raise SdpError(f"malformed m= port {parts[1][:20]!r}") from None
    if not 0 <= port <= 65535:
        raise SdpError(f"m= port out of range: {port}")
    return MediaDescription(parts[0], port, parts[2], parts[3:], port_count=port_count)


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError(f"malformed c= line {value[:60]!r}")
    return parts[2].split("/", 1)[0]  # multicast "/ttl[/count]" dropped


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    return (name.strip(), rest if colon else None)


# --- serializing -------------------------------------------------------------------------------------


def serialize_sdp(session: SessionDescription) -> bytes:
    """The SDP text, CRLF line ends, lines in RFC 8866 order."""
    lines = [f"v={session.version}", f"o={session.origin}", f"s={session.session_name}"]
    lines += [f"{kind}={value}" for kind, value in session.other_lines if kind in "iuep"]
    if session.connection:
        lines.append(f"c={_connection_line(session.connection)}")
    lines += [f"{kind}={value}" for kind, value in session.other_lines if kind == "b"]
    lines.append(f"t={session.timing}")
    lines += [f"{kind}={value}" for kind, value in session.other_lines if kind not in "iuepb"]
    lines += [_attribute_line(attribute) for attribute in session.attributes]
    for media in session.media:
        port = f"{media.port}/{media.port_count}" if media.port_count else str(media.port)
        lines.append(f"m={' '.join([media.media, port, media.proto, *media.formats])}")
        lines += [f"{kind}={value}" for kind, value in media.other_lines if kind == "i"]
        if media.connection:
            lines.append(f"c={_connection_line(media.connection)}")
        lines += [f"{kind}={value}" for kind, value in media.other_lines if kind != "i"]
        lines += [_attribute_line(attribute) for attribute in media.attributes]
    return ("\r\n".join(lines) + "\r\n").encode()


def _connection_line(address: str) -> str:
    return f"IN {_addrtype(address)} {address}"


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _attribute_line(attribute: Attribute) -> str:
    name, value = attribute
    return f"a={name}" if value is None else f"a={name}:{value}"


def _our_session(local_host: str, session_id: int, session_version: int | None) -> SessionDescription:
    version = session_id if session_version is None else session_version
    origin = Origin("callbridge", str(session_id), str(version), "IN", _addrtype(local_host), local_host)
    return SessionDescription(origin=origin, session_name="callbridge", connection=local_host)


def _audio_attributes(
    codecs: list[tuple[int, Codec]], dtmf: list[tuple[int, int, str]], direction: str
) -> list[Attribute]:
    attributes: list[Attribute] = []
    for pt, codec in codecs:
        attributes.append(("rtpmap", f"{pt} {codec.rtpmap}"))
        if codec.fmtp:
            attributes.append(("fmtp", f"{pt} {codec.fmtp}"))
    for pt, clock, events in dtmf:
        attributes += [("rtpmap", f"{pt} {TELEPHONE_EVENT}/{clock}"), ("fmtp", f"{pt} {events}")]
    attributes += [("ptime", str(PTIME_MS)), (direction, None)]
    return attributes


# --- offer/answer ------------------------------------------------------------------------------------


def answer_offer(
    offer: SessionDescription,
    preferences: list[str],
    local_host: str,
    local_port: int,
    session_id: int,
    *,
    session_version: int | None = None,
) -> tuple[bytes, Negotiated]:
    """Answer an offer (RFC 3264 §6): our first preferred codec among those offered on the first usable
    audio stream; every other m-line mirrored with port 0. NoCommonCodec when no stream is usable,
    SdpError when the chosen stream has no connection address."""
    codecs = codecs_for(preferences)
    answer = _our_session(local_host, session_id, session_version)
    negotiated: Negotiated | None = None
    for media in offer.media:
        choice = None if negotiated else _choose(media, codecs)
        if choice is None:
            answer.media.append(_rejected(media))
            continue
        codec, pt = choice
        dtmf = _answer_dtmf(media, codec.clock_rate)
        direction = _our_direction(offer, media)
        host = offer.connection_of(media)
        if host is None:
            raise SdpError("the offered audio stream has no c= address")
        negotiated = Negotiated(
            codec=codec,
            payload_type=pt,
            dtmf_payload_type=dtmf[0] if dtmf else None,
            dtmf_clock_rate=_other_clock(dtmf, codec),
            ptime_ms=_send_ptime(media),
            remote_host=host,
            remote_port=media.port,
            direction=direction,
            fmtp=media.fmtp(str(pt)),
        )
        formats = [str(pt)] + ([str(dtmf[0])] if dtmf else [])
        attributes = _audio_attributes([(pt, codec)], [dtmf] if dtmf else [], direction)
        answer.media.append(MediaDescription("audio", local_port, media.proto, formats, attributes))
    if negotiated is None:
        raise NoCommonCodec(_incompatible(offer, codecs))
    return serialize_sdp(answer), negotiated


def build_offer(
    preferences: list[str],
    local_host: str,
    local_port: int,
    session_id: int,
    *,
    session_version: int | None = None,
) -> bytes:
    """Our offer: one sendrecv audio stream with our codecs in preference order, telephone-event for each
    codec clock (101 for 8000), ptime 20."""
    codecs = codecs_for(preferences)
    numbered = _number(codecs)
    used = {pt for pt, _ in numbered}
    dtmf: list[tuple[int, int, str]] = []
    for _, codec in numbered:
        if codec.clock_rate not in {clock for _, clock, _ in dtmf}:
            pt = _DTMF_PT_8000 if codec.clock_rate == 8000 and _DTMF_PT_8000 not in used else _free_pt(used)
            used.add(pt)
            dtmf.append((pt, codec.clock_rate, DTMF_EVENTS))
    formats = [str(pt) for pt, _ in numbered] + [str(pt) for pt, _, _ in dtmf]
    offer = _our_session(local_host, session_id, session_version)
    attributes = _audio_attributes(numbered, dtmf, "sendrecv")
    offer.media.append(MediaDescription("audio", local_port, "RTP/AVP", formats, attributes))
    return serialize_sdp(offer)


def accept_answer(preferences: list[str], answer: SessionDescription) -> Negotiated:
    """Read the answer to our build_offer: the first format the answerer listed that we support.
    NoCommonCodec when the audio stream was rejected or answered with nothing we offered."""
    codecs = codecs_for(preferences)
    for media in answer.media:
        if media.media != "audio" or media.port == 0 or media.proto not in _AUDIO_PROTOS:
            continue
        for fmt in media.formats:
            codec = next((codec for codec in codecs if _matches(media, fmt, codec)), None)
            if codec is None:
                continue
            host = answer.connection_of(media)
            if host is None:
                raise SdpError("the answered audio stream has no c= address")
            dtmf = _dtmf_payload_type(media, codec.clock_rate)
            return Negotiated(
                codec=codec,
                payload_type=int(fmt),
                dtmf_payload_type=dtmf[0] if dtmf else None,
                dtmf_clock_rate=_other_clock(dtmf, codec),
                ptime_ms=_send_ptime(media),
                remote_host=host,
                remote_port=media.port,
                direction=_our_direction(answer, media),
                fmtp=media.fmtp(fmt),
            )
    raise NoCommonCodec(_incompatible(answer, codecs))


def _choose(media: MediaDescription, codecs: list[Codec]) -> tuple[Codec, int] | None:
    """Our first preferred codec on a usable audio stream, with the offerer's payload type number."""
    if media.media != "audio" or media.port == 0 or media.proto not in _AUDIO_PROTOS:
        return None
    for codec in codecs:
        for fmt in media.formats:
            if _matches(media, fmt, codec):
                return codec, int(fmt)
    return None


def _matches(media: MediaDescription, fmt: str, codec: Codec) -> bool:
    if not fmt.isdigit():
        return False
    mapping = media.rtpmap(fmt)
    if mapping is None:  # static payload types may come without a=rtpmap
        return codec.static_pt is not None and int(fmt) == codec.static_pt
    name, clock, channels = mapping
    return (name.casefold(), clock, channels) == (codec.name.casefold(), codec.clock_rate, codec.channels)


def _dtmf_payload_type(media: MediaDescription, clock_rate: int) -> tuple[int, int] | None:
    """(payload type, clock) of the offered telephone-event at the codec's RTP clock (RFC 4733 §2.1); for
    a codec clocked faster (Opus) without one, the one at 8000, as baresip, Asterisk and FreeSWITCH
    offer it beside opus/48000/2."""
    clocks = (clock_rate, _DTMF_CLOCK) if clock_rate > _DTMF_CLOCK else (clock_rate,)
    for clock in clocks:
        for fmt in media.formats:
            mapping = media.rtpmap(fmt) if fmt.isdigit() else None
            if mapping and mapping[0].casefold() == TELEPHONE_EVENT and mapping[1] == clock:
                return int(fmt), clock
    return None


def _other_clock(dtmf: tuple[int, int] | tuple[int, int, str] | None, codec: Codec) -> int | None:
    """telephone-event's clock when it differs from the codec's (Negotiated.dtmf_clock_rate)."""
    return dtmf[1] if dtmf is not None and dtmf[1] != codec.clock_rate else None


def _answer_dtmf(media: MediaDescription, clock_rate: int) -> tuple[int, int, str] | None:
    """(payload type, clock, events) of the offered telephone-event we answer, None if there is none."""
    offered = _dtmf_payload_type(media, clock_rate)
    events = _common_events(media.fmtp(str(offered[0]))) if offered is not None else ""
    return (*offered, events) if offered is not None and events else None


def _common_events(offered: str | None) -> str:
    """The RFC 4733 events both sides support, as an fmtp list ("0-11,16"); "" when none."""
    common: set[int] = set()
    for item in (offered or _DEFAULT_EVENTS).replace(" ", "").split(","):
        first, _, last = item.partition("-")
        if first.isdigit() and (last.isdigit() or not last):
            common |= _OUR_EVENTS & set(range(int(first), min(int(last or first), max(_OUR_EVENTS)) + 1))
    ranges: list[str] = []
    for event in sorted(common):
        if ranges and event - 1 in common:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{event}"
        else:
            ranges.append(str(event))
    return ",".join(ranges)


def _our_direction(remote: SessionDescription, media: MediaDescription) -> str:
    """Our direction for a stream the peer described: its own mirrored, minus sending on an RFC 2543
    hold (c=0.0.0.0: the peer wants no media)."""
    direction = _MIRRORED[remote.direction(media)]
    if remote.connection_of(media) == _HELD_ADDRESS:
        return {"sendrecv": "recvonly", "sendonly": "inactive"}.get(direction, direction)
    return direction


def _send_ptime(media: MediaDescription) -> int:
    ptime = media.int_attribute("ptime")
    chosen = ptime if ptime in ALLOWED_PTIMES else PTIME_MS
    maxptime = media.int_attribute("maxptime")
    if maxptime is not None and chosen > maxptime:
        chosen = max((p for p in ALLOWED_PTIMES if p <= maxptime), default=chosen)
    return chosen


def _rejected(media: MediaDescription) -> MediaDescription:
    """RFC 3264 §6: a declined stream keeps its m-line with port 0 (formats as offered)."""
    return MediaDescription(media.media, 0, media.proto, list(media.formats) or ["0"])


def _number(codecs: list[Codec]) -> list[tuple[int, Codec]]:
    used = {codec.static_pt for codec in codecs if codec.static_pt is not None} | {_DTMF_PT_8000}
    numbered = []
    for codec in codecs:
        pt = codec.static_pt if codec.static_pt is not None else _free_pt(used)
        used.add(pt)
        numbered.append((pt, codec))
    return numbered


def _free_pt(used: set[int]) -> int:
    return next(pt for pt in range(_FIRST_DYNAMIC_PT, 128) if pt not in used)


def _incompatible(session: SessionDescription, codecs: list[Codec]) -> str:
    offered: list[str] = []
    for media in session.media:
        if media.media != "audio" or media.port == 0:
            continue
        for fmt in media.formats:
            mapping = media.rtpmap(fmt) if fmt.isdigit() else None
            name = f"{mapping[0]}/{mapping[1]}" if mapping else f"payload type {fmt}"
            if mapping is None or mapping[0].casefold() != TELEPHONE_EVENT:
                over = "" if media.proto in _AUDIO_PROTOS else f" over {media.proto}"
                offered.append(_printable(name + over))
    supported = ", ".join(codec.rtpmap for codec in codecs)
    got = ", ".join(dict.fromkeys(offered))[:200] or "no audio stream"
    return f"Incompatible media format: offered {got}; supported {supported}"


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:60]
