"""Session timers (RFC 4028): what is negotiated, and when a refresh or a BYE is due (on a fake clock)."""

from __future__ import annotations

import pytest

from app.sip.message import SipParseError, SipRequest, SipResponse, parse_message
from app.sip.session_timer import (
    IntervalTooSmall,
    SessionExpires,
    SessionInterval,
    SessionTimer,
    accepted_interval,
    answer_interval,
    offer_headers,
    parse_session_expires,
    refusal,
    retry_after_too_small,
)
from tests.unit.sip.fake_clock import FakeClock


def invite(*headers: str) -> SipRequest:
    text = (
        "INVITE sip:agent_1@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKst1\r\n"
        "From: <sip:alice@example.com>;tag=f1\r\nTo: <sip:agent_1@192.0.2.10>\r\nCall-ID: st-1\r\n"
        "CSeq: 1 INVITE\r\n" + "".join(f"{h}\r\n" for h in headers) + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def ok_with(*headers: str) -> SipResponse:
    response = SipResponse(200, "OK", invite().headers.copy())
    for header in headers:
        name, _, value = header.partition(":")
        response.headers.add(name, value.strip())
    return response


# --- the header ---------------------------------------------------------------------------------


def test_session_expires_parses_the_interval_and_the_refresher() -> None:
    assert parse_session_expires("1800;refresher=UAS") == SessionExpires(1800, "uas")
    assert parse_session_expires(" 90 ") == SessionExpires(90, None)


@pytest.mark.parametrize("value", ["", "abc", "-5", "90;refresher=proxy"])
def test_a_malformed_session_expires_is_refused(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_session_expires(value)


# --- as the UAS of a request ---------------------------------------------------------------------


def test_a_request_without_session_expires_or_timer_support_gets_no_session_timer() -> None:
    assert answer_interval(invite()) is None


def test_the_uacs_refresher_choice_is_copied_into_the_answer() -> None:
    answered = answer_interval(invite("Supported: timer", "Session-Expires: 1800;refresher=uas"))
    assert answered is not None
    interval, headers = answered
    assert interval == SessionInterval(1800, we_refresh=True)
    assert headers.get("Session-Expires") == "1800;refresher=uas"


def test_without_a_refresher_a_uac_that_supports_timers_refreshes_and_the_answer_requires_timer() -> None:
    answered = answer_interval(invite("Supported: timer", "Session-Expires: 600"))
    assert answered is not None
    interval, headers = answered
    assert interval == SessionInterval(600, we_refresh=False)
    assert headers.get("Session-Expires") == "600;refresher=uac" and headers.get("Require") == "timer"


def test_a_uac_without_timer_support_leaves_the_refreshing_to_us_and_gets_no_require() -> None:
    answered = answer_interval(invite("Session-Expires: 1800"))  # inserted by a proxy, say
    assert answered is not None
    interval, headers = answered
    assert interval.we_refresh and headers.get("Session-Expires") == "1800;refresher=uas"
    assert "Require" not in headers


def test_a_uac_without_timer_support_cannot_be_made_the_refresher() -> None:
    answered = answer_interval(invite("Session-Expires: 1800;refresher=uac"))
    assert answered is not None and answered[0].we_refresh


def test_supported_timer_alone_gets_our_default_interval_refreshed_by_the_uac() -> None:
    answered = answer_interval(invite("Supported: timer"))
    assert answered is not None
    assert answered[0] == SessionInterval(1800, we_refresh=False)


def test_an_interval_below_our_minimum_is_refused_422_with_min_se_90() -> None:
    request = invite("Supported: timer", "Session-Expires: 60")
    with pytest.raises(IntervalTooSmall):
        answer_interval(request)
    response = refusal(request)
    assert response is not None and response.status == 422 and response.headers.get("Min-SE") == "90"


def test_the_requests_own_min_se_is_respected_in_the_422() -> None:
    response = refusal(invite("Supported: timer", "Session-Expires: 100", "Min-SE: 120"))
    assert response is not None and response.headers.get("Min-SE") == "120"


def test_a_short_interval_from_a_uac_without_timer_support_is_raised_to_our_minimum() -> None:
    answered = answer_interval(invite("Session-Expires: 30"))  # it could not retry after a 422
    assert answered is not None and answered[0].seconds == 90


def test_a_malformed_session_expires_is_answered_400() -> None:
    response = refusal(invite("Session-Expires: soon"))
    assert response is not None and response.status == 400


def test_an_acceptable_interval_is_no_refusal() -> None:
    assert refusal(invite("Supported: timer", "Session-Expires: 90")) is None


# --- as the UAC ----------------------------------------------------------------------------------


def test_our_invite_offers_timers_for_1800_s_with_min_se_90() -> None:
    headers = offer_headers()
    assert headers.get("Supported") == "timer"
    assert headers.get("Session-Expires") == "1800" and headers.get("Min-SE") == "90"


def test_after_a_422_the_invite_is_sent_again_with_its_min_se() -> None:
    request = invite(*(f"{name}: {value}" for name, value in offer_headers(100).items()))
    too_small = SipResponse(422, "Session Interval Too Small", request.headers.copy())
    too_small.headers.set("Min-SE", "300")
    again = retry_after_too_small(request, too_small)
    assert again is not None
    assert again.headers.get("Session-Expires") == "300" and again.headers.get("Min-SE") == "300"
    assert again.cseq == (2, "INVITE") and again.top_via.branch != request.top_via.branch


def test_a_422_without_a_larger_min_se_is_not_retried() -> None:
    request = invite("Session-Expires: 1800")
    too_small = SipResponse(422, "Session Interval Too Small", request.headers.copy())
    too_small.headers.set("Min-SE", "90")
    assert retry_after_too_small(request, too_small) is None


def test_the_2xx_refresher_decides_who_refreshes() -> None:
    assert accepted_interval(ok_with("Session-Expires: 900;refresher=uac")) == SessionInterval(900, True)
    assert accepted_interval(ok_with("Session-Expires: 900;refresher=uas")) == SessionInterval(900, False)


def test_a_2xx_without_session_expires_means_no_session_timer() -> None:
    assert accepted_interval(ok_with()) is None


# --- the timer -----------------------------------------------------------------------------------


class Timed:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.refreshes = 0
        self.expired: list[str] = []
        self.timer = SessionTimer(self.clock, self._refresh, self.expired.append)

    def _refresh(self) -> None:
        self.refreshes += 1


def test_as_refresher_a_refresh_is_due_at_half_the_interval() -> None:
    timed = Timed()
    timed.timer.start(SessionInterval(1800, we_refresh=True))
    timed.clock.advance(899)
    assert timed.refreshes == 0
    timed.clock.advance(1)
    assert timed.refreshes == 1 and not timed.expired


def test_when_the_far_end_refreshes_and_does_not_the_session_ends_32_s_before_expiry() -> None:
    timed = Timed()
    timed.timer.start(SessionInterval(1800, we_refresh=False))
    timed.clock.advance(1800 - 32 - 1)
    assert not timed.expired
    timed.clock.advance(1)
    assert len(timed.expired) == 1 and "1800 s" in timed.expired[0]


def test_a_short_interval_ends_a_third_of_it_before_expiry() -> None:
    timed = Timed()
    timed.timer.start(SessionInterval(90, we_refresh=False))
    timed.clock.advance(59)
    assert not timed.expired
    timed.clock.advance(1)
    assert timed.expired


def test_a_refresh_from_the_far_end_restarts_the_timer() -> None:
    timed = Timed()
    interval = SessionInterval(90, we_refresh=False)
    timed.timer.start(interval)
    timed.clock.advance(50)
    timed.timer.start(interval)  # the far end's re-INVITE or UPDATE arrived
    timed.clock.advance(50)
    assert not timed.expired
    timed.clock.advance(10)
    assert timed.expired


def test_a_refresh_answered_481_ends_the_session_at_once() -> None:
    timed = Timed()
    timed.timer.start(SessionInterval(90, we_refresh=True))
    timed.clock.advance(45)
    timed.timer.refresh_failed(481)
    assert timed.expired and "481" in timed.expired[0]


def test_a_refresh_refused_for_glare_is_tried_again() -> None:
    timed = Timed()
    timed.timer.start(SessionInterval(90, we_refresh=True))
    timed.clock.advance(45)
    timed.timer.refresh_failed(491)
    timed.clock.advance(3)
    assert timed.refreshes == 2 and not timed.expired


def test_a_refresh_refused_otherwise_lets_the_session_run_to_its_expiry() -> None:
    timed = Timed()
    timed.timer.start(SessionInterval(90, we_refresh=True))
    timed.clock.advance(45)
    timed.timer.refresh_failed(500)
    timed.clock.advance(14)
    assert not timed.expired
    timed.clock.advance(1)
    assert timed.expired


def test_a_stopped_timer_never_fires() -> None:
    timed = Timed()
    timed.timer.start(SessionInterval(90, we_refresh=False))
    timed.timer.stop()
    timed.clock.advance(1000)
    assert not timed.expired and timed.refreshes == 0
