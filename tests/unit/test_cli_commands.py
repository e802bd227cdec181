"""The `callbridge` command itself: version, API key management, and one clear line when the server or the
database cannot be reached."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.cli import main
from app.main import create_app
from app.settings import Settings
from app.simulator.carrier import WebhookRejected
from app.simulator.cli import refusal_message
from tests.conftest import make_settings


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's environment: run from an empty directory (no `.env`) on the test settings' data dir."""
    monkeypatch.chdir(tmp_path)
    for name in ("CALLBRIDGE_DATABASE_URL", "CALLBRIDGE_PUBLIC_URL", "CALLBRIDGE_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLBRIDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def cli_settings(workdir: Path) -> Settings:
    """Settings for an app sharing the CLI's database."""
    return make_settings(workdir)


@pytest.fixture
def app_client(cli_settings: Settings) -> Iterator[TestClient]:
    """The app in-process, with no API key of its own: requests carry the key under test."""
    with TestClient(create_app(cli_settings)) as client:
        yield client


def created_key(capsys: pytest.CaptureFixture[str], name: str = "me") -> str:
    assert main(["api-keys", "create", "--name", name]) == 0
    return capsys.readouterr().out.strip()


def unreachable_line(url: str) -> str:
    return (
        f"callbridge: cannot reach the service at {url} (connection refused) — is `callbridge serve` running?"
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, never listening: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"callbridge {version('callbridge')}"


def test_api_keys_list_shows_prefix_name_and_created_but_never_the_key(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = created_key(capsys, name="front-desk")
    assert main(["api-keys", "list"]) == 0
    listing = capsys.readouterr().out
    prefix = key.split(".")[0]
    [row] = [line for line in listing.splitlines() if line.startswith(prefix)]
    assert "front-desk" in row and key not in listing and key.split(".")[1] not in listing


def test_a_revoked_key_is_refused_by_the_api_at_once(
    app_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    key = created_key(capsys)
    assert app_client.get("/api/agents", headers={"X-API-Key": key}).status_code == 200
    assert main(["api-keys", "revoke", key.split(".")[0]]) == 0
    assert capsys.readouterr().out == f"revoked API key {key.split('.')[0]}\n"
    response = app_client.get("/api/agents", headers={"X-API-Key": key})
    assert response.status_code == 401 and response.json()["code"] == "invalid_api_key"
    assert main(["api-keys", "list"]) == 0
    assert key.split(".")[0] not in capsys.readouterr().out


def test_delete_is_the_same_command_as_revoke(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = created_key(capsys).split(".")[0]
    assert main(["api-keys", "delete", prefix]) == 0
    assert capsys.readouterr().out == f"revoked API key {prefix}\n"
    assert main(["api-keys", "list"]) == 0
    assert prefix not in capsys.readouterr().out


def test_revoking_an_unknown_prefix_fails_with_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api-keys", "revoke", "nosuchpf"]) == 1
    assert capsys.readouterr().err == (
        "callbridge: no API key with prefix nosuchpf (see `callbridge api-keys list`)\n"
    )


def test_simulate_against_no_server_prints_one_line_and_fails(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code = main(
        ["simulate", "twilio", "--agent", "a", "--url", url, "--account-sid", "AC1", "--auth-token", "t"]
    )
    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] == unreachable_line(url)


def test_simulate_outbound_against_no_server_prints_one_line_and_fails(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    args = ["--outbound", "--to", "+14155550100", "--from", "+14155550199", "--api-key", "k"]
    assert main(["simulate", "twilio", "--url", url, *args]) == 1
    assert capsys.readouterr().err == unreachable_line(url) + "\n"


DATABASE_COMMANDS = [["api-keys", "list"], ["migrate"], ["serve", "--port", "1"]]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_a_cli_command_on_an_unreachable_database_prints_one_line_without_the_password(
    command: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    monkeypatch.setenv("CALLBRIDGE_DATABASE_URL", f"postgresql+asyncpg://cb:hunter2@127.0.0.1:{port}/cb")
    assert main(command) == 1
    assert capsys.readouterr().err == (
        f"callbridge: cannot reach the database at postgresql+asyncpg://cb:***@127.0.0.1:{port}/cb "
        "(connection refused); check CALLBRIDGE_DATABASE_URL\n"
    )


def test_a_refused_signature_names_the_public_url_the_service_checks_against() -> None:
    refused = WebhookRejected(
        403, '{"detail": "the twilio signature does not match", "code": "invalid_signature"}'
    )
    message = refusal_message(refused, "twilio", "http://localhost:8000")
    assert "CALLBRIDGE_PUBLIC_URL, which must be the URL you called (http://localhost:8000" in message


def test_other_refusals_do_not_blame_the_public_url() -> None:
    refused = WebhookRejected(404, '{"detail": "no agent with id a", "code": "agent_not_found"}')
    assert "CALLBRIDGE_PUBLIC_URL" not in refusal_message(refused, "twilio", "http://localhost:8000")
