"""`callbridge simulate twilio --agent ID ...`: one fake call with a live progress line and a report."""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.settings import Settings
from app.simulator.audio import read_wav, speech_like, write_wav
from app.simulator.twilio import CallScript, FakeTwilio, Progress, WebhookRejected


async def _imported_twilio_credentials(settings: Settings) -> tuple[str, str] | None:
    """The Twilio credentials imported into this callbridge's database, if any."""
    from app.store.db import Database
    from app.store.repositories import TelephonyConfigRepository
    from app.store.secret_box import SecretBox, load_master_secret

    db = Database(settings.resolved_database_url)
    try:
        box = SecretBox(load_master_secret(settings.secret_key, settings.data_dir))
        found = await TelephonyConfigRepository(db, box).get("twilio")
    except Exception:
        return None
    finally:
        await db.dispose()
    if found is None:
        return None
    return found[0]["accountSid"], found[0]["authToken"]


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


async def _simulate(args: argparse.Namespace) -> int:
    settings = Settings()
    base_url = args.url or settings.base_url
    if args.account_sid and args.auth_token:
        account_sid, auth_token = args.account_sid, args.auth_token
    else:
        found = await _imported_twilio_credentials(settings)
        if found is None:
            print(
                "No Twilio credentials: import them (POST /api/telephony_configs/twilio) or pass "
                "--account-sid and --auth-token.",
                file=sys.stderr,
            )
            return 2
        account_sid, auth_token = found
    audio = read_wav(args.wav, 8000) if args.wav else speech_like(3.0)
    dtmf = [(1.0 + i, digit) for i, digit in enumerate(args.dtmf)]
    script = CallScript(audio=audio, dtmf=dtmf, tail_seconds=args.tail)
    print(
        f"calling agent {args.agent} through {base_url} as Twilio ({len(audio) / 16000:.1f} s of audio)",
        file=sys.stderr,
    )
    try:
        report = await FakeTwilio(base_url, account_sid, auth_token).call(args.agent, script, _show_progress)
    except WebhookRejected as exc:
        print(f"\ncallbridge refused the call: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"\ncannot reach callbridge at {base_url}: {exc}", file=sys.stderr)
        return 1
    print("", file=sys.stderr)
    print(report.summary())
    if args.out:
        write_wav(args.out, report.played, 8000)
        print(f"  what the caller heard: {args.out}")
    return 0


def run_simulation(args: argparse.Namespace) -> int:
    return asyncio.run(_simulate(args))
