"""The API commands' parts that need no service: where the connection comes from, `--set`, fitting a table
to the terminal, reading a call's events on from where the last read stopped."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import main
from app.cli_body import parse_value, set_field
from app.cli_calls import EventReader, print_events
from app.cli_client import Connection, resolve_connection
from app.cli_errors import CommandError
from app.cli_output import Column, table

# --- the connection ------------------------------------------------------------------------------


@pytest.fixture
def profiles(tmp_path: Path) -> dict[str, str]:
    """An environment whose profiles file has `[staging]`."""
    path = tmp_path / "profiles.toml"
    path.write_text(
        '[staging]\nurl = "https://staging.example.com"\napi_key = "staging.key"\n', encoding="utf-8"
    )
    return {"CALLBRIDGE_PROFILES_FILE": str(path)}


def test_options_come_before_the_environment() -> None:
    environ = {"CALLBRIDGE_URL": "http://env:1", "CALLBRIDGE_API_KEY": "env.key"}
    assert resolve_connection("http://opt:2", "opt.key", None, environ) == Connection(
        "http://opt:2", "opt.key"
    )


def test_a_profile_named_by_option_comes_before_the_environment(profiles: dict[str, str]) -> None:
    environ = {**profiles, "CALLBRIDGE_URL": "http://env:1", "CALLBRIDGE_API_KEY": "env.key"}
    assert resolve_connection(None, None, "staging", environ) == Connection(
        "https://staging.example.com", "staging.key"
    )


def test_the_environment_comes_before_a_profile_the_environment_names(profiles: dict[str, str]) -> None:
    environ = {**profiles, "CALLBRIDGE_PROFILE": "staging", "CALLBRIDGE_API_KEY": "env.key"}
    assert resolve_connection(None, None, None, environ) == Connection(
        "https://staging.example.com", "env.key"
    )


def test_the_profile_can_be_named_by_the_environment(profiles: dict[str, str]) -> None:
    environ = {**profiles, "CALLBRIDGE_PROFILE": "staging"}
    assert resolve_connection(None, None, None, environ) == Connection(
        "https://staging.example.com", "staging.key"
    )


def test_without_a_url_anywhere_it_is_the_local_service() -> None:
    assert resolve_connection(None, "k", None, {}).url == "http://127.0.0.1:8000"


def test_an_unknown_profile_names_the_ones_there_are(profiles: dict[str, str]) -> None:
    with pytest.raises(CommandError, match=r"no profile \[prod\] \(profiles: staging\)"):
        resolve_connection(None, None, "prod", profiles)


def test_a_missing_profiles_file_is_named(tmp_path: Path) -> None:
    environ = {"CALLBRIDGE_PROFILES_FILE": str(tmp_path / "none.toml")}
    with pytest.raises(CommandError, match=f"no profiles file at {tmp_path / 'none.toml'}"):
        resolve_connection(None, None, "staging", environ)


def test_a_misspelt_profile_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[staging]\napikey = "k"\n', encoding="utf-8")
    with pytest.raises(CommandError, match="unknown key 'apikey'"):
        resolve_connection(None, None, "staging", {"CALLBRIDGE_PROFILES_FILE": str(path)})


def test_no_key_anywhere_is_refused() -> None:
    with pytest.raises(CommandError, match="no API key: pass --api-key or set CALLBRIDGE_API_KEY"):
        resolve_connection("http://opt:2", None, None, {})


def test_an_unreachable_service_is_the_one_service_unreachable_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        assert main(["agents", "list", "--url", url, "--api-key", "k"]) == 1
    assert capsys.readouterr().err == (
        f"callbridge: cannot reach the service at {url} (connection refused)"
        " — is `callbridge serve` running?\n"
    )


# --- --set ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [("42", 42), ("true", True), ("null", None), ('["a"]', ["a"]), ('"42"', "42"), ("Ada", "Ada"), ("", "")],
)
def test_a_set_value_is_json_when_it_parses_else_text(raw: str, value: Any) -> None:
    assert parse_value(raw) == value


def test_dotted_keys_nest_beside_what_is_there() -> None:
    body: dict[str, Any] = {"callTemplate": {"systemPrompt": "Hi."}}
    set_field(body, "callTemplate.maxDuration=600s")
    assert body == {"callTemplate": {"systemPrompt": "Hi.", "maxDuration": "600s"}}


def test_a_dotted_key_through_a_value_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CommandError, match="name is not an object"):
        set_field({"name": "x"}, "name.first=Ada")


@pytest.mark.parametrize("assignment", ["name", "=x", "a..b=1"])
def test_a_set_without_key_and_value_is_refused(assignment: str) -> None:
    with pytest.raises(CommandError, match="expected KEY=VALUE"):
        set_field({}, assignment)


# --- tables --------------------------------------------------------------------------------------

COLUMNS = (Column("ID", "id", "id"), Column("NAME", "name"), Column("NOTE", "note"))
ROW = {"id": "0123456789abcdef", "name": "n" * 30, "note": "m" * 20}


def test_a_table_that_fits_is_shown_whole() -> None:
    assert table([ROW], COLUMNS, 200)[1] == f"{ROW['id']}  {ROW['name']}  {ROW['note']}"


def test_the_widest_text_column_is_shortened_first_to_fit() -> None:
    row = table([ROW], COLUMNS, 60)[1]
    assert row == f"{ROW['id']}  {'n' * 19}…  {ROW['note']}"


def test_columns_are_left_out_from_the_last_when_shortening_is_not_enough() -> None:
    header, row = table([ROW], COLUMNS, 30)
    assert (header.split(), row) == (["ID", "NAME"], f"{ROW['id']}  nnnnnnnnnnn…")


def test_the_first_column_is_shown_whole_whatever_the_width() -> None:
    assert table([ROW], COLUMNS, 5)[1] == ROW["id"]


# --- reading events on ---------------------------------------------------------------------------


class EventLog:
    """A call's events served as the API pages them (`next` only while there are more), growing."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ended = False

    def add(self, kind: str) -> None:
        self.events.append({"type": kind, "severity": "info", "callTimestamp": "1s", "text": kind})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return httpx.Response(
                200, json={"callId": "c", "ended": "2026-12-03T09:00:00Z" if self.ended else None}
            )
        start = int(request.url.params.get("cursor", "0"))
        size = int(request.url.params["pageSize"])
        page = self.events[start : start + size]
        more = start + size < len(self.events)
        nxt = f"http://elsewhere/api/calls/c/events?cursor={start + size}" if more else None
        return httpx.Response(
            200, json={"results": page, "next": nxt, "previous": None, "total": len(self.events)}
        )


def reader_of(log: EventLog) -> EventReader:
    return EventReader(httpx.Client(base_url="http://cb", transport=httpx.MockTransport(log.handle)), "c", {})


def test_a_reader_reads_each_event_once_across_pages_and_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.cli_calls.EVENTS_PAGE_SIZE", 2)
    log = EventLog()
    for kind in ("a", "b", "c"):
        log.add(kind)
    reader = reader_of(log)
    first = [e["type"] for e in reader.new_events()]
    log.add("d")
    assert (first, [e["type"] for e in reader.new_events()]) == (["a", "b", "c"], ["d"])


def test_following_stops_once_the_call_has_ended_with_its_last_events_printed() -> None:
    log = EventLog()
    log.add("created")
    polls = 0

    def end_after_two_polls(seconds: float) -> None:
        nonlocal polls
        polls += 1
        assert polls <= 2, "it kept following a call that had ended"
        if polls == 2:
            log.add("ended")
            log.ended = True

    out = io.StringIO()
    print_events(reader_of(log), out, follow=True, as_json=False, interval=1.0, sleep=end_after_two_polls)
    assert [line.split()[2] for line in out.getvalue().splitlines()[1:]] == ["created", "ended"]


def test_following_as_json_is_one_event_per_line() -> None:
    log = EventLog()
    for kind in ("created", "ended"):
        log.add(kind)
    log.ended = True
    out = io.StringIO()

    def kept_following(seconds: float) -> None:
        raise AssertionError("it kept following a call that had ended")

    print_events(reader_of(log), out, follow=True, as_json=True, interval=1.0, sleep=kept_following)
    assert [json.loads(line)["type"] for line in out.getvalue().splitlines()] == ["created", "ended"]
