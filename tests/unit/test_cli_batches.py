"""`callbridge batches create|watch`: the CSV's columns as calls, its errors, the body, the progress lines."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app import cli_batches
from app.cli import main
from app.cli_batches import (
    BODY_CHUNK_BYTES,
    Progress,
    batch_body,
    check_calls,
    progress_line,
    read_calls,
    watch,
)
from app.cli_errors import CommandError

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def csv_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calls.csv"
    path.write_text(text, encoding="utf-8")
    return path


def calls_of(tmp_path: Path, text: str, medium: str = "twilio") -> list[dict[str, Any]]:
    return list(read_calls(csv_file(tmp_path, text), medium))


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(CommandError) as raised:
        check_calls(csv_file(tmp_path, text), "twilio")
    return str(raised.value)


def test_to_and_from_go_to_the_chosen_mediums_outgoing(tmp_path: Path) -> None:
    [call] = calls_of(tmp_path, "to,from\n+15550001,+15550002\n", medium="telnyx")
    assert call == {"medium": {"telnyx": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}}


def test_metadata_columns_go_to_metadata_and_the_rest_to_template_context(tmp_path: Path) -> None:
    [call] = calls_of(tmp_path, "name,to,metadata.crm,from,timezone\nAda,+1555,42,+1556,Europe/London\n")
    assert call["metadata"] == {"crm": "42"}
    assert call["templateContext"] == {"name": "Ada", "timezone": "Europe/London"}


def test_a_timezone_column_is_also_the_call_s_timezone(tmp_path: Path) -> None:
    [call, without] = calls_of(tmp_path, "to,from,timezone\n+1555,+1556,Asia/Tokyo\n+1557,+1556,\n")
    assert call["timezone"] == "Asia/Tokyo" and "timezone" not in without


def test_an_unknown_timezone_is_reported_with_its_line_number(tmp_path: Path) -> None:
    message = refusal(tmp_path, "to,from,timezone\n+1555,+1556,UTC\n+1557,+1556,Mars/Base\n")
    assert message.endswith("calls.csv line 3: `Mars/Base` is not an IANA timezone (e.g. America/New_York)")


def test_a_quoted_field_keeps_its_commas_and_newlines(tmp_path: Path) -> None:
    [call] = calls_of(tmp_path, 'to,from,note\n+1555,+1556,"late, again\nsecond line"\n')
    assert call["templateContext"] == {"note": "late, again\nsecond line"}


def test_blank_lines_and_a_byte_order_mark_are_ignored(tmp_path: Path) -> None:
    assert len(calls_of(tmp_path, "\ufeffto,from\n+1555,+1556\n\n+1557,+1556\n")) == 2


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    message = refusal(tmp_path, "to,caller\n+1555,+1556\n")
    assert "no `from` column" in message and "to, caller" in message


def test_an_empty_to_is_reported_with_its_line_number(tmp_path: Path) -> None:
    message = refusal(tmp_path, "to,from\n+1555,+1556\n\n ,+1556\n")
    assert message.endswith("calls.csv line 4: empty `to`")


def test_a_row_with_too_many_fields_is_reported_with_its_line_number(tmp_path: Path) -> None:
    assert refusal(tmp_path, "to,from\n+1555,+1556,extra\n").endswith("line 2: 3 fields, the header has 2")


def test_a_repeated_column_is_refused(tmp_path: Path) -> None:
    assert "`name` appears twice" in refusal(tmp_path, "to,from,name,name\n+1,+2,a,b\n")


def test_a_header_without_rows_is_refused(tmp_path: Path) -> None:
    assert "no calls" in refusal(tmp_path, "to,from\n")


def test_check_calls_counts_the_rows(tmp_path: Path) -> None:
    assert check_calls(csv_file(tmp_path, "to,from\n+1,+2\n+3,+4\n+5,+6\n"), "plivo") == 3


def test_the_body_is_the_fields_and_every_call_in_order() -> None:
    calls = [{"n": n} for n in range(3)]
    body = b"".join(batch_body({"windowEnd": "2026-12-03T17:00:00+00:00"}, iter(calls)))
    assert orjson.loads(body) == {"windowEnd": "2026-12-03T17:00:00+00:00", "calls": calls}
    assert orjson.loads(b"".join(batch_body({}, iter(calls)))) == {"calls": calls}


def test_the_body_comes_in_bounded_pieces_while_the_calls_are_read() -> None:
    read = 0

    def calls() -> Iterator[dict[str, Any]]:
        nonlocal read
        for n in range(20_000):
            read += 1
            yield {"templateContext": {"n": n, "pad": "x" * 40}}

    pieces = batch_body({}, calls())
    first = next(pieces)
    assert BODY_CHUNK_BYTES <= len(first) < 2 * BODY_CHUNK_BYTES
    assert read < 20_000
    assert all(len(piece) < 2 * BODY_CHUNK_BYTES for piece in pieces)


# --- watch ---------------------------------------------------------------------------------------


def progress(
    succeeded: int = 0, failed: int = 0, expired: int = 0, live: int = 0, *, ended: bool = False, **kw: Any
) -> Progress:
    fields: dict[str, Any] = {"total": 10, "paused": False, "window_end": None, **kw}
    return Progress(succeeded=succeeded, failed=failed, expired=expired, live=live, ended=ended, **fields)


class FakeBatch:
    """Answers each poll with the next progress, and moves a fake clock on each sleep."""

    def __init__(self, *states: Progress) -> None:
        self.states = list(states)
        self.seconds = 0.0
        self.sleeps: list[float] = []

    def poll(self) -> Progress:
        return self.states.pop(0)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.seconds += seconds

    def watch(self, out: io.StringIO) -> Progress:
        return watch(
            self.poll,
            out,
            5.0,
            sleep=self.sleep,
            clock=lambda: self.seconds,
            wall=lambda: NOW + timedelta(seconds=self.seconds),
        )


def test_watch_prints_one_line_per_change_until_the_batch_has_ended() -> None:
    batch = FakeBatch(progress(), progress(), progress(2, live=2), progress(9, 1, ended=True))
    out = io.StringIO()
    last = batch.watch(out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and last.ended
    assert lines[1].startswith("[####................] 2/10 dialled · 2 live · 2 ok · 0 failed")
    assert lines[2] == "[####################] 10/10 dialled · 0 live · 9 ok · 1 failed · 0 expired · done"
    assert batch.sleeps == [5.0, 5.0, 5.0]


def test_watch_estimates_the_end_from_the_pace_it_saw() -> None:
    batch = FakeBatch(progress(), progress(2), progress(10, ended=True))
    out = io.StringIO()
    batch.watch(out)
    # 2 calls in 5 s: the 8 left take 20 s
    assert out.getvalue().splitlines()[1].endswith("· done in 20s")


def test_the_window_end_is_the_eta_when_it_comes_before_done() -> None:
    line = progress_line(progress(2, window_end=NOW + timedelta(minutes=3)), 0.01, NOW)
    assert line.endswith("· window ends in 3m00s")


def test_a_paused_batch_says_so() -> None:
    assert progress_line(progress(paused=True), None, NOW).endswith("· ETA ? · paused")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def terminal_columns(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    size = os.terminal_size((columns, 24))
    monkeypatch.setattr(cli_batches.shutil, "get_terminal_size", lambda: size)


def test_watch_redraws_one_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal_columns(monkeypatch, 200)
    out = Terminal()
    FakeBatch(progress(), progress(1), progress(10, ended=True)).watch(out)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("done\x1b[K\n")


def test_the_redrawn_line_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal_columns(monkeypatch, 40)
    out = Terminal()
    FakeBatch(progress(10, ended=True)).watch(out)
    assert out.getvalue() == "\r[####################] 10/10 dialled · \x1b[K\n"


# --- the commands --------------------------------------------------------------------------------


def test_an_unreachable_service_is_one_line_naming_its_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = csv_file(tmp_path, "to,from\n+1,+2\n")
    argv = ["batches", "create", "--agent", "a", "--api-key", "k", "--url", "http://127.0.0.1:1", str(path)]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "callbridge: cannot reach the service at http://127.0.0.1:1 (connection refused)"
        " — is `callbridge serve` running?\n"
    )


def test_no_api_key_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALLBRIDGE_API_KEY", raising=False)
    assert main(["batches", "watch", "b", "--agent", "a"]) == 1
    assert "pass --api-key or set CALLBRIDGE_API_KEY" in capsys.readouterr().err


def test_create_prints_the_batch_id_and_total_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[httpx.Request] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json={"batchId": "b-1", "totalCount": 2})

    monkeypatch.setenv("CALLBRIDGE_API_KEY", "the-key")
    monkeypatch.setattr(
        cli_batches,
        "api_client",
        lambda args: httpx.Client(
            base_url="http://cb", headers={"X-API-Key": "the-key"}, transport=httpx.MockTransport(service)
        ),
    )
    assert (
        main(["batches", "create", "--agent", "a", str(csv_file(tmp_path, "to,from\n+1,+2\n+3,+4\n"))]) == 0
    )
    assert capsys.readouterr().out == "batchId     b-1\ntotalCount  2\n"
    assert sent[0].url.path == "/api/agents/a/scheduled_batches"


def test_calling_hours_and_a_timezone_are_sent_as_the_batch_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[dict[str, Any]] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(orjson.loads(request.read()))
        return httpx.Response(201, json={"batchId": "b-1", "totalCount": 1})

    monkeypatch.setenv("CALLBRIDGE_API_KEY", "the-key")
    monkeypatch.setattr(
        cli_batches,
        "api_client",
        lambda args: httpx.Client(base_url="http://cb", transport=httpx.MockTransport(service)),
    )
    csv_path = str(csv_file(tmp_path, "to,from\n+1,+2\n"))
    options = ["--calling-hours", "09:00-20:00", "--timezone", "Europe/Paris"]
    assert main(["batches", "create", "--agent", "a", *options, csv_path]) == 0
    assert sent[0]["callingHours"] == {"start": "09:00", "end": "20:00"}
    assert sent[0]["timezone"] == "Europe/Paris"


@pytest.mark.parametrize("option", [["--calling-hours", "0900"], ["--timezone", "Mars/Base"]])
def test_malformed_calling_hours_or_timezone_options_are_refused(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["batches", "create", "--agent", "a", *option, "calls.csv"])
    assert exited.value.code == 2


def test_a_window_without_a_utc_offset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["batches", "create", "--agent", "a", "--window-end", "2026-12-03T17:00", "calls.csv"])
    assert exited.value.code == 2
    assert "needs a UTC offset, e.g. 2026-12-03T17:00Z" in capsys.readouterr().err
