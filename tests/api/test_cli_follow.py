"""`callbridge calls events ID --follow` against a real server: it keeps printing until the call ends, then
exits by itself."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import API_KEY, RunningServer, wait_for


async def test_follow_prints_the_end_of_a_call_it_was_tailing_and_exits(
    server: RunningServer, tmp_path: Path
) -> None:
    async with server.api() as api:
        call_id = (await api.post("/api/calls", json={})).json()["callId"]
    output = tmp_path / "events.txt"
    argv = ["calls", "events", call_id, "--follow", "--url", server.base_url, "--api-key", API_KEY]
    env = {**os.environ, "COLUMNS": "120"}
    for name in ("CALLBRIDGE_URL", "CALLBRIDGE_API_KEY", "CALLBRIDGE_PROFILE"):
        env.pop(name, None)
    with output.open("wb") as out:
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", *argv, stdout=out, stderr=out, env=env
        )
    try:

        async def header_printed() -> bool:  # printed once the first read of the events is in
            return output.read_text().lstrip().startswith("AT")

        await wait_for(header_printed, within=30)
        assert command.returncode is None, output.read_text()
        async with server.api() as api:
            hung_up = await api.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
            assert hung_up.status_code == 204
        exit_code = await asyncio.wait_for(command.wait(), timeout=30)
    finally:
        if command.returncode is None:
            command.kill()
            await command.wait()
    _, *events = output.read_text().splitlines()
    assert exit_code == 0
    assert [line.split()[1:3] for line in events] == [["info", "ended"]]
