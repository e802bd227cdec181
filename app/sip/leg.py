"""The signalling of one SIP call once its dialog exists: requests from the far end, and our BYE.

`SipLeg` answers what the far end sends inside the dialog (BYE, INFO digits, re-INVITE, OPTIONS, UPDATE,
the NOTIFYs of a REFER under way) and tells the call's transport; it sends our BYE when the call ends on
callbridge's side. It never waits for the BYE's answer: a far end that does not answer cannot keep a call
open.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from app.sip.dialog import Dialog
from app.sip.message import SipParseError, SipRequest, SipResponse, response_to
from app.sip.refer import ReferProgress
from app.sip.sdp import NoCommonCodec, SdpError
from app.sip.session_timer import (
    SessionTimer,
    accepted_interval,
    answer_interval,
    offer_headers,
    refusal,
)
from app.sip.transaction import Clock, LoopClock, ServerTransaction, TransactionLayer
from app.sip.transport import SipTransports

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"
_DTMF_RELAY_SIGNAL = re.compile(r"^\s*signal\s*=\s*([0-9A-Da-d*#])\s*$", re.MULTILINE | re.IGNORECASE)


#: Runs a coroutine in the background, owned by the user agent (which lets it finish on shutdown).
Spawn = Callable[[Coroutine[Any, Any, object], str], None]


class LegListener(Protocol):
    """Who hears what the far end does (the call's transport)."""

    def far_end_hung_up(self, reason: str) -> None: ...

    def signalled_digit(self, digit: str) -> None: ...


def dtmf_relay_digit(body: bytes) -> str | None:
    """The digit of an `application/dtmf-relay` INFO body (`Signal=5`), or None."""
    found = _DTMF_RELAY_SIGNAL.search(body.decode("utf-8", "replace"))
    return found.group(1).upper() if found else None


class SipLeg:
    """One established SIP dialog of a call."""

    def __init__(
        self,
        dialog: Dialog,
        transactions: TransactionLayer,
        transports: SipTransports,
        local_sdp: bytes,
        spawn: Spawn,
        clock: Clock | None = None,
    ) -> None:
        self.dialog = dialog
        self._transports = transports
        self._spawn = spawn
        #: Our ACK for the 2xx to our INVITE (outgoing calls).
        self.ack: SipRequest | None = None
        self.call_id = dialog.call_id
        self._transactions = transactions
        self._local_sdp = local_sdp
        self._listener: LegListener | None = None
        self._pending_digits: list[str] = []
        self.over = False
        #: Set when the far end's BYE arrives (even before its ACK: a caller may hang up at once).
        self.hung_up = asyncio.Event()
        #: Answers a new offer on the running call (`media_setup.RunningMedia.answer`); None: the media
        #: stays as first negotiated and is said again.
        self.on_offer: Callable[[bytes, bytes], bytes] | None = None
        #: Applies the far end's answer to our refresh re-INVITE (`RunningMedia.accept`); None: ignored.
        self.on_answer: Callable[[bytes], None] | None = None
        #: The REFER under way (`app.sip.refer`): its NOTIFYs go to it; without one a NOTIFY gets 481.
        self.refer: ReferProgress | None = None
        #: Called once the dialog is over (BYE sent or received): the user agent forgets it.
        self.on_over: Callable[[SipLeg], None] | None = None
        #: RFC 4028: refreshes of ours go as UPDATE when the far end allows it, else as re-INVITE.
        self.session_timer = SessionTimer(clock or LoopClock(), self._refresh_session, self._session_expired)
        self.peer_allows_update = False
        #: Told why when the session timer ran out (the call ends `connection_error`); None: only BYE.
        self.on_session_expired: Callable[[str], None] | None = None
        #: Our re-INVITE is under way: one from the far end crossing it gets 491 (RFC 3261 §14.2).
        self._reinviting = False

    async def acknowledge(self) -> None:
        """Send the ACK for the 2xx to our INVITE (kept: a retransmitted 2xx gets it again)."""
        self.ack = self.dialog.ack()
        await self.resend_ack()

    async def resend_ack(self) -> None:
        if self.ack is not None:
            await self._transports.send(self.ack, self.dialog.peer)

    def let_go(self) -> None:
        """The call and any bridge of it are over: forget the listener and the callbacks into them, and
        stop the session timer, so that reference counting frees the call (they refer back to the leg:
        cycles that only the collector's full pass would free). The dialog still answers what comes."""
        self._listener = None
        self.on_offer = self.on_answer = self.on_session_expired = None
        self.refer = None
        self.session_timer.close()

    def listen(self, listener: LegListener) -> None:
        self._listener = listener
        if self.over:
            listener.far_end_hung_up("the caller hung up")
        for digit in self._pending_digits:
            listener.signalled_digit(digit)
        self._pending_digits.clear()

    # --- requests from the far end -------------------------------------------------------------

    async def on_request(self, request: SipRequest, transaction: ServerTransaction | None) -> None:
        """An in-dialog request (ACKs come without a transaction and need no answer)."""
        if transaction is None:
            return
        method = request.method
        if not self.dialog.accepts(request):
            await transaction.respond(response_to(request, 500, "CSeq Out of Order"))
            return
        if method == "BYE":
            await transaction.respond(response_to(request, 200))
            self._ended_by_far_end("the caller hung up")
        elif method == "INFO":
            await self._info(request, transaction)
        elif method == "INVITE" and self._reinviting:
            await transaction.respond(response_to(request, 491))
        elif method in ("INVITE", "UPDATE"):
            response = refusal(request) or self._renegotiated(request)
            if response.status < 300:
                self.time_session(request, response)
            await transaction.respond(response)
        elif method == "NOTIFY":
            await transaction.respond(
                response_to(request, self.refer.notified(request) if self.refer else 481)
            )
        elif method == "OPTIONS":
            response = response_to(request, 200)
            response.headers.add("Allow", ALLOW)
            await transaction.respond(response)
        else:
            response = response_to(request, 501)
            response.headers.add("Allow", ALLOW)
            await transaction.respond(response)

    def _renegotiated(self, request: SipRequest) -> SipResponse:
        """A re-INVITE or UPDATE: its offer applied (new address, hold...), or our media said again."""
        answer = self._local_sdp
        if request.body and self.on_offer is not None:
            try:
                answer = self.on_offer(request.body, self._local_sdp)
            except NoCommonCodec as exc:
                response = response_to(request, 488)
                response.headers.add("Warning", f'305 callbridge "{exc.warning}"')
                return response
            except (SdpError, ValueError) as exc:
                return response_to(request, 400, f"Bad Request (SDP: {exc})"[:120])
            self._local_sdp = answer
        response = response_to(request, 200)
        response.headers.add("Contact", self.dialog.here.contact())
        if request.body or request.method == "INVITE":
            response.headers.add("Content-Type", "application/sdp")
            response.body = answer
        return response

    # --- session timers (RFC 4028) ---------------------------------------------------------------

    def time_session(self, request: SipRequest, response: SipResponse) -> None:
        """Put the interval `request` asks for (it passed `session_timer.refusal`) in our 2xx `response`
        and (re)start the timer: every INVITE or UPDATE we accept is a refresh."""
        timed = answer_interval(request)
        self.session_timer.start(timed[0] if timed else None)
        if timed is not None:
            for name, value in timed[1].items():
                response.headers.add(name, value)

    def _refresh_session(self) -> None:
        if not self.over:
            self._spawn(self._send_refresh(), f"sip-{self.call_id}-refresh")

    async def _send_refresh(self) -> None:
        """Our refresh: an UPDATE without a body, or a re-INVITE offering our SDP again; we stay the
        refresher (RFC 4028 §7.4: refresher=uac)."""
        interval = self.session_timer.interval
        if interval is None:
            return
        headers = dict(offer_headers(interval.seconds, refresher="uac").items())
        if self.peer_allows_update:
            refresh = self.dialog.request("UPDATE", headers=headers)
        else:
            refresh = self.dialog.request("INVITE", self._local_sdp, "application/sdp", headers)
        self._reinviting = refresh.method == "INVITE"
        try:
            final = await self._transactions.request(refresh, self.dialog.peer).final()
        except Exception as exc:
            log.info("SIP call %s: the session refresh failed: %s", self.call_id, exc)
            final = response_to(refresh, 408)
        finally:
            self._reinviting = False
        if self.over:
            return
        if final.status >= 300:
            self.session_timer.refresh_failed(final.status)
            return
        if refresh.method == "INVITE":
            await self.acknowledge()
            self._accept_answer(final)
        try:
            self.session_timer.start(accepted_interval(final))
        except SipParseError:
            self.session_timer.start(interval)  # a garbled answer: keep the interval we asked for

    def _accept_answer(self, final: SipResponse) -> None:
        if not final.body or self.on_answer is None:
            return
        try:
            self.on_answer(final.body)
        except (SdpError, NoCommonCodec, ValueError) as exc:  # the media stays as it was
            log.info("SIP call %s: unusable answer to our refresh: %s", self.call_id, exc)

    def _session_expired(self, reason: str) -> None:
        if self.over:
            return
        log.info("SIP call %s: %s", self.call_id, reason)
        if self.on_session_expired is not None:
            self.on_session_expired(reason)  # the call ends, and its transport hangs the leg up
        else:
            self.hang_up()

    async def _info(self, request: SipRequest, transaction: ServerTransaction) -> None:
        if request.content_type != "application/dtmf-relay":
            await transaction.respond(response_to(request, 415 if request.body else 200))
            return
        digit = dtmf_relay_digit(request.body)
        await transaction.respond(response_to(request, 200 if digit else 400))
        if digit is None:
            return
        if self._listener is not None:
            self._listener.signalled_digit(digit)
        else:
            self._pending_digits.append(digit)

    def _ended_by_far_end(self, reason: str) -> None:
        if self.over:
            return
        self.over = True
        self.hung_up.set()
        if self._listener is not None:
            self._listener.far_end_hung_up(reason)
        self._notify_over()

    # --- our requests ----------------------------------------------------------------------------

    async def send(self, request: SipRequest) -> SipResponse:
        """Send an in-dialog request (from `dialog.request`) and wait for its final response."""
        return await self._transactions.request(request, self.dialog.peer).final()

    # --- our side ending the call -------------------------------------------------------------

    def hang_up(self) -> None:
        """Send BYE unless the dialog is already over; the answer is only logged."""
        if self.over:
            return
        self.over = True
        bye = self.dialog.request("BYE")
        self._spawn(self._send_bye(bye), f"sip-{self.call_id}-bye")
        self._notify_over()

    async def _send_bye(self, bye: SipRequest) -> None:
        try:
            final = await self._transactions.request(bye, self.dialog.peer).final()
        except Exception:
            log.exception("SIP call %s: sending BYE failed", self.call_id)
            return
        if final.status >= 300:
            log.info("SIP call %s: BYE answered %d %s", self.call_id, final.status, final.reason)

    def _notify_over(self) -> None:
        self.session_timer.stop()
        if self.on_over is not None:
            self.on_over(self)
