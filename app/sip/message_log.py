"""Each call's SIP messages, kept for `GET /api/calls/{callId}/sip_logs`.

`observe` is SipTransports' `on_message_logged`: it sees every message received and sent, and keeps those
whose Call-ID belongs to a call. An incoming INVITE is `expect`ed before its call exists (the INVITE and
its 100 are buffered), then `bind`s to the call once the row is made; an outgoing call binds before its
INVITE is sent. `release` forgets a call's Call-ID a little after the call (a late retransmitted BYE or 200
is still kept), or at once when no call was made. Rows are queued on the call event log's write-behind:
observing never awaits. A call keeps at most `max_messages`, each at most `max_text` characters, credentials
redacted (app.sip.redact); INVITEs still waiting for their call are bounded in number and age.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from app.events.log import CallEventLog
from app.schemas.calls import EventSeverity
from app.sip.message import SipMessage, SipParseError, SipRequest, serialize
from app.sip.redact import redact_credentials
from app.sip.transport import Peer
from app.store.tables import CallRow, SipMessageRow, utcnow

MAX_MESSAGES_PER_CALL = 500
MAX_TEXT_CHARS = 8 * 1024
#: INVITEs whose call is not made yet (the fallback handler may take seconds): at most this many, this old.
MAX_PENDING = 1000
PENDING_TTL_S = 32.0
#: How long a call's Call-ID is still logged after the call (64*T1: its last retransmissions).
LINGER_S = 32.0


@dataclass
class _CallMessages:
    created: float
    call: CallRow | None = None
    pending: list[SipMessageRow] = field(default_factory=list)
    kept: int = 0


class SipMessageLog:
    """The SIP messages of this instance's calls, by SIP Call-ID, on their way to the store."""

    def __init__(
        self,
        events: CallEventLog,
        *,
        max_messages: int = MAX_MESSAGES_PER_CALL,
        max_text: int = MAX_TEXT_CHARS,
        linger_s: float = LINGER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self._max_messages = max_messages
        self._max_text = max_text
        self._linger_s = linger_s
        self._clock = clock
        self._pending: OrderedDict[str, _CallMessages] = OrderedDict()
        self._calls: dict[str, _CallMessages] = {}

    def observe(self, direction: str, message: SipMessage, peer: Peer) -> None:
        """Keep `message` ("in" or "out", from or to `peer`) when its Call-ID is a call's."""
        try:
            sip_call_id = message.call_id
        except SipParseError:
            return
        entry = self._calls.get(sip_call_id) or self._pending.get(sip_call_id)
        if entry is not None:
            self._keep(entry, direction, message, peer)

    def expect(self, invite: SipRequest, peer: Peer) -> None:
        """Start keeping the messages of an incoming INVITE (received from `peer`) whose call is not made
        yet, the INVITE first."""
        now = self._clock()
        self._forget_stale(now)
        if invite.call_id in self._calls or invite.call_id in self._pending:
            return
        entry = self._pending[invite.call_id] = _CallMessages(created=now)
        self._keep(entry, "in", invite, peer)

    def bind(self, sip_call_id: str, call: CallRow) -> None:
        """The messages of `sip_call_id` are `call`'s, those kept before included."""
        entry = self._pending.pop(sip_call_id, None) or _CallMessages(created=self._clock())
        entry.call = call
        self._calls[sip_call_id] = entry
        for row in entry.pending:
            row.call_id = call.id
            self._events.store(row)
        entry.pending.clear()

    def release(self, sip_call_id: str) -> None:
        """The call of `sip_call_id` is over (or was never made): forget it, after LINGER_S if it was made."""
        if self._pending.pop(sip_call_id, None) is not None:
            return
        if sip_call_id in self._calls:
            asyncio.get_running_loop().call_later(self._linger_s, self._calls.pop, sip_call_id, None)

    def _forget_stale(self, now: float) -> None:
        """Drop the oldest waiting INVITEs while there are too many, or they are too old to get a call."""
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if len(self._pending) < MAX_PENDING and now - oldest.created <= PENDING_TTL_S:
                return
            self._pending.popitem(last=False)

    def _keep(self, entry: _CallMessages, direction: str, message: SipMessage, peer: Peer) -> None:
        if entry.kept >= self._max_messages:
            return
        entry.kept += 1
        text = redact_credentials(serialize(message).decode("utf-8", "replace"))
        if len(text) > self._max_text:
            text = text[: self._max_text] + f"\r\n[{len(text) - self._max_text} more characters not kept]"
        row = SipMessageRow(
            call_id=entry.call.id if entry.call else "",
            wall_clock=utcnow(),
            direction=direction,
            peer=f"{peer.transport}:{peer.host}:{peer.port}",
            text=text,
        )
        if entry.call is None:
            entry.pending.append(row)
        else:
            self._events.store(row)
        if entry.kept == self._max_messages and entry.call is not None:
            self._events.record(
                entry.call.id,
                entry.call.created,
                "sip_logs_truncated",
                f"the call's first {self._max_messages} SIP messages are kept; later ones are not",
                EventSeverity.WARNING,
            )
