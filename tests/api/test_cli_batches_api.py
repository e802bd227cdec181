"""`callbridge batches create|watch` against the real app: the streamed CSV becomes a batch, API errors
become the API's code and message, and the progress counts are the batch's."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.cli_batches import create_batch, fetch_progress, watch
from app.cli_errors import CommandError

CSV = "to,from,name,metadata.crm\n+15550001,+15550002,Ada,17\n+15550003,+15550002,Grace,18\n"


@pytest.fixture
def agent_id(client: TestClient) -> str:
    response = client.post("/api/agents", json={"name": "reminders"})
    assert response.status_code == 201
    return response.json()["agentId"]


@pytest.fixture
def calls_csv(tmp_path: Path) -> Path:
    path = tmp_path / "calls.csv"
    path.write_text(CSV, encoding="utf-8")
    return path


def test_create_posts_every_row_as_a_call(client: TestClient, agent_id: str, calls_csv: Path) -> None:
    batch = create_batch(client, agent_id, calls_csv, {"maxConcurrency": 2}, "twilio")
    assert (batch["totalCount"], batch["maxConcurrency"]) == (2, 2)
    listed = client.get(f"/api/agents/{agent_id}/scheduled_batches/{batch['batchId']}/scheduled_calls")
    first = listed.json()["results"][0]
    assert first["medium"]["twilio"]["outgoing"]["to"] == "+15550001"
    assert (first["templateContext"], first["metadata"]) == ({"name": "Ada"}, {"crm": "17"})


def test_create_shows_the_apis_error_code_and_message(
    client: TestClient, agent_id: str, calls_csv: Path
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    with pytest.raises(CommandError) as raised:
        create_batch(client, agent_id, calls_csv, {"windowEnd": soon, "callsPerMinute": 1}, "twilio")
    assert str(raised.value).startswith("window_too_short: the window of 0.")
    assert "too short: 2 calls need at least 2 minutes" in str(raised.value)


def test_create_for_an_unknown_agent_says_so(client: TestClient, calls_csv: Path) -> None:
    with pytest.raises(CommandError, match="no-such-agent"):
        create_batch(client, "no-such-agent", calls_csv, {}, "twilio")


def test_a_bad_row_is_refused_before_anything_is_sent(
    client: TestClient, agent_id: str, tmp_path: Path
) -> None:
    path = tmp_path / "calls.csv"
    path.write_text(CSV + "+15550004,\n", encoding="utf-8")
    with pytest.raises(CommandError, match="line 4: 2 fields"):
        create_batch(client, agent_id, path, {}, "twilio")
    assert client.get(f"/api/agents/{agent_id}/scheduled_batches").json()["total"] == 0


def test_progress_counts_a_batch_not_yet_started(client: TestClient, agent_id: str, calls_csv: Path) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    batch = create_batch(client, agent_id, calls_csv, {"windowStart": later, "paused": True}, "twilio")
    progress = fetch_progress(client, agent_id, batch["batchId"])
    assert (progress.total, progress.dialled, progress.live, progress.expired) == (2, 0, 0, 0)
    assert progress.paused and not progress.ended


def test_progress_of_an_unknown_batch_is_an_error(client: TestClient, agent_id: str) -> None:
    with pytest.raises(CommandError, match="no scheduled batch nope"):
        fetch_progress(client, agent_id, "nope")


def test_watch_follows_a_real_batch_until_it_has_ended(
    client: TestClient, agent_id: str, calls_csv: Path
) -> None:
    batch = create_batch(client, agent_id, calls_csv, {"paused": True}, "twilio")
    url = f"/api/agents/{agent_id}/scheduled_batches/{batch['batchId']}"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert client.patch(url, json={"paused": False, "windowEnd": past}).status_code == 200
    polls = 0

    def wait(seconds: float) -> None:
        nonlocal polls
        polls += 1
        assert polls < 400, "the batch never ended"
        time.sleep(seconds)

    out = io.StringIO()
    last = watch(lambda: fetch_progress(client, agent_id, batch["batchId"]), out, 0.05, sleep=wait)
    assert (last.ended, last.expired, last.dialled) == (True, 2, 0)
    assert (
        out.getvalue().splitlines()[-1].endswith("0/2 dialled · 0 live · 0 ok · 0 failed · 2 expired · done")
    )
