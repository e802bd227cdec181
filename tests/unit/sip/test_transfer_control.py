"""A SIP call's transfers (`SipTransferControl`): REFER and its NOTIFYs on a fake clock, the bridge fallback,
and what the caller's leg and stream are told. The dialer is a fake; real peers are in tests/e2e."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.sip.leg import SipLeg
from app.sip.message import SipRequest, SipResponse
from app.sip.outgoing import SipDialPlan, Unanswered
from app.sip.sdp import CODECS, Negotiated
from app.sip.transfer import SipTransferControl
from app.sip.transport import Peer
from app.store.tables import CallRow, utcnow
from tests.unit.sip.fake_clock import FakeClock
from tests.unit.sip.test_leg import Sent, new_leg
from tests.unit.sip.test_refer import notify

TIMEOUT_S = 30.0
TARGET = "sip:desk@198.51.100.7"


class Answering(Sent):
    """Sent, with the REFER answered `refer_status`."""

    def __init__(self, refer_status: int) -> None:
        super().__init__()
        self.refer_status = refer_status

    def request(self, message: SipRequest, peer: Peer) -> Any:
        self.requests.append(message)
        status = self.refer_status if message.method == "REFER" else 200

        class Final:
            async def final(self) -> SipResponse:
                return SipResponse(
                    status, "Not Implemented" if status == 501 else "Accepted", message.headers
                )

        return Final()


class Stream:
    """The caller's SipCallTransport, as far as a transfer touches it."""

    def __init__(self) -> None:
        self.stopped: list[str] = []
        self.handed_over: list[str] = []

    def far_end_hung_up(self, reason: str) -> None:
        self.stopped.append(reason)

    def hand_over(self, new_owner: object, reason: str) -> None:
        self.handed_over.append(reason)


@dataclass
class Dialer:
    """SipDialer.connect's fake: every dial gets `answer`."""

    answer: Unanswered = field(default_factory=lambda: Unanswered(486, "Busy Here"))
    dialled: list[tuple[SipDialPlan, list[str]]] = field(default_factory=list)
    transports_listening: set[str] = field(default_factory=lambda: {"udp"})

    async def connect(
        self, plan: SipDialPlan, codecs: list[str], cancel: asyncio.Event, on_ringing: Callable[..., None]
    ) -> Unanswered:
        self.dialled.append((plan, codecs))
        return self.answer


class Events:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def record(self, call_id: str, created: Any, type: str, text: str, *args: Any) -> None:
        self.texts.append(text)


class Repo:
    def __init__(self) -> None:
        self.transfer_billed = 0.0

    async def add_sip_transfer_billing(self, call_id: str, seconds: float) -> None:
        self.transfer_billed += seconds


@dataclass
class Media:
    negotiated: Negotiated


@dataclass
class Setup:
    codecs: list[str]
    rtp_timeout_s: float = 30.0


@dataclass
class Control:
    control: SipTransferControl
    leg: SipLeg
    sent: Sent
    stream: Stream
    dialer: Dialer
    clock: FakeClock
    events: Events
    repo: Repo
    notifies: int = 0

    def requests(self, method: str) -> list[SipRequest]:
        return [request for request in self.sent.requests if request.method == method]

    async def notified(self, body: str, state: str = "active") -> int:
        """The far end's NOTIFY for our (first) REFER, as the leg answers it."""
        responses: list[SipResponse] = []

        class Transaction:
            async def respond(self, response: SipResponse) -> None:
                responses.append(response)

        refer = self.requests("REFER")[0].cseq[0]
        self.notifies += 1
        message = notify(body, state=state, event=f"refer;id={refer}", cseq=1 + self.notifies)
        await self.leg.on_request(message, Transaction())  # type: ignore[arg-type]
        return responses[-1].status


def negotiated(codec: str) -> Negotiated:
    return Negotiated(CODECS[codec], CODECS[codec].static_pt or 0, None, 20, "203.0.113.5", 40000, "sendrecv")


def control(refer_status: int = 202, caller_codec: str = "PCMA") -> Control:
    leg, _, _ = new_leg()
    sent = Answering(refer_status)
    leg._transactions = sent  # type: ignore[assignment]
    leg._spawn = sent.spawn
    stream, dialer, clock, events, repo = Stream(), Dialer(), FakeClock(), Events(), Repo()
    row = CallRow(id="call-1", created=utcnow(), medium_kind="sip")
    made = SipTransferControl(
        row,
        leg,
        stream,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Media(negotiated(caller_codec)),  # type: ignore[arg-type]
        Setup(["G722", "PCMU", "PCMA"]),  # type: ignore[arg-type]
        dialer,  # type: ignore[arg-type]
        events,  # type: ignore[arg-type]
        repo,  # type: ignore[arg-type]
        clock=clock,
        refer_timeout_s=TIMEOUT_S,
    )
    return Control(made, leg, sent, stream, dialer, clock, events, repo)


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (the fakes answer at once: a few turns suffice)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


async def start_transfer(made: Control, **options: Any) -> asyncio.Task[str | None]:
    task = asyncio.create_task(made.control.transfer("call-1", TARGET, **options))
    await until(lambda: bool(made.requests("REFER")) or bool(made.dialer.dialled) or task.done())
    return task


async def test_a_final_notify_200_sends_bye_and_stops_the_callers_stream() -> None:
    made = control()
    transfer = await start_transfer(made)
    assert made.requests("REFER")[0].headers.get("Refer-To") == f"<{TARGET}>"
    assert await made.notified("SIP/2.0 100 Trying") == 200
    assert not transfer.done()
    assert await made.notified("SIP/2.0 200 OK", state="terminated;reason=noresource") == 200
    assert await transfer is None
    await until(lambda: bool(made.requests("BYE")))
    assert made.leg.over and made.stream.stopped == [f"the caller was transferred to {TARGET}"]


async def test_no_final_notify_within_the_timeout_leaves_the_caller_with_the_agent() -> None:
    made = control()
    transfer = await start_transfer(made)
    await made.notified("SIP/2.0 180 Ringing")
    made.clock.advance(TIMEOUT_S)
    assert await transfer == f"no final NOTIFY within {TIMEOUT_S:g} s of the REFER"
    assert not made.leg.over and not made.requests("BYE") and not made.stream.stopped


async def test_a_failed_sipfrag_leaves_the_caller_with_the_agent_even_with_the_fallback_on() -> None:
    made = control()
    transfer = await start_transfer(made, fallback_to_bridge=True)
    await made.notified("SIP/2.0 486 Busy Here", state="terminated")
    assert await transfer == "the target did not take the call: 486 Busy Here"
    assert not made.dialer.dialled and not made.leg.over


async def test_a_refused_refer_without_the_fallback_fails_and_dials_nothing() -> None:
    made = control(refer_status=501)
    transfer = await start_transfer(made)
    assert await transfer == "the REFER was refused: 501 Not Implemented"
    assert not made.dialer.dialled and not made.leg.over


async def test_a_refused_refer_with_the_fallback_dials_the_target_offering_the_callers_codec_first() -> None:
    made = control(refer_status=501, caller_codec="PCMA")
    transfer = await start_transfer(made, fallback_to_bridge=True, extra_headers={"X-Note": "vip"})
    assert await transfer == "the transfer target did not answer: 486 Busy Here"
    [(plan, codecs)] = made.dialer.dialled
    assert str(plan.to) == TARGET and plan.headers == {"X-Note": "vip"}
    assert codecs == ["PCMA", "G722", "PCMU"]
    assert any("bridging to" in text for text in made.events.texts)
    assert not made.leg.over  # the caller stays with the agent


async def test_an_invite_transfer_sends_no_refer() -> None:
    made = control()
    assert await made.control.transfer("call-1", TARGET, sip_verb="INVITE") is not None
    assert not made.requests("REFER") and len(made.dialer.dialled) == 1


async def test_an_unanswered_second_leg_bills_its_ring_time() -> None:
    made = control()
    await made.control.transfer("call-1", TARGET, sip_verb="INVITE")
    assert made.repo.transfer_billed == 6.0  # rounded up to a deciminute


async def test_a_target_on_a_transport_callbridge_does_not_listen_on_is_refused() -> None:
    made = control()
    problem = await made.control.transfer("call-1", "sip:desk@198.51.100.7;transport=tcp", sip_verb="INVITE")
    assert problem is not None and "tcp is not among" in problem and not made.dialer.dialled


@pytest.mark.parametrize("verb", ["REFER", "INVITE"])
async def test_a_transfer_of_a_call_that_is_over_is_refused(verb: str) -> None:
    made = control()
    made.leg.hang_up()
    assert await made.control.transfer("call-1", TARGET, sip_verb=verb) == "the SIP call is over"


async def test_a_target_that_is_not_a_usable_sip_uri_is_refused_with_the_reason() -> None:
    made = control()
    problem = await made.control.transfer("call-1", "sip:desk@[::1")
    assert problem is not None and problem.startswith("transfer target 'sip:desk@[::1'")
    assert not made.requests("REFER")
