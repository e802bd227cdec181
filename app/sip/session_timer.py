"""Session timers (RFC 4028): the interval both sides agree on, and the timer that keeps a dialog alive.

Negotiation is a set of pure functions over headers: `answer_interval` for a request we answer (the initial
INVITE or a refresh), `offer_headers`/`retry_after_too_small`/`accepted_interval` for an INVITE we send.
`SessionTimer` runs one dialog's timer on an injectable `Clock`: when we are the refresher it asks for a
refresh at half the interval; when the far end is, and no refresh came, it ends the session at the
expiry minus min(32 s, interval / 3) (RFC 4028 §10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.sip.message import Headers, SipParseError, SipRequest, SipResponse, next_attempt, response_to
from app.sip.transaction import Clock, TimerHandle

#: RFC 4028 §4: nobody may ask for less than 90 s; it is also ours.
MIN_SE_S = 90
#: What we ask for on our own INVITEs (RFC 4028 §4 recommends 1800 s).
DEFAULT_INTERVAL_S = 1800
#: A refresh of ours refused with 491 (glare) is tried again this much later (RFC 3261 §14.1: 2.1-4 s).
GLARE_RETRY_S = 3.0
#: Responses to a refresh that mean the dialog is gone (RFC 4028 §10): the session ends at once.
DIALOG_GONE = frozenset({408, 481})
OPTION_TAG = "timer"


class IntervalTooSmall(Exception):
    """The request asks for a shorter interval than we take: answer 422 with `Min-SE: min_se`."""

    def __init__(self, min_se: int) -> None:
        super().__init__(f"Session-Expires below {min_se} s")
        self.min_se = min_se


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A Session-Expires header: the interval and who refreshes ('uac', 'uas' or None: not said)."""

    seconds: int
    refresher: str | None = None

    def __str__(self) -> str:
        return f"{self.seconds};refresher={self.refresher}" if self.refresher else str(self.seconds)


@dataclass(frozen=True, slots=True)
class SessionInterval:
    """What one exchange settled: the interval, and whether callbridge sends the refreshes."""

    seconds: int
    we_refresh: bool


def parse_session_expires(value: str) -> SessionExpires:
    """`1800;refresher=uac` (or `x: 1800`); SipParseError when malformed."""
    number, _, params_text = value.partition(";")
    number = number.strip()
    if not number.isdigit() or len(number) > 10:
        raise SipParseError(f"Session-Expires {value!r}: delta-seconds expected")
    pairs = (param.strip().lower().partition("=") for param in params_text.split(";"))
    params = {name.strip(): value.strip() for name, _, value in pairs if name.strip()}
    refresher = params.get("refresher") or None
    if refresher not in (None, "uac", "uas"):
        raise SipParseError(f"Session-Expires {value!r}: refresher must be uac or uas")
    return SessionExpires(int(number), refresher)


def supports_timer(headers: Headers) -> bool:
    """Whether the sender takes session timers (`timer` in Supported or Require)."""
    tags = [*headers.get_all("Supported"), *headers.get_all("Require")]
    return any(tag.strip().lower() == OPTION_TAG for tag in tags)


def _min_se(headers: Headers) -> int:
    value = (headers.get("Min-SE") or "").partition(";")[0].strip()
    return int(value) if value.isdigit() else 0


def answer_interval(request: SipRequest, min_se: int = MIN_SE_S) -> tuple[SessionInterval, Headers] | None:
    """As the request's UAS (RFC 4028 §9): the interval and the headers for our 2xx, or None when the
    request asks for no session timer. IntervalTooSmall when it asks for less than `min_se` and the
    sender can take a 422; SipParseError for a malformed Session-Expires."""
    headers = request.headers
    supported = supports_timer(headers)
    raw = headers.get("Session-Expires")
    if raw is None and not supported:
        return None
    asked = parse_session_expires(raw) if raw is not None else SessionExpires(DEFAULT_INTERVAL_S)
    floor = max(min_se, _min_se(headers))
    seconds = asked.seconds
    if seconds < floor:
        if supported:
            raise IntervalTooSmall(floor)
        seconds = floor  # a sender without timer support cannot retry: take the interval up instead
    # The sender's choice stands, else it refreshes; a sender without timer support cannot, whatever a
    # proxy put in the header: then we do (RFC 4028 §9).
    refresher = (asked.refresher or "uac") if supported else "uas"
    answer = Headers()
    answer.add("Session-Expires", str(SessionExpires(seconds, refresher)))
    if supported:
        answer.add("Require", OPTION_TAG)
    return SessionInterval(seconds, we_refresh=refresher == "uas"), answer


def refusal(request: SipRequest, min_se: int = MIN_SE_S) -> SipResponse | None:
    """The answer a request gets for its session interval alone: 422 with our Min-SE when it is too short
    (RFC 4028 §6), 400 when its Session-Expires is malformed; None when it can be accepted."""
    try:
        answer_interval(request, min_se)
    except IntervalTooSmall as exc:
        response = response_to(request, 422)
        response.headers.add("Min-SE", str(exc.min_se))
        return response
    except SipParseError as exc:
        return response_to(request, 400, f"Bad Request ({exc})"[:120])
    return None


def allows_update(headers: Headers) -> bool:
    """Whether a message's Allow names UPDATE (then our refreshes need no offer, RFC 4028 §7.4)."""
    return any(method.strip().upper() == "UPDATE" for method in headers.get_all("Allow"))


def offer_headers(
    seconds: int = DEFAULT_INTERVAL_S, min_se: int = MIN_SE_S, refresher: str | None = None
) -> Headers:
    """The headers our INVITE (or refresh) carries: we take timers, for `seconds`, no less than `min_se`.

    Without `refresher` the answerer chooses, and names it in its 2xx (RFC 4028 §7.1)."""
    headers = Headers()
    headers.add("Supported", OPTION_TAG)
    headers.add("Session-Expires", str(SessionExpires(max(seconds, min_se), refresher)))
    headers.add("Min-SE", str(min_se))
    return headers


def retry_after_too_small(request: SipRequest, response: SipResponse) -> SipRequest | None:
    """After a 422 (RFC 4028 §7.4): `request` again asking for the 422's Min-SE (as interval and as our
    Min-SE), or None when the 422 names no interval larger than the one asked (it would be refused again)."""
    asked = parse_session_expires(request.headers.get("Session-Expires") or "0").seconds
    min_se = _min_se(response.headers)
    if response.status != 422 or min_se <= asked:
        return None
    headers = request.headers.copy()
    headers.set("Session-Expires", str(min_se))
    headers.set("Min-SE", str(min_se))
    return next_attempt(request, headers)


def accepted_interval(response: SipResponse, we_are_uac: bool = True) -> SessionInterval | None:
    """As the UAC of a request (RFC 4028 §7.2): the interval its 2xx settled, or None (no Session-Expires:
    no session timer). SipParseError for a malformed one."""
    raw = response.headers.get("Session-Expires")
    if raw is None:
        return None
    agreed = parse_session_expires(raw)
    # A 2xx without refresher (RFC 4028 §7.2 says it always has one) leaves the refreshing to us.
    refresher = agreed.refresher or "uac"
    return SessionInterval(agreed.seconds, we_refresh=(refresher == "uac") == we_are_uac)


def expiry_margin(seconds: float) -> float:
    """How long before the expiry the side that does not refresh ends the session (RFC 4028 §10)."""
    return min(32.0, seconds / 3)


class SessionTimer:
    """One dialog's session timer. `refresh` is called when our refresh is due; `expire` when the far end's
    did not come in time (or a refresh of ours found the dialog gone). Both are plain callbacks: the
    caller does the sending."""

    def __init__(self, clock: Clock, refresh: Callable[[], None], expire: Callable[[str], None]) -> None:
        self._clock = clock
        self._refresh = refresh
        self._expire = expire
        self._timer: TimerHandle | None = None
        self.interval: SessionInterval | None = None
        #: When the session expires unless refreshed (clock time); None while no timer runs.
        self.expires_at: float | None = None

    def start(self, interval: SessionInterval | None) -> None:
        """(Re)start after a successful refresh or the initial exchange; None stops the timer."""
        self.stop()
        self.interval = interval
        if interval is None:
            return
        now = self._clock.now()
        self.expires_at = now + interval.seconds
        if interval.we_refresh:
            self._timer = self._clock.call_later(interval.seconds / 2, self._refresh_due)
        else:
            self._arm_expiry()

    def refresh_failed(self, status: int) -> None:
        """Our refresh was answered `status` (or 408 when it timed out): glare is retried, a dialog that
        is gone ends now, anything else lets the session run to its expiry."""
        if self.interval is None or self.expires_at is None:
            return
        self._cancel()
        if status in DIALOG_GONE:
            self._expire(f"the session refresh got {status}: the dialog is gone")
        elif status == 491 and self.expires_at - self._clock.now() > GLARE_RETRY_S:
            self._timer = self._clock.call_later(GLARE_RETRY_S, self._refresh_due)
        else:
            self._arm_expiry()

    def stop(self) -> None:
        self._cancel()
        self.interval = None
        self.expires_at = None

    def _arm_expiry(self) -> None:
        assert self.interval is not None and self.expires_at is not None
        deadline = self.expires_at - expiry_margin(self.interval.seconds)
        self._timer = self._clock.call_later(deadline - self._clock.now(), self._expired)

    def close(self) -> None:
        """Stop for good: no callback is called again, and none is kept (they refer to the leg)."""
        self.stop()
        self._refresh = _never_refresh
        self._expire = _never_expire

    def _refresh_due(self) -> None:
        self._timer = None
        self._refresh()

    def _expired(self) -> None:
        self._timer = None
        seconds = self.interval.seconds if self.interval else 0
        self.stop()
        self._expire(f"the session was not refreshed within its {seconds} s session interval")

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _never_refresh() -> None:
    """A closed timer's refresh."""


def _never_expire(reason: str) -> None:
    """A closed timer's expiry."""
