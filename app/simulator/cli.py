"""`callbridge simulate twilio|telnyx|plivo|exotel ...`: one fake call, a live progress line, a report."""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from app.settings import Settings
from app.simulator.audio import read_wav, speech_like, write_wav
from app.simulator.carrier import CallReport, CallScript, Progress, ProtocolViolation, WebhookRejected
from app.simulator.exotel import FakeExotel
from app.simulator.plivo import FakePlivo
from app.simulator.telnyx import FakeTelnyx
from app.simulator.twilio import FakeTwilio

PROVIDERS = ("twilio", "telnyx", "plivo", "exotel")
#: The rate each fake provider streams at with callbridge's default config (the best it offers).
STREAM_RATES = {"twilio": 8000, "telnyx": 16000, "plivo": 16000}


class SetupError(Exception):
    """The simulated call cannot be placed; the message says what to do (exit code 2)."""


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
    parser.add_argument("--api-key", help="Exotel with --agent: an API key to create the call with")
    parser.add_argument(
        "--sample-rate", type=int, choices=(8000, 16000, 24000), default=8000, help="Exotel: ?sample-rate="
    )


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
    line = (
        f"\r  {progress.elapsed:5.1f}s  sent {progress.frames_sent:5d}  received {progress.media_received:5d}"
        f"  marks {progress.marks_returned}/{progress.marks_sent}  clears {progress.clears}"
    )
    if sys.stderr.isatty():
        sys.stderr.write(line)
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


async def _simulate(args: argparse.Namespace) -> int:
    settings = Settings()
    base_url = (args.url or settings.base_url).rstrip("/")
    rate = args.sample_rate if args.provider == "exotel" else STREAM_RATES[args.provider]
    try:
        report = await _place(args, settings, base_url, rate)
    except SetupError as exc:
        print(exc, file=sys.stderr)
        return 2
    except WebhookRejected as exc:
        print(f"\ncallbridge refused the call: {exc}", file=sys.stderr)
        return 1
    except ProtocolViolation as exc:
        print(f"\ncallbridge broke the {args.provider} protocol: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"\ncannot reach callbridge at {base_url}: {exc}", file=sys.stderr)
        return 1
    print("", file=sys.stderr)
    print(report.summary())
    if args.out:
        write_wav(args.out, report.played, report.audio_format.sample_rate)
        print(f"  what the caller heard: {args.out}")
    return 0


def run_simulation(args: argparse.Namespace) -> int:
    return asyncio.run(_simulate(args))
