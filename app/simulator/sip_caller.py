"""`callbridge simulate sip`: one SIP call with callbridge, a live progress line, a report.

Incoming (default): the simulator phones `agent_<id>@host` (callbridge's SIP listen address), streams the
caller audio as RTP, presses the --dtmf keys, and hangs up after the audio and --tail. `--outbound`: the
simulator listens as a SIP callee on 127.0.0.1, asks callbridge's API to dial it, answers and streams the
callee audio the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.settings import Settings
from app.simulator.audio import read_wav, speech_like, write_wav
from app.simulator.carrier import SetupError
from app.simulator.sip_media import MediaProgress, MediaResult, MediaScript, MediaStream
from app.simulator.sip_phone import Invite, NoAnswer, SipPhone, build_invite, status_line
from app.simulator.sip_report import SipCallReport, refusal_text
from app.sip.message import SipParseError, SipRequest, parse_name_addr, parse_uri, response_to
from app.sip.ports import RtpPortRange
from app.sip.rtp_session import RtpSession
from app.sip.sdp import (
    CODECS,
    Negotiated,
    NoCommonCodec,
    SdpError,
    accept_answer,
    answer_offer,
    build_offer,
    parse_sdp,
)
from app.sip.transport import ListenAddress, parse_listen

HOST = "127.0.0.1"
CALLER = f'"Simulator" <sip:+15550001111@{HOST}>'
DEFAULT_SERVER = ListenAddress("udp", HOST, 5060)
#: Where the simulator's RTP ports come from (callbridge's default range is 10000-20000).
RTP_PORTS = "30000-39999"
#: How long --outbound waits for callbridge's INVITE after the API created the call.
INVITE_WAIT_S = 30.0
AUDIO_SECONDS = 3.0

Show = Callable[[str], None]


@dataclass(frozen=True)
class Ending:
    """How the call's media went and who hung up."""

    media: MediaResult
    ended_by: str
    bye_answer: str | None


def add_sip_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only `simulate sip` takes (--agent, --wav, --out, --dtmf, --tail are shared)."""
    sip = parser.add_argument_group("sip (a SIP call with callbridge's own SIP listener)")
    sip.add_argument("--to-user", help="sip: the Request-URI user (default agent_<--agent>)")
    sip.add_argument(
        "--sip-host", help="sip: callbridge's SIP host (default CALLBRIDGE_SIP_LISTEN's, else 127.0.0.1)"
    )
    sip.add_argument(
        "--sip-port", type=int, help="sip: callbridge's SIP port (default CALLBRIDGE_SIP_LISTEN's, else 5060)"
    )
    sip.add_argument("--transport", choices=("udp", "tcp"), help="sip: signalling transport (default udp)")
    sip.add_argument(
        "--codec", choices=tuple(CODECS), default="PCMU", help="sip: the one codec offered or accepted"
    )
    sip.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="X-NAME:VALUE",
        help="sip: an extra INVITE header (repeatable); with --outbound, for callbridge's INVITE",
    )
    sip.add_argument(
        "--callee-port", type=int, default=0,
        help="sip --outbound: the fake callee's SIP port on 127.0.0.1 (default: any free one)",
    )  # fmt: skip


@dataclass(frozen=True)
class SipTarget:
    """Where callbridge's SIP listener is, and the user to call there."""

    transport: str
    host: str
    port: int
    user: str

    @property
    def uri(self) -> str:
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.user}@{self.host}:{self.port}{suffix}"


def server_address(settings: Settings) -> ListenAddress:
    """callbridge's first UDP/TCP SIP listen address (a wildcard host reached on loopback), else
    127.0.0.1:5060."""
    try:
        listens = parse_listen(settings.sip_listen)
    except ValueError as exc:
        raise SetupError(f"CALLBRIDGE_SIP_LISTEN: {exc}") from None
    first = next((listen for listen in listens if listen.transport in ("udp", "tcp")), None)
    if first is None:
        return DEFAULT_SERVER
    host = HOST if first.host in ("0.0.0.0", "::", "") else first.host
    return ListenAddress(first.transport, host, first.port)


def local_host_towards(host: str) -> str:
    """The local address packets to `host` leave from (loopback for loopback), for Via, Contact and SDP."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))  # UDP connect sends nothing: it only picks the route
            return str(probe.getsockname()[0])
    except OSError as exc:
        raise SetupError(f"no route to the SIP host {host}: {exc}") from None


def sip_target(args: argparse.Namespace, settings: Settings) -> SipTarget:
    """The call's target from the options, CALLBRIDGE_SIP_LISTEN and the defaults."""
    if not (args.agent or args.to_user):
        raise SetupError("sip needs --agent (or --to-user)")
    default = server_address(settings)
    port = args.sip_port if args.sip_port is not None else default.port
    if not 0 < port < 65536:
        raise SetupError(f"--sip-port must be 1-65535, not {port}")
    return SipTarget(
        args.transport or default.transport,
        args.sip_host or default.host,
        port,
        args.to_user or f"agent_{args.agent}",
    )


def parse_headers(specs: list[str]) -> list[tuple[str, str]]:
    """`X-Name:value` options as (name, value); SetupError for one without a name and a colon."""
    headers = []
    for spec in specs:
        name, colon, value = spec.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise SetupError(f"--header {spec!r}: expected NAME:VALUE, e.g. X-Customer:42")
        headers.append((name.strip(), value.strip()))
    return headers


def caller_offer(codec: str, rtp_port: int, host: str = HOST) -> bytes:
    """The SDP offer the simulator sends: just `codec` and telephone-event/8000, at `host:rtp_port`."""
    return build_offer([codec], host, rtp_port, secrets.randbelow(2**31))


def media_script(args: argparse.Namespace, sample_rate: int) -> MediaScript:
    audio = read_wav(args.wav, sample_rate) if args.wav else speech_like(AUDIO_SECONDS, sample_rate)
    dtmf = [(1.0 + i, digit) for i, digit in enumerate(args.dtmf)]
    return MediaScript(audio=audio, dtmf=dtmf, tail_seconds=args.tail)


def progress_line(progress: MediaProgress) -> str:
    return (
        f"  {progress.elapsed:5.1f}s  RTP sent {progress.packets_sent:5d}"
        f"  received {progress.packets_received:5d}"
    )


async def run_sip(args: argparse.Namespace, settings: Settings, base_url: str, show: Show) -> int:
    """Place (or, with --outbound, take) the call and print its report: the exit code."""
    script = media_script(args, CODECS[args.codec].sample_rate)
    headers = parse_headers(args.header)
    if args.outbound:
        transport = args.transport or "udp"
        phone = SipPhone(transport, HOST, args.callee_port)
        await _start(phone, f"{transport}:{HOST}:{args.callee_port}")
        try:
            return await _take_call(args, base_url, phone, script, headers, show)
        finally:
            await phone.stop()
    target = sip_target(args, settings)
    local = local_host_towards(target.host)
    phone = SipPhone(target.transport, local, 0)
    await _start(phone, f"{target.transport}:{local}:0")
    try:
        return await _place_call(args, target, phone, script, headers, show)
    finally:
        await phone.stop()


async def _start(phone: SipPhone, where: str) -> None:
    try:
        await phone.start()
    except OSError as exc:
        raise SetupError(f"the simulator cannot listen for SIP on {where}: {exc}") from None


async def _open_rtp(host: str = HOST) -> RtpSession:
    try:
        return await RtpSession.open(host, RtpPortRange.parse(RTP_PORTS))
    except OSError as exc:
        raise SetupError(f"the simulator cannot bind an RTP port in {RTP_PORTS} on {host}: {exc}") from None


# --- incoming: the simulator calls callbridge ------------------------------------------------------


async def _place_call(
    args: argparse.Namespace,
    target: SipTarget,
    phone: SipPhone,
    script: MediaScript,
    headers: list[tuple[str, str]],
    show: Show,
) -> int:
    local = phone.here.host
    rtp = await _open_rtp(local)
    try:
        offer = caller_offer(args.codec, rtp.local_port, local)
        try:
            uri = parse_uri(target.uri)
        except SipParseError as exc:
            raise SetupError(f"cannot call {target.uri}: {exc}") from None
        invite = build_invite(uri, parse_name_addr(CALLER), phone.here, headers, offer)
        seconds = len(script.audio) / 2 / CODECS[args.codec].sample_rate
        print(f"calling {target.uri} over {target.transport} ({seconds:.1f} s of audio)", file=sys.stderr)
        signalling: list[str] = []
        try:
            final = await phone.call(invite, lambda response: signalling.append(status_line(response)))
        except NoAnswer as exc:
            print(f"{exc}: is `callbridge serve --sip` running and listening there?", file=sys.stderr)
            return 1
        signalling.append(status_line(final))
        if final.status >= 300:
            print(refusal_text(final.status, final.reason, final.headers.get("Warning")))
            return 1
        try:
            negotiated = accept_answer([args.codec], parse_sdp(final.body))
        except (SdpError, NoCommonCodec) as exc:
            await phone.hang_up()
            print(f"callbridge's SDP answer is unusable: {exc}")
            return 1
        ending = await _converse(phone, rtp, negotiated, script, show)
        return _print_report(
            args,
            ending,
            direction="to callbridge",
            sip_call_id=invite.call_id,
            call_id=None,
            target=str(invite.uri),
            transport=target.transport,
            signalling=signalling,
            negotiated=negotiated,
        )
    finally:
        rtp.close()


# --- outbound: callbridge calls the simulator ------------------------------------------------------


async def _take_call(
    args: argparse.Namespace,
    base_url: str,
    phone: SipPhone,
    script: MediaScript,
    headers: list[tuple[str, str]],
    show: Show,
) -> int:
    if not args.api_key:
        raise SetupError("sip --outbound needs --api-key (callbridge's API key, to create the call)")
    here = phone.here
    suffix = ";transport=tcp" if here.transport == "tcp" else ""
    callee = f"sip:callee@{HOST}:{here.port}{suffix}"
    rtp = await _open_rtp()
    try:
        print(f"fake SIP callee at {callee}; asking {base_url} to dial it", file=sys.stderr)
        response = await _dial(args, base_url, callee, headers)
        if response.status_code not in (200, 201):
            print(
                f"callbridge did not create the call: {response.status_code} {response.text}", file=sys.stderr
            )
            return 1
        call_id = response.json().get("callId")
        try:
            async with asyncio.timeout(INVITE_WAIT_S):
                invite = await phone.next_invite()
        except TimeoutError:
            print(f"callbridge created call {call_id} but sent no INVITE to {callee}", file=sys.stderr)
            return 1
        negotiated = await _accept(phone, invite, args.codec, rtp)
        if negotiated is None:
            return 1
        ending = await _converse(phone, rtp, negotiated, script, show)
        return _print_report(
            args,
            ending,
            direction="from callbridge",
            sip_call_id=invite.request.call_id,
            call_id=call_id,
            target=str(invite.request.uri),
            transport=here.transport,
            signalling=["INVITE", "180 Ringing", "200 OK", "ACK"],
            negotiated=negotiated,
        )
    finally:
        rtp.close()


async def _dial(
    args: argparse.Namespace, base_url: str, callee: str, headers: list[tuple[str, str]]
) -> httpx.Response:
    """`POST /api/agents/{agent}/calls` (or `/api/calls`) with the sip `outgoing` medium."""
    path = f"/api/agents/{args.agent}/calls" if args.agent else "/api/calls"
    outgoing: dict[str, object] = {"to": callee, "from": f"sip:callbridge@{HOST}"}
    if headers:
        outgoing["headers"] = dict(headers)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{base_url}{path}",
            json={"medium": {"sip": {"outgoing": outgoing}}},
            headers={"X-API-Key": args.api_key},
        )


async def _accept(phone: SipPhone, invite: Invite, codec: str, rtp: RtpSession) -> Negotiated | None:
    """Answer callbridge's INVITE with `codec`; None (after saying why) when the call cannot go on."""
    request: SipRequest = invite.request
    try:
        answer, negotiated = answer_offer(
            parse_sdp(request.body), [codec], HOST, rtp.local_port, secrets.randbelow(2**31)
        )
    except (SdpError, NoCommonCodec) as exc:
        refusal = response_to(request, 488)
        refusal.headers.add("Warning", f'305 simulator "{exc}"')
        await invite.transaction.respond(refusal)
        print(f"callbridge's offer has no usable {codec}: {exc}", file=sys.stderr)
        return None
    if not await phone.answer(invite, answer):
        print("callbridge never acknowledged the simulator's 200 OK (no ACK)", file=sys.stderr)
        return None
    return negotiated


# --- either direction ------------------------------------------------------------------------------


async def _converse(
    phone: SipPhone, rtp: RtpSession, negotiated: Negotiated, script: MediaScript, show: Show
) -> Ending:
    """Stream the audio until it (and the tail) is over or callbridge hangs up; BYE in the first case."""
    stream = MediaStream(rtp, negotiated, script)
    media = await stream.run(phone.hung_up, lambda progress: show(progress_line(progress)))
    if phone.hung_up.is_set():
        return Ending(media, "callbridge", None)
    answer = await phone.hang_up()
    return Ending(media, "simulator", status_line(answer) if answer is not None else None)


def _print_report(args: argparse.Namespace, ending: Ending, **call: Any) -> int:
    """Print the call's report (`call`: SipCallReport's fields but what the ending tells)."""
    report = SipCallReport(media=ending.media, ended_by=ending.ended_by, bye_answer=ending.bye_answer, **call)
    print("", file=sys.stderr)
    print(report.summary())
    if args.out:
        write_wav(args.out, report.media.played, report.sample_rate)
        print(f"  what the simulator heard: {args.out}")
    return 0
