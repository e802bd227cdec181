"""A call's SIP messages on their way to sip_logs (app.sip.message_log): buffered until the call exists,
bounded per call, forgotten once the call is over."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.sip.message import SipRequest, parse_message, response_to
from app.sip.message_log import PENDING_TTL_S, SipMessageLog
from app.sip.transport import Peer
from app.store.tables import CallRow, SipMessageRow

PEER = Peer("udp", "192.0.2.7", 5060)


class StoredRows:
    """Stands in for the call event log's write-behind: what was queued."""

    def __init__(self) -> None:
        self.rows: list[SipMessageRow] = []
        self.events: list[str] = []

    def store(self, row: SipMessageRow) -> None:
        self.rows.append(row)

    def record(self, call_id: str, created: datetime, type: str, *args: Any) -> None:
        self.events.append(type)


def invite(call_id: str = "c1", body: str = "") -> SipRequest:
    message = parse_message(
        (
            "INVITE sip:bob@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKb1\r\n"
            f"From: <sip:alice@pbx>;tag=a\r\nTo: <sip:bob@pbx>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )
    assert isinstance(message, SipRequest)
    return message


def call_row(call_id: str = "call-1") -> CallRow:
    return CallRow(id=call_id, created=datetime.now(UTC))


@pytest.fixture
def stored() -> StoredRows:
    return StoredRows()


@pytest.fixture
def messages(stored: StoredRows) -> SipMessageLog:
    return SipMessageLog(stored, max_messages=3, max_text=400)  # type: ignore[arg-type]


def test_messages_of_an_invite_are_kept_until_its_call_exists_then_stored_in_order(
    messages: SipMessageLog, stored: StoredRows
) -> None:
    request = invite()
    messages.expect(request, PEER)
    messages.observe("out", response_to(request, 100), PEER)
    assert stored.rows == []
    messages.bind("c1", call_row())
    assert [(row.call_id, row.direction, row.text.split(" ")[0]) for row in stored.rows] == [
        ("call-1", "in", "INVITE"),
        ("call-1", "out", "SIP/2.0"),
    ]


def test_messages_of_other_call_ids_are_not_kept(messages: SipMessageLog, stored: StoredRows) -> None:
    messages.bind("c1", call_row())
    messages.observe("in", invite("someone-else"), PEER)
    assert stored.rows == []


def test_an_invite_that_got_no_call_is_forgotten(messages: SipMessageLog, stored: StoredRows) -> None:
    request = invite()
    messages.expect(request, PEER)
    messages.release("c1")
    messages.observe("out", response_to(request, 404), PEER)
    messages.bind("c1", call_row())
    assert stored.rows == []


def test_a_call_keeps_at_most_max_messages_and_says_so(messages: SipMessageLog, stored: StoredRows) -> None:
    messages.bind("c1", call_row())
    for _ in range(5):
        messages.observe("in", invite(), PEER)
    assert len(stored.rows) == 3 and stored.events == ["sip_logs_truncated"]


def test_a_long_message_is_cut_saying_how_much_was_left_out(
    messages: SipMessageLog, stored: StoredRows
) -> None:
    messages.bind("c1", call_row())
    messages.observe("in", invite(body="x" * 1000), PEER)
    text = stored.rows[0].text
    assert text.startswith("INVITE") and text.endswith("more characters not kept]") and len(text) < 500


async def test_a_released_call_is_still_logged_while_it_lingers(stored: StoredRows) -> None:
    messages = SipMessageLog(stored, linger_s=60)  # type: ignore[arg-type]
    messages.bind("c1", call_row())
    messages.release("c1")
    messages.observe("in", invite(), PEER)
    assert len(stored.rows) == 1


def test_an_invite_waiting_longer_than_any_call_setup_is_forgotten(stored: StoredRows) -> None:
    now = [0.0]
    messages = SipMessageLog(stored, clock=lambda: now[0])  # type: ignore[arg-type]
    messages.expect(invite("old"), PEER)
    now[0] += PENDING_TTL_S + 1
    messages.expect(invite("new"), PEER)  # waiting INVITEs are swept as new ones come
    messages.bind("old", call_row())
    assert stored.rows == []
