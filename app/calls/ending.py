"""How and why a call ends: the first reason given wins; a transfer decides what the far end leaving means."""

from __future__ import annotations

import asyncio
from enum import Enum

from app.schemas.calls import EndReason


class TransferState(Enum):
    NONE = "none"
    UNDER_WAY = "under_way"  # asked the provider; the caller may still be with the agent
    DONE = "done"  # the provider took it: the caller is leaving for the target


class CallEnding:
    """One call's end: the reason, its text, and whether this session may record it."""

    def __init__(self) -> None:
        self.reason: EndReason | None = None
        self.text = ""
        #: Only a session that joined the call, or saw its join deadline pass, may end it; any other
        #: failed join leaves the call to whoever holds it (or to the unjoined-call sweeper).
        self.owns_call = False
        self.transfer = TransferState.NONE
        self._transfer_text = ""
        self._done = asyncio.Event()

    @property
    def over(self) -> bool:
        return self.reason is not None

    def finish(self, reason: EndReason, text: str) -> None:
        """End the call for `reason` (ignored when it already has one)."""
        if self.reason is None:
            self.reason, self.text = reason, text
            self._done.set()

    def far_end_left(self, text: str) -> None:
        """The caller's side went away (stream stopped or closed, provider reports the leg over).

        During a transfer that is the transfer happening: the agent handed the caller over.
        """
        if self.transfer is TransferState.NONE:
            self.finish(EndReason.HANGUP, text)
        else:
            self.finish(EndReason.AGENT_HANGUP, self._transfer_text)

    def transfer_started(self, text: str) -> bool:
        """A transfer begins (`text`: how the call will have ended); False when one is already under way."""
        if self.transfer is not TransferState.NONE:
            return False
        self.transfer, self._transfer_text = TransferState.UNDER_WAY, text
        return True

    def transfer_failed(self) -> None:
        self.transfer = TransferState.NONE

    def transfer_done(self) -> None:
        self.transfer = TransferState.DONE

    def leave_after_transfer(self) -> None:
        """The provider did not end the stream after a transfer: the agent leaves all the same."""
        if self.transfer is TransferState.DONE:
            self.finish(EndReason.AGENT_HANGUP, self._transfer_text)

    async def wait(self) -> None:
        await self._done.wait()
