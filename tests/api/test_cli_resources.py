"""`callbridge agents|calls|configs|sip|batches|webhooks ...` against the app in-process: what each verb
sends, what it prints for people and for scripts, and the one line each failure is."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from app import cli_client
from app.cli import main
from tests.conftest import API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Run]


class AppTransport(httpx.BaseTransport):
    """Hands the CLI's requests to the app the `client` fixture runs (its lifespan started), so the CLI's
    own httpx client, headers and all, is what is tested."""

    def __init__(self, app_client: TestClient) -> None:
        self.app_client = app_client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
        answer = self.app_client.request(
            request.method, request.url.raw_path.decode(), headers=headers, content=request.read()
        )
        return httpx.Response(
            answer.status_code, headers=answer.headers.multi_items(), content=answer.content
        )


@pytest.fixture
def cli(client: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`cli("agents", "list")`: the command run in-process against the app, with the key from the
    environment (as a user would set it) and a 120-column terminal."""
    monkeypatch.setattr(
        cli_client,
        "open_client",
        lambda connection: httpx.Client(
            base_url=connection.url, headers={"X-API-Key": connection.api_key}, transport=AppTransport(client)
        ),
    )
    for name in ("CALLBRIDGE_URL", "CALLBRIDGE_PROFILE", "CALLBRIDGE_PROFILES_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLBRIDGE_API_KEY", API_KEY)
    monkeypatch.setenv("COLUMNS", "120")

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def new_agent(client: TestClient, name: str = "front-desk", **template: Any) -> str:
    response = client.post("/api/agents", json={"name": name, "callTemplate": template})
    assert response.status_code == 201, response.text
    return str(response.json()["agentId"])


def body_file(tmp_path: Path, body: dict[str, Any]) -> str:
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    return str(path)


# --- list ----------------------------------------------------------------------------------------


def test_list_prints_a_table_with_every_id_in_full(cli: Cli, client: TestClient) -> None:
    ids = [new_agent(client, name) for name in ("front-desk", "reminders")]
    run = cli("agents", "list")
    header, *rows = run.out.splitlines()
    assert header.split() == ["AGENT_ID", "NAME", "CREATED", "CALLS"]
    assert [row.split()[:2] for row in rows] == [[ids[1], "reminders"], [ids[0], "front-desk"]]


def test_a_narrow_terminal_shortens_text_columns_never_ids(
    cli: Cli, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_id = new_agent(client, "a name far too long for a narrow terminal to show whole")
    monkeypatch.setenv("COLUMNS", "80")
    _, row = cli("agents", "list").out.splitlines()
    assert len(row) <= 80 and row.startswith(agent_id + "  ") and "…" in row


def test_list_json_is_the_apis_results_as_one_array(cli: Cli, client: TestClient) -> None:
    for name in ("a", "b"):
        new_agent(client, name)
    assert cli("agents", "list", "--json").json() == client.get("/api/agents").json()["results"]


def test_list_follows_the_next_cursors_across_pages(cli: Cli, client: TestClient) -> None:
    ids = [new_agent(client, str(n)) for n in range(5)]
    listed = cli("agents", "list", "--page-size", "2", "--json").json()
    assert [agent["agentId"] for agent in listed] == ids[::-1]


def test_list_stops_at_the_limit_and_says_how_many_there_are(cli: Cli, client: TestClient) -> None:
    for n in range(5):
        new_agent(client, str(n))
    run = cli("agents", "list", "--limit", "3", "--page-size", "2")
    assert len(run.out.splitlines()) == 1 + 3
    assert run.err == "3 of 5 agents shown (--limit N for more)\n"


def test_an_empty_list_says_so_on_stderr(cli: Cli) -> None:
    run = cli("webhooks", "list")
    assert (run.code, run.out, run.err) == (0, "", "no webhooks\n")


def test_calls_list_takes_the_apis_agent_filter(cli: Cli, client: TestClient) -> None:
    mine, other = new_agent(client, "mine"), new_agent(client, "other")
    call = client.post(f"/api/agents/{mine}/calls", json={}).json()
    client.post(f"/api/agents/{other}/calls", json={})
    listed = cli("calls", "list", "--agent", mine, "--json").json()
    assert [c["callId"] for c in listed] == [call["callId"]]


# --- get -----------------------------------------------------------------------------------------


def test_get_prints_a_line_per_field_nested_keys_dotted(cli: Cli, client: TestClient) -> None:
    agent_id = new_agent(client, systemPrompt="You are brief.")
    lines = cli("agents", "get", agent_id).out.splitlines()
    fields = dict(line.split(maxsplit=1) for line in lines)
    assert fields["agentId"] == agent_id
    assert fields["callTemplate.systemPrompt"] == "You are brief."
    assert fields["statistics.calls"] == "0"


def test_get_json_is_the_apis_object(cli: Cli, client: TestClient) -> None:
    agent_id = new_agent(client)
    assert cli("agents", "get", agent_id, "--json").json() == client.get(f"/api/agents/{agent_id}").json()


def test_a_single_object_resource_is_got_without_an_id(cli: Cli, client: TestClient) -> None:
    assert cli("sip", "get", "--json").json() == client.get("/api/sip").json()


# --- create --------------------------------------------------------------------------------------


def test_create_sends_the_body_from_a_file(cli: Cli, client: TestClient, tmp_path: Path) -> None:
    path = body_file(tmp_path, {"name": "front-desk", "callTemplate": {"maxDuration": "600s"}})
    created = cli("agents", "create", "--file", path, "--json").json()
    stored = client.get(f"/api/agents/{created['agentId']}").json()
    assert (stored["name"], stored["callTemplate"]["maxDuration"]) == ("front-desk", "600s")


def test_create_reads_the_body_from_stdin_for_a_dash(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"name": "from-stdin"}')))
    assert cli("agents", "create", "--file", "-", "--json").json()["name"] == "from-stdin"


def test_set_pairs_build_the_body_nested_by_their_dotted_keys(cli: Cli) -> None:
    created = cli(
        "agents", "create", "--set", "name=front-desk", "--set", "callTemplate.systemPrompt=You are brief.",
        "--json",
    ).json()  # fmt: skip
    assert (created["name"], created["callTemplate"]["systemPrompt"]) == ("front-desk", "You are brief.")


def test_set_pairs_apply_over_the_file(cli: Cli, tmp_path: Path) -> None:
    path = body_file(tmp_path, {"name": "from-file", "callTemplate": {"systemPrompt": "Hi."}})
    created = cli("agents", "create", "--file", path, "--set", "name=from-set", "--json").json()
    assert (created["name"], created["callTemplate"]["systemPrompt"]) == ("from-set", "Hi.")


def test_create_prints_the_created_object_a_line_per_field(cli: Cli) -> None:
    lines = cli("agents", "create", "--set", "name=front-desk").out.splitlines()
    fields = dict(line.split(maxsplit=1) for line in lines)
    assert fields["name"] == "front-desk" and fields["callTemplate.maxDuration"] == "3600s"


def test_calls_create_with_an_agent_starts_a_call_from_its_template(cli: Cli, client: TestClient) -> None:
    agent_id = new_agent(client, systemPrompt="Hello {{name}}.")
    call = cli("calls", "create", "--agent", agent_id, "--set", "templateContext.name=Ada", "--json").json()
    assert (call["agentId"], call["systemPrompt"]) == (agent_id, "Hello Ada.")


def test_configs_create_imports_credentials_under_the_providers_name(cli: Cli, client: TestClient) -> None:
    run = cli(
        "configs", "create", "twilio", "--set", f"accountSid={TWILIO_ACCOUNT_SID}",
        "--set", f"authToken={TWILIO_AUTH_TOKEN}",
    )  # fmt: skip
    assert run.code == 0, run.err
    assert client.get("/api/telephony_configs/twilio").json()["accountSid"] == TWILIO_ACCOUNT_SID


def test_batches_create_from_a_body_file_posts_it_under_the_agent(
    cli: Cli, client: TestClient, tmp_path: Path
) -> None:
    agent_id = new_agent(client)
    outgoing = {"medium": {"twilio": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}}
    path = body_file(tmp_path, {"paused": True, "calls": [outgoing, outgoing]})
    batch = cli("batches", "create", "--agent", agent_id, "--file", path, "--json").json()
    assert (batch["agentId"], batch["totalCount"], batch["paused"]) == (agent_id, 2, True)


# --- update, delete ------------------------------------------------------------------------------


def test_update_changes_only_the_fields_given(cli: Cli, client: TestClient) -> None:
    agent_id = new_agent(client, "front-desk", systemPrompt="Long.")
    run = cli("agents", "update", agent_id, "--set", "callTemplate.systemPrompt=Short.")
    assert run.code == 0, run.err
    stored = client.get(f"/api/agents/{agent_id}").json()
    assert (stored["name"], stored["callTemplate"]["systemPrompt"]) == ("front-desk", "Short.")


def test_an_update_with_no_fields_is_refused_before_any_request(cli: Cli, client: TestClient) -> None:
    run = cli("agents", "update", new_agent(client))
    assert (run.code, run.err) == (
        1,
        "callbridge: nothing to change: give the fields with --set KEY=VALUE or --file PATH\n",
    )


def test_a_batch_is_paused_by_an_update_under_its_agent(cli: Cli, client: TestClient) -> None:
    agent_id = new_agent(client)
    outgoing = {"medium": {"twilio": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}}
    batch = client.post(f"/api/agents/{agent_id}/scheduled_batches", json={"calls": [outgoing]}).json()
    updated = cli(
        "batches", "update", batch["batchId"], "--agent", agent_id, "--set", "paused=true", "--json"
    )
    assert updated.json()["paused"] is True


def test_delete_deletes_and_says_so(cli: Cli, client: TestClient) -> None:
    agent_id = new_agent(client)
    run = cli("agents", "delete", agent_id)
    assert (run.code, run.out) == (0, f"deleted agent {agent_id}\n")
    assert client.get(f"/api/agents/{agent_id}").status_code == 404


# --- calls: hang up, events ----------------------------------------------------------------------


def test_hangup_ends_a_live_call(cli: Cli, client: TestClient) -> None:
    call_id = client.post("/api/calls", json={}).json()["callId"]
    assert cli("calls", "hangup", call_id).out == f"hung up call {call_id}\n"
    assert client.get(f"/api/calls/{call_id}").json()["endReason"] == "unjoined"


def test_events_prints_the_calls_log_without_following(cli: Cli, client: TestClient) -> None:
    call_id = client.post("/api/calls", json={}).json()["callId"]
    client.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
    header, *events = cli("calls", "events", call_id).out.splitlines()
    assert header.split() == ["AT", "SEVERITY", "TYPE", "TEXT"]
    assert [line.split()[1:3] for line in events] == [["info", "ended"]]


def test_events_json_is_the_apis_events_as_one_array(cli: Cli, client: TestClient) -> None:
    call_id = client.post("/api/calls", json={}).json()["callId"]
    client.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
    expected = client.get(f"/api/calls/{call_id}/events").json()["results"]
    assert cli("calls", "events", call_id, "--json").json() == expected


# --- connection settings and failures ------------------------------------------------------------


def test_a_profile_gives_the_key_the_options_and_environment_leave_out(
    cli: Cli, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'[local]\nurl = "http://127.0.0.1:8000"\napi_key = "{API_KEY}"\n', encoding="utf-8")
    monkeypatch.setenv("CALLBRIDGE_PROFILES_FILE", str(profiles))
    monkeypatch.delenv("CALLBRIDGE_API_KEY")
    agent_id = new_agent(client)
    assert cli("agents", "get", agent_id, "--profile", "local", "--json").json()["agentId"] == agent_id


def test_a_refused_api_key_is_the_apis_code_and_message(cli: Cli) -> None:
    run = cli("agents", "list", "--api-key", "not-a-key")
    assert (run.code, run.out, run.err) == (
        1,
        "",
        "callbridge: invalid_api_key: the X-API-Key is not valid\n",
    )


def test_an_unknown_id_is_the_apis_not_found_line(cli: Cli) -> None:
    run = cli("agents", "get", "no-such-agent")
    assert (run.code, run.err) == (1, "callbridge: agent_not_found: no agent with id no-such-agent\n")


def test_an_invalid_body_is_the_apis_validation_line(cli: Cli) -> None:
    run = cli("webhooks", "create", "--set", "url=ftp://example.com", "--set", 'events=["call.ended"]')
    assert run.code == 1 and run.err.startswith("callbridge: invalid_url: ")


def test_batches_create_from_a_csv_takes_set_fields_beside_its_calls(
    cli: Cli, client: TestClient, tmp_path: Path
) -> None:
    agent_id = new_agent(client)
    csv_path = tmp_path / "calls.csv"
    csv_path.write_text("to,from\n+15550001,+15550002\n", encoding="utf-8")
    run = cli("batches", "create", "--agent", agent_id, "--set", "paused=true", str(csv_path), "--json")
    assert (run.json()["paused"], run.json()["totalCount"]) == (True, 1)
