"""Kamailio (5.6, Debian) as a registrar and record-routing proxy with digest and no database
(reference/sip.md §3.4): users `alice`/`secret` and `bot`/`botpass`, UDP and TCP on one free loopback
port; run in the foreground (-DD -E) in its own directory and stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.sip_peers.ports import HOST, free_sip_port
from tests.sip_peers.process import PeerProcess, start_peer

MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
USERS = {"alice": "secret", "bot": "botpass"}
CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
{extra}
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483","Too Many Hops"); exit; }}
  if (!sanity_check()) exit;
  if (has_totag()) {{ if (loose_route() || is_method("ACK|BYE|CANCEL")) t_relay(); exit; }}
  if (is_method("REGISTER")) {{
    {passwords}
    if ($var(pw) == "" || !pv_www_authenticate("$fd", "$var(pw)", "0")) {{ www_challenge("$fd", "1"); exit; }}
    consume_credentials(); if (!save("location")) sl_reply_error(); exit;
  }}
  if (is_method("INVITE")) record_route();
  if (!lookup("location")) {{ sl_send_reply("404","Not Found"); exit; }}
  t_relay();
}}
"""


#: deploy/'s Kamailio, the dispatcher in front of several callbridge instances.
DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio" / "kamailio.cfg"


def dispatcher_config(workdir: Path, dispatcher_list: Path, *, port: int = 5060, extra: str = "") -> Path:
    """deploy/kamailio/kamailio.cfg in `workdir`, listening on HOST:`port` with `dispatcher_list`; `extra`
    appended."""
    text = DEPLOY_CONFIG.read_text()
    text = text.replace("/etc/kamailio/dispatcher.list", str(dispatcher_list))
    text = text.replace("!LISTEN_ADDR!0.0.0.0!", f"!LISTEN_ADDR!{HOST}!")
    text = text.replace("!LISTEN_PORT!5060!", f"!LISTEN_PORT!{port}!")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "kamailio.cfg"
    path.write_text(text + extra)
    return path


@dataclass
class Kamailio:
    port: int
    peer: PeerProcess

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def user_passwords(users: dict[str, str]) -> str:
    """The config lines setting $var(pw) to the REGISTERing user's password ("" for anyone else)."""
    return '$var(pw) = "";\n    ' + "\n    ".join(
        f'if ($fU == "{user}") $var(pw) = "{password}";' for user, password in users.items()
    )


def write_config(workdir: Path, port: int, passwords: str, extra: str = "") -> Path:
    """kamailio.cfg in `workdir`, checked with `kamailio -c` (ValueError with its output if refused)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "kamailio.cfg"
    text = CONFIG.format(host=HOST, port=port, modules=MODULES, passwords=passwords, extra=extra)
    path.write_text(text)
    check = subprocess.run(["kamailio", "-f", str(path), "-c"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise ValueError(f"kamailio -c refused the config:\n{check.stderr[-2000:]}")
    return path


@contextlib.asynccontextmanager
async def kamailio(
    workdir: Path, *, passwords: str | None = None, extra: str = "", ready_within: float = 10.0
) -> AsyncIterator[Kamailio]:
    """Kamailio on a free loopback port (USERS, unless `passwords` sets $var(pw) otherwise; `extra` config
    lines after the module parameters), ready once its TCP listener accepts; stopped on the way out."""
    port = free_sip_port()
    config = write_config(workdir, port, passwords or user_passwords(USERS), extra)
    async with running_kamailio(workdir, config, port, ready_within) as running:
        yield running


@contextlib.asynccontextmanager
async def running_kamailio(
    workdir: Path, config: Path, port: int, ready_within: float = 10.0
) -> AsyncIterator[Kamailio]:
    """Kamailio in the foreground with `config` (listening on HOST:`port`), ready once its TCP listener
    accepts; stopped on the way out."""
    argv = ["kamailio", "-f", str(config), "-P", str(workdir / "kamailio.pid"), "-w", str(workdir)]
    argv += ["-Y", str(workdir), "-DD", "-E"]
    peer = await start_peer("kamailio", argv, workdir)
    try:
        await _accepting(port, peer, ready_within)
        yield Kamailio(port, peer)
    finally:
        await peer.stop()


async def _accepting(port: int, peer: PeerProcess, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if not peer.running or time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not start:\n{peer.output()[-2000:]}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
