"""Cold transfer by REFER: the request's headers, sipfrag bodies, and the implicit subscription's outcome."""

from __future__ import annotations

import pytest

from app.sip.custom_headers import check_custom_headers
from app.sip.dialog import Dialog, LocalAddress
from app.sip.message import NameAddr, SipRequest, SipResponse, parse_message, parse_uri, serialize
from app.sip.refer import ReferOutcome, ReferProgress, SipFrag, parse_sipfrag, refer_headers, refer_target
from app.sip.transport import Peer
from tests.unit.sip.fake_clock import FakeClock
from tests.unit.sip.test_leg import answer as answer_on
from tests.unit.sip.test_leg import new_leg, request

PBX_CONTACT = parse_uri("sip:alice@203.0.113.5:5070;transport=tcp")
REFER_CSEQ = 7


def notify(
    body: str = "SIP/2.0 200 OK",
    state: str = "active;expires=60",
    event: str = f"refer;id={REFER_CSEQ}",
    content_type: str = "message/sipfrag;version=2.0",
    cseq: int = 2,
) -> SipRequest:
    text = (
        "NOTIFY sip:callbridge@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKn1\r\n"
        "From: <sip:alice@example.com>;tag=from1\r\nTo: <sip:agent_1@192.0.2.10>;tag=ours\r\n"
        f"Call-ID: leg-1\r\nCSeq: {cseq} NOTIFY\r\nEvent: {event}\r\nSubscription-State: {state}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def answer(status: int, reason: str) -> SipResponse:
    text = (
        f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1\r\n"
        "From: <sip:agent_1@192.0.2.10>;tag=ours\r\nTo: <sip:alice@example.com>;tag=from1\r\n"
        f"Call-ID: leg-1\r\nCSeq: {REFER_CSEQ} REFER\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipResponse)
    return message


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def progress(clock: FakeClock) -> ReferProgress:
    return ReferProgress(REFER_CSEQ, clock, timeout_s=30.0)


# --- the REFER ------------------------------------------------------------------------------------------


def test_a_sip_uri_target_is_referred_to_as_given() -> None:
    assert str(refer_target("sip:desk@pbx.example.com", PBX_CONTACT)) == "sip:desk@pbx.example.com"


def test_a_phone_number_is_referred_to_at_the_far_ends_host_port_and_transport() -> None:
    target = refer_target("+14155550100", PBX_CONTACT)
    assert (target.user, target.host, target.port) == ("+14155550100", "203.0.113.5", 5070)
    assert target.params == {"user": "phone", "transport": "tcp"}


def test_the_refer_names_the_target_and_callbridge_as_the_referrer_without_a_tag() -> None:
    dialog = Dialog(
        call_id="leg-1",
        local=NameAddr(parse_uri("sip:agent_1@192.0.2.10")).with_tag("ours"),
        remote=NameAddr(parse_uri("sip:alice@example.com")).with_tag("from1"),
        remote_target=PBX_CONTACT,
        route_set=[],
        peer=Peer("tcp", "203.0.113.5", 5070),
        local_cseq=1,
        here=LocalAddress("udp", "192.0.2.10", 5060),
    )
    target = parse_uri("sip:desk@pbx.example.com")
    headers = refer_headers(target, dialog.local.uri, {"X-Reason": "sales"})
    refer = parse_message(serialize(dialog.request("REFER", headers=headers)))
    assert isinstance(refer, SipRequest)
    assert refer.method == "REFER" and refer.cseq == (2, "REFER")
    assert refer.headers.get("Refer-To") == "<sip:desk@pbx.example.com>"
    assert refer.headers.get("Referred-By") == "<sip:agent_1@192.0.2.10>"
    assert refer.headers.get("X-Reason") == "sales"


@pytest.mark.parametrize("name", ["Via", "call-id", "Refer-To", "Event", "i", "Bad Name", "X:Y"])
def test_extra_headers_may_not_set_what_callbridge_writes_or_break_the_syntax(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be set"):
        check_custom_headers({name: "x"}, "extraHeaders", {"refer-to", "event"})


def test_an_extra_header_value_must_be_one_line() -> None:
    with pytest.raises(ValueError, match="one line"):
        check_custom_headers({"X-Note": "a\r\nVia: evil"}, "extraHeaders")


# --- sipfrag -----------------------------------------------------------------------------------------------


def test_a_sipfrag_body_gives_its_status_line() -> None:
    assert parse_sipfrag(b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n") == SipFrag(180, "Ringing")


def test_a_sipfrag_status_without_a_reason_phrase_is_accepted() -> None:
    assert parse_sipfrag(b"SIP/2.0 200\r\n") == SipFrag(200, "")


@pytest.mark.parametrize(
    "body", [b"", b"INVITE sip:x@y SIP/2.0\r\n", b"SIP/2.0 99 Odd\r\n", b"HTTP/1.1 200 OK"]
)
def test_a_body_that_is_not_a_status_line_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_sipfrag(body)


# --- the implicit subscription --------------------------------------------------------------------------


def test_a_final_200_sipfrag_means_transferred(progress: ReferProgress) -> None:
    progress.answered(answer(202, "Accepted"))
    assert progress.notified(notify("SIP/2.0 100 Trying")) == 200
    assert progress.outcome is None
    assert progress.notified(notify("SIP/2.0 200 OK", state="terminated;reason=noresource")) == 200
    assert progress.outcome is not None and progress.outcome.transferred


def test_provisional_sipfrags_are_reported_as_progress(clock: FakeClock) -> None:
    seen: list[SipFrag] = []
    progress = ReferProgress(REFER_CSEQ, clock, on_progress=seen.append)
    progress.notified(notify("SIP/2.0 100 Trying"))
    progress.notified(notify("SIP/2.0 180 Ringing"))
    assert seen == [SipFrag(100, "Trying"), SipFrag(180, "Ringing")]


def test_a_refused_refer_fails_as_refused(progress: ReferProgress) -> None:
    progress.answered(answer(501, "Not Implemented"))
    assert progress.outcome == ReferOutcome(
        False, 501, "the REFER was refused: 501 Not Implemented", refused=True
    )


def test_a_failed_sipfrag_fails_without_being_a_refusal(progress: ReferProgress) -> None:
    progress.answered(answer(202, "Accepted"))
    progress.notified(notify("SIP/2.0 486 Busy Here", state="terminated"))
    assert progress.outcome == ReferOutcome(False, 486, "the target did not take the call: 486 Busy Here")


def test_a_notify_may_arrive_before_the_refers_202(progress: ReferProgress) -> None:
    assert progress.notified(notify("SIP/2.0 200 OK")) == 200
    progress.answered(answer(202, "Accepted"))
    assert progress.outcome is not None and progress.outcome.transferred


def test_no_final_notify_within_the_timeout_fails(progress: ReferProgress, clock: FakeClock) -> None:
    progress.answered(answer(202, "Accepted"))
    progress.notified(notify("SIP/2.0 100 Trying"))
    clock.advance(29.9)
    assert progress.outcome is None
    clock.advance(0.2)
    assert progress.outcome == ReferOutcome(False, 0, "no final NOTIFY within 30 s of the REFER")


def test_a_subscription_terminated_without_a_final_status_fails(progress: ReferProgress) -> None:
    progress.answered(answer(202, "Accepted"))
    assert progress.notified(notify("SIP/2.0 100 Trying", state="terminated;reason=timeout")) == 200
    assert progress.outcome is not None and not progress.outcome.transferred
    assert "without a result" in progress.outcome.text


def test_the_first_final_status_wins(progress: ReferProgress, clock: FakeClock) -> None:
    progress.notified(notify("SIP/2.0 200 OK"))
    progress.notified(notify("SIP/2.0 503 Service Unavailable", state="terminated"))
    clock.advance(60)
    assert progress.outcome is not None and progress.outcome.transferred


def test_a_notify_for_another_refer_gets_481(progress: ReferProgress) -> None:
    assert progress.notified(notify(event=f"refer;id={REFER_CSEQ + 1}")) == 481
    assert progress.outcome is None


def test_a_notify_for_another_event_package_gets_489(progress: ReferProgress) -> None:
    assert progress.notified(notify(event="presence")) == 489


def test_a_notify_whose_body_is_not_sipfrag_gets_415(progress: ReferProgress) -> None:
    assert progress.notified(notify(content_type="text/plain")) == 415
    assert progress.outcome is None


def test_a_notify_with_a_broken_sipfrag_gets_400_and_the_transfer_goes_on(progress: ReferProgress) -> None:
    assert progress.notified(notify("garbage")) == 400
    assert progress.outcome is None
    assert progress.notified(notify("SIP/2.0 200 OK")) == 200
    assert progress.outcome is not None and progress.outcome.transferred


async def test_wait_returns_the_outcome_once_decided(progress: ReferProgress) -> None:
    progress.answered(answer(603, "Decline"))
    assert (await progress.wait()).status == 603


# --- the leg routes NOTIFYs --------------------------------------------------------------------------


async def test_a_notify_without_a_refer_under_way_gets_481() -> None:
    leg, _, _ = new_leg()
    assert (await answer_on(leg, notify())).status == 481


async def test_a_notify_reaches_the_refer_under_way_and_is_answered_200(clock: FakeClock) -> None:
    leg, _, _ = new_leg()
    leg.refer = ReferProgress(REFER_CSEQ, clock)
    assert (await answer_on(leg, notify("SIP/2.0 200 OK"))).status == 200
    assert leg.refer.outcome is not None and leg.refer.outcome.transferred


async def test_the_leg_allows_notify() -> None:
    leg, _, _ = new_leg()
    options = (await answer_on(leg, request("OPTIONS", 2))).responses[-1]
    assert "NOTIFY" in ", ".join(options.headers.get_all("Allow"))
