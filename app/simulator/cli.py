"""`callbridge simulate twilio|telnyx|plivo|exotel|sip ...`: one fake call, a live progress line, a report.

Incoming (default): the fake provider sends callbridge a signed webhook and streams the caller. `--outbound`
(Twilio, Telnyx, Plivo): a fake provider REST API on 127.0.0.1 takes callbridge's dial request, calls back,
fetches the XML and streams the callee; callbridge's config must send its REST calls there (`apiBaseUrl`).
SIP (both directions) is a real SIP/RTP call with callbridge's SIP listener: see app.simulator.sip_caller.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from app.cli_errors import connection_failure, service_unreachable
from app.settings import Settings
from app.simulator.audio import read_wav, speech_like, write_wav
from app.simulator.carrier import (
    CallReport,
    CallScript,
    Progress,
    ProtocolViolation,
    SetupError,
    WebhookRejected,
)
from app.simulator.exotel import FakeExotel
from app.simulator.plivo import FakePlivo
from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeCall, FakeProviderApi
from app.simulator.sip_caller import add_sip_arguments, run_sip
from app.simulator.telnyx import FakeTelnyx
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio import FakeTwilio
from app.simulator.twilio_api import FakeTwilioApi

PROVIDERS = ("twilio", "telnyx", "plivo", "exotel", "sip")
OUTBOUND_PROVIDERS = ("twilio", "telnyx", "plivo")
DEFAULT_API_PORT = 8010
#: The rate each fake provider streams at with callbridge's default config (the best it offers).
STREAM_RATES = {"twilio": 8000, "telnyx": 16000, "plivo": 16000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` sub-command's options."""
    parser.add_argument("provider", choices=PROVIDERS)
    parser.add_argument("--agent", help="agent id to call (Exotel: with --api-key, a call is created)")
    parser.add_argument("--url", default=None, help="callbridge's public URL (default CALLBRIDGE_PUBLIC_URL)")
    parser.add_argument("--wav", type=Path, help="caller audio (16-bit WAV); default: 3 s of test signal")
    parser.add_argument("--out", type=Path, help="write what the caller heard to this WAV file")
    parser.add_argument("--dtmf", default="", help="keys to press, one per second from 1 s in")
    parser.add_argument("--tail", type=float, default=1.5, help="seconds to stay on after the audio")
    parser.add_argument("--account-sid", help="Twilio: default the imported config")
    parser.add_argument("--auth-id", help="Plivo: default the imported config")
    parser.add_argument("--auth-token", help="Twilio/Plivo: default the imported config")
    parser.add_argument(
        "--signing-key",
        type=Path,
        help="Telnyx: the fake Telnyx's Ed25519 private key (default DATA_DIR/simulator/telnyx-signing.key, "
        "created on first use; import its public key as the Telnyx publicKey)",
    )
    parser.add_argument("--join-url", help="Exotel: the joinUrl configured in the Voicebot applet")
    parser.add_argument(
        "--api-key", help="callbridge's API key (X-API-Key): for --outbound, and for Exotel with --agent"
    )
    outbound = parser.add_argument_group("outbound calls (callbridge dials through a fake provider REST API)")
    outbound.add_argument(
        "--outbound",
        action="store_true",
        help="serve a fake provider REST API, have callbridge dial --to through it, and play the callee "
        "(twilio, telnyx, plivo; needs --api-key); sip: be the SIP callee callbridge dials",
    )
    outbound.add_argument("--to", help="--outbound: the number callbridge dials")
    outbound.add_argument("--from", dest="from_number", help="--outbound: the number callbridge dials from")
    outbound.add_argument(
        "--api-port",
        type=int,
        default=DEFAULT_API_PORT,
        help=f"--outbound: port of the fake API on 127.0.0.1 (default {DEFAULT_API_PORT}); the provider's "
        "telephony config must have apiBaseUrl http://127.0.0.1:PORT",
    )
    outbound.add_argument(
        "--telnyx-api-key",
        help="Telnyx --outbound: the apiKey callbridge's config holds (default: the imported config)",
    )
    parser.add_argument(
        "--sample-rate", type=int, choices=(8000, 16000, 24000), default=8000, help="Exotel: ?sample-rate="
    )
    add_sip_arguments(parser)


async def _imported_config(settings: Settings, provider: str) -> dict[str, Any] | None:
    """The provider's credentials imported into this callbridge's database, if any."""
    from app.store.db import Database
    from app.store.repositories import TelephonyConfigRepository
    from app.store.secret_box import SecretBox, load_master_secret

    db = Database(settings.resolved_database_url)
    try:
        box = SecretBox(load_master_secret(settings.secret_key, settings.data_dir))
        found = await TelephonyConfigRepository(db, box).get(provider)
    except Exception:
        return None
    finally:
        await db.dispose()
    return found[0] if found else None


def telnyx_signing_key(path: Path) -> Ed25519PrivateKey:
    """The fake Telnyx's private key from `path` (raw 32 bytes, base64), created there on first use."""
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_text().strip()))
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path.write_text(base64.b64encode(raw).decode() + "\n")
    path.chmod(0o600)
    return key


async def _carrier(args: argparse.Namespace, settings: Settings, base_url: str) -> Any:
    """The fake provider to place the call with, from the options or the imported credentials."""
    imported = await _imported_config(settings, args.provider) if args.provider != "exotel" else None
    if args.provider == "twilio":
        sid = args.account_sid or (imported or {}).get("accountSid")
        token = args.auth_token or (imported or {}).get("authToken")
        if not (sid and token):
            raise SetupError("No Twilio credentials: import them (POST /api/telephony_configs/twilio) "
                             "or pass --account-sid and --auth-token.")  # fmt: skip
        return FakeTwilio(base_url, sid, token)
    if args.provider == "plivo":
        auth_id = args.auth_id or (imported or {}).get("authId")
        token = args.auth_token or (imported or {}).get("authToken")
        if not (auth_id and token):
            raise SetupError("No Plivo credentials: import them (POST /api/telephony_configs/plivo) "
                             "or pass --auth-id and --auth-token.")  # fmt: skip
        return FakePlivo(base_url, auth_id, token)
    if args.provider == "telnyx":
        key_file = args.signing_key or settings.data_dir / "simulator" / "telnyx-signing.key"
        fake = FakeTelnyx(base_url, telnyx_signing_key(key_file))
        if imported is None or imported.get("publicKey") != fake.public_key:
            verb, body = (
                ("PATCH", "")
                if imported
                else ("POST", '"apiKey": "any", "callCreationAllowAllAgents": true, ')
            )
            raise SetupError(
                "Telnyx signs with its private key, so callbridge must hold the simulator's public key:\n"
                f"  curl -X {verb} {base_url}/api/telephony_configs/telnyx -H 'X-API-Key: ...' "
                f"-H 'content-type: application/json' -d '{{{body}\"publicKey\": \"{fake.public_key}\"}}'"
            )
        return fake
    return FakeExotel()


async def _exotel_join_url(args: argparse.Namespace, base_url: str) -> str:
    if args.join_url:
        return str(args.join_url)
    if not (args.agent and args.api_key):
        raise SetupError(
            "Exotel sends no webhook: pass --join-url (a call's joinUrl), or --agent and --api-key."
        )
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{base_url}/api/agents/{args.agent}/calls",
            json={"medium": {"exotel": {}}},
            headers={"X-API-Key": args.api_key},
        )
    if response.status_code != 201:
        raise SetupError(f"callbridge did not create the call: {response.status_code} {response.text}")
    return str(response.json()["joinUrl"])


def _show_progress(progress: Progress) -> None:
    _write_progress(
        f"  {progress.elapsed:5.1f}s  sent {progress.frames_sent:5d}  received {progress.media_received:5d}"
        f"  marks {progress.marks_returned}/{progress.marks_sent}  clears {progress.clears}"
    )


def _write_progress(line: str) -> None:
    """One progress line on stderr: rewritten in place on a terminal, else one line each."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line)
    else:
        sys.stderr.write(line.strip() + "\n")
    sys.stderr.flush()


async def _place(args: argparse.Namespace, settings: Settings, base_url: str, rate: int) -> CallReport:
    fake = await _carrier(args, settings, base_url)
    audio = read_wav(args.wav, rate) if args.wav else speech_like(3.0, rate)
    dtmf = [(1.0 + i, digit) for i, digit in enumerate(args.dtmf)]
    script = CallScript(audio=audio, dtmf=dtmf, tail_seconds=args.tail, sample_rate=rate)
    print(
        f"calling through {base_url} as {args.provider} ({len(audio) / 2 / rate:.1f} s of audio)",
        file=sys.stderr,
    )
    if isinstance(fake, FakeExotel):
        join_url = await _exotel_join_url(args, base_url)
        return await fake.call(join_url, script, _show_progress, sample_rate=args.sample_rate)
    if not args.agent:
        raise SetupError(f"--agent is required for {args.provider}")
    return await fake.call(args.agent, script, _show_progress)


async def _simulate(args: argparse.Namespace, settings: Settings, base_url: str) -> int:
    if args.provider == "sip":
        return await run_sip(args, settings, base_url, _write_progress)
    if getattr(args, "outbound", False):
        return await _simulate_outbound(args, settings, base_url)
    rate = args.sample_rate if args.provider == "exotel" else STREAM_RATES[args.provider]
    report = await _place(args, settings, base_url, rate)
    print("", file=sys.stderr)
    print(report.summary())
    if args.out:
        write_wav(args.out, report.played, report.audio_format.sample_rate)
        print(f"  what the caller heard: {args.out}")
    return 0


def _error_code(body: str) -> str | None:
    """The `code` of a callbridge error body (`{"detail", "code"}`), if it is one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed.get("code") if isinstance(parsed, dict) else None


def refusal_message(error: WebhookRejected, provider: str, base_url: str) -> str:
    """What to print when callbridge refuses the simulated webhook; a refused signature says what to check."""
    message = f"callbridge refused the call: {error}"
    if error.status == 403 and _error_code(error.body) == "invalid_signature":
        message += (
            f"\nThe service refused the {provider} signature: it checks signatures against its "
            f"CALLBRIDGE_PUBLIC_URL, which must be the URL you called ({base_url}; set with --url or "
            "CALLBRIDGE_PUBLIC_URL here). If it is, the credentials differ from the ones callbridge imported."
        )
    return message


def run_simulation(args: argparse.Namespace) -> int:
    """`callbridge simulate`: the exit code (0 placed, 1 failed, 2 cannot be set up); one line per failure."""
    settings = Settings()
    base_url = (args.url or settings.base_url).rstrip("/")
    try:
        return asyncio.run(_simulate(args, settings, base_url))
    except SetupError as exc:
        print(exc, file=sys.stderr)
        return 2
    except WebhookRejected as exc:
        print(f"\n{refusal_message(exc, args.provider, base_url)}", file=sys.stderr)
        return 1
    except websockets.InvalidStatus as exc:
        print(f"\ncallbridge refused the media stream: HTTP {exc.response.status_code}", file=sys.stderr)
        return 1
    except ProtocolViolation as exc:
        print(f"\ncallbridge broke the {args.provider} protocol: {exc}", file=sys.stderr)
        return 1
    except (OSError, httpx.TransportError, websockets.InvalidHandshake) as exc:
        reason = connection_failure(exc)
        if reason is None:
            raise
        raise service_unreachable(base_url, reason) from exc


# --- outbound: callbridge dials through a fake provider REST API ----------------------------------


def check_outbound_args(args: argparse.Namespace) -> None:
    """SetupError unless the options can place an outbound simulation."""
    if args.provider not in OUTBOUND_PROVIDERS:
        raise SetupError(f"--outbound works with {', '.join(OUTBOUND_PROVIDERS)}, not {args.provider}")
    needed = {"--to": args.to, "--from": args.from_number, "--api-key": args.api_key}
    missing = [flag for flag, value in needed.items() if not value]
    if missing:
        raise SetupError(f"--outbound needs {' and '.join(missing)}")
    if not 0 < args.api_port < 65536:
        raise SetupError(f"--api-port must be a TCP port (1-65535), not {args.api_port}")


def api_base_refusal(provider: str, config: dict[str, Any], base_url: str, api_base: str) -> str | None:
    """Why the call cannot reach the fake API (with the fix), or None when the config points at it."""
    configured = str(config.get("apiBaseUrl") or "").rstrip("/")
    if configured == api_base:
        return None
    where = configured or f"the real {provider} API"
    return (
        f"callbridge's {provider} config sends its REST calls to {where}, not to the fake API at {api_base}. "
        "Point it there first (and back when done):\n"
        f"  curl -X PATCH {base_url}/api/telephony_configs/{provider} -H 'X-API-Key: ...' "
        f"-H 'content-type: application/json' -d '{{\"apiBaseUrl\": \"{api_base}\"}}'"
    )


async def _callbridge_config(base_url: str, provider: str, api_key: str) -> dict[str, Any]:
    """`GET /api/telephony_configs/{provider}` (secrets show only as `…Prefix`)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{base_url}/api/telephony_configs/{provider}", headers={"X-API-Key": api_key}
        )
    if response.status_code == 404:
        raise SetupError(
            f"callbridge has no {provider} config: import it (POST /api/telephony_configs/{provider})."
        )
    if response.status_code != 200:
        raise SetupError(
            f"callbridge refused to show its {provider} config: {response.status_code} {response.text}"
        )
    return dict(response.json())


async def _fake_api(
    args: argparse.Namespace, settings: Settings, config: dict[str, Any], base_url: str
) -> FakeProviderApi:
    """The fake provider API, holding the credentials callbridge's config will call it with."""
    imported = await _imported_config(settings, args.provider) or {}
    if args.provider == "twilio":
        sid = args.account_sid or config.get("accountSid")
        token = args.auth_token or imported.get("authToken")
        if not (sid and token):
            raise SetupError("The fake Twilio needs the auth token callbridge holds: pass --auth-token.")
        return FakeTwilioApi(sid, token)
    if args.provider == "plivo":
        auth_id = args.auth_id or config.get("authId")
        token = args.auth_token or imported.get("authToken")
        if not (auth_id and token):
            raise SetupError("The fake Plivo needs the auth token callbridge holds: pass --auth-token.")
        return FakePlivoApi(auth_id, token)
    key_file = args.signing_key or settings.data_dir / "simulator" / "telnyx-signing.key"
    api_key = args.telnyx_api_key or imported.get("apiKey")
    if not api_key:
        raise SetupError("The fake Telnyx needs the apiKey callbridge holds: pass --telnyx-api-key.")
    fake = FakeTelnyxApi(api_key, telnyx_signing_key(key_file), config.get("accountSid") or "ACtelnyx")
    known = imported.get("publicKey") or ""
    if not fake.public_key.startswith(known or str(config.get("publicKeyPrefix") or "")):
        raise SetupError(
            "Telnyx signs with its private key, so callbridge must hold the simulator's public key:\n"
            f"  curl -X PATCH {base_url}/api/telephony_configs/telnyx -H 'X-API-Key: ...' "
            f"-H 'content-type: application/json' -d '{{\"publicKey\": \"{fake.public_key}\"}}'"
        )
    return fake


async def _dial_through_callbridge(args: argparse.Namespace, base_url: str) -> httpx.Response:
    """`POST /api/agents/{agent}/calls` (or `/api/calls`) with the provider's `outgoing` medium."""
    path = f"/api/agents/{args.agent}/calls" if args.agent else "/api/calls"
    medium = {args.provider: {"outgoing": {"to": args.to, "from": args.from_number}}}
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{base_url}{path}", json={"medium": medium}, headers={"X-API-Key": args.api_key}
        )


def describe_outbound(provider: str, call: FakeCall) -> str:
    """The fake call's end, its status callbacks and XML fetches with what callbridge answered."""
    lines = [f"{provider} call {call.sid} to {call.to}: {call.end_status}"]
    if call.error:
        lines.append(f"  problem: {call.error}")
    for what, requests in (("callbacks", call.callbacks), ("XML fetches", call.fetches)):
        lines.append(f"  {what}:" if requests else f"  {what}: none")
        for sent in requests:
            status = sent.params.get("CallStatus", "")
            answer = sent.http_status if sent.http_status is not None else "no answer"
            lines.append(
                f"    {sent.event:<10} {status:<12} {sent.method} {sent.url} -> callbridge answered {answer}"
            )
    if call.transfers:
        lines.append(f"  transferred to {', '.join(call.transfers)}")
    if call.dtmf:
        lines.append(f"  DTMF sent by callbridge: {' '.join(call.dtmf)}")
    return "\n".join(lines)


async def _simulate_outbound(args: argparse.Namespace, settings: Settings, base_url: str) -> int:
    check_outbound_args(args)
    config = await _callbridge_config(base_url, args.provider, args.api_key)
    api_base = f"http://127.0.0.1:{args.api_port}"
    refusal = api_base_refusal(args.provider, config, base_url, api_base)
    if refusal:
        raise SetupError(refusal)
    fake = await _fake_api(args, settings, config, base_url)
    audio = read_wav(args.wav, 8000) if args.wav else speech_like(3.0, 8000)
    dtmf = [(1.0 + i, digit) for i, digit in enumerate(args.dtmf)]
    fake.callee = CallScript(audio=audio, dtmf=dtmf, tail_seconds=args.tail, sample_rate=8000)
    fake.on_progress = _show_progress
    try:
        await fake.start("127.0.0.1", args.api_port)
    except OSError as exc:
        print(
            f"cannot serve the fake {args.provider} API on 127.0.0.1:{args.api_port}: {exc}", file=sys.stderr
        )
        return 2
    try:
        return await _run_outbound(args, fake, base_url)
    finally:
        await fake.stop()


async def _run_outbound(args: argparse.Namespace, fake: FakeProviderApi, base_url: str) -> int:
    print(
        f"fake {args.provider} API at {fake.base_url}; asking {base_url} to dial {args.to}", file=sys.stderr
    )
    response = await _dial_through_callbridge(args, base_url)
    if response.status_code not in (200, 201):
        print(f"callbridge did not create the call: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    try:
        call = await fake.wait_for_call(timeout=30)
    except TimeoutError:
        print(f"callbridge created the call but never dialled the fake {args.provider} API", file=sys.stderr)
        return 1
    await call.ended.wait()
    print("", file=sys.stderr)
    if call.report is not None:
        print(call.report.summary())
        if args.out:
            write_wav(args.out, call.report.played, call.report.audio_format.sample_rate)
            print(f"  what the callee heard: {args.out}")
    print(describe_outbound(args.provider, call))
    return 0 if call.error is None and call.report is not None else 1
