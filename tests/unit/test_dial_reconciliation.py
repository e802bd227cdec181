"""Settling a dial whose outcome a crash left unknown: each provider's client asks its call list (served by
the fake provider APIs as documented) whether a call to the number was created since the dial began; and
the decision `reconcile_call` makes from the Calls recorded and that answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.providers.control import CallControl, DialLookup, DialRequest
from app.providers.plivo import PlivoCallControl
from app.providers.rest import ProviderApiError, RetryPolicy
from app.providers.telnyx import TelnyxCallControl
from app.providers.twilio import TwilioCallControl
from app.scheduler.placing import Reconciliation, Settled, reconcile_call
from app.schemas.telephony import PlivoConfig, TelnyxConfig, TwilioConfig
from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeProviderApi
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio_api import FakeTwilioApi
from app.store.tables import CallRow
from tests.conftest import telnyx_public_key

FAST = RetryPolicy(attempts=2, first_delay_s=0.01, max_delay_s=0.1, timeout_s=2.0)
TO, FROM = "+15550100001", "+15550100999"
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens


def dial_request(to: str = TO) -> DialRequest:
    return DialRequest("c1", to, FROM, "<Response/>", "http://127.0.0.1:9/a", "http://127.0.0.1:9/s", 30, 60)


def twilio_control(base_url: str, client: httpx.AsyncClient) -> CallControl:
    config = TwilioConfig.model_validate({"accountSid": "AC1", "authToken": "t", "apiBaseUrl": base_url})
    return TwilioCallControl(config, client, FAST)


def telnyx_control(base_url: str, client: httpx.AsyncClient) -> CallControl:
    config = TelnyxConfig.model_validate(
        {
            "apiKey": "KEY1",
            "publicKey": telnyx_public_key(),
            "applicationSid": "app-1",
            "accountSid": "acct-1",
            "apiBaseUrl": base_url,
        }
    )
    return TelnyxCallControl(config, client, FAST)


def plivo_control(base_url: str, client: httpx.AsyncClient) -> CallControl:
    config = PlivoConfig.model_validate({"authId": "MA1", "authToken": "t", "apiBaseUrl": base_url})
    return PlivoCallControl(config, client, FAST)


FAKES = {
    "plivo": (lambda: FakePlivoApi("MA1", "t"), plivo_control),
    "twilio": (lambda: FakeTwilioApi("AC1", "t"), twilio_control),
    "telnyx": (
        lambda: FakeTelnyxApi("KEY1", Ed25519PrivateKey.generate(), account_sid="acct-1"),
        telnyx_control,
    ),
}


@pytest.fixture(params=sorted(FAKES))
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeProviderApi, CallControl]]:
    make_fake, make_control = FAKES[request.param]
    fake = make_fake()
    fake.initiate_delay = 60  # the calls stay queued: nothing calls back to the unreachable URLs
    await fake.start()
    async with httpx.AsyncClient() as client:
        yield fake, make_control(fake.base_url, client)
    await fake.stop()


def a_moment_ago() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=2)


async def test_a_dial_the_provider_took_is_found(provider: tuple[FakeProviderApi, CallControl]) -> None:
    fake, control = provider
    since = a_moment_ago()
    dialled = await control.dial(dial_request())
    lookup = await control.find_dialled(TO, FROM, since)
    assert fake.dials[TO] == 1
    if dialled.provider_call_id is not None:
        assert lookup.provider_call_ids == (dialled.provider_call_id,)
    else:  # Plivo: a queued call is known by its request id
        assert lookup.request_ids == (dialled.provider_request_id,)


async def test_no_dial_to_the_number_is_provably_none(provider: tuple[FakeProviderApi, CallControl]) -> None:
    _, control = provider
    await control.dial(dial_request(to="+15550100002"))
    lookup = await control.find_dialled(TO, FROM, a_moment_ago())
    assert not lookup.found


async def test_a_dial_before_the_moment_asked_about_is_not_counted(
    provider: tuple[FakeProviderApi, CallControl],
) -> None:
    fake, control = provider
    if fake.provider == "plivo":
        pytest.skip("Plivo's queued calls carry no time: a queued call to the number always counts")
    await control.dial(dial_request())
    lookup = await control.find_dialled(TO, FROM, datetime.now(UTC) + timedelta(seconds=5))
    assert not lookup.found


async def test_a_dial_is_found_past_the_first_page(provider: tuple[FakeProviderApi, CallControl]) -> None:
    fake, control = provider
    since = a_moment_ago()
    await control.dial(dial_request())
    for n in range(60):  # newer calls to others fill the first page (50; Plivo's 20)
        other = fake.dial(f"CAother{n}", f"+1555020{n:04d}", FROM, {}, request_uuid=f"req-{n}")
        if isinstance(fake, FakePlivoApi):
            fake.by_request[f"req-{n}"] = other
    found = await control.find_dialled(TO, FROM, since)
    assert found.found


async def test_a_provider_failing_to_answer_is_an_error_not_a_none(
    provider: tuple[FakeProviderApi, CallControl],
) -> None:
    fake, control = provider
    fake.fail_next(500, times=FAST.attempts)
    with pytest.raises(ProviderApiError):
        await control.find_dialled(TO, FROM, a_moment_ago())


@pytest.mark.parametrize(
    "make_control", [twilio_control, telnyx_control, plivo_control], ids=["twilio", "telnyx", "plivo"]
)
async def test_an_unreachable_provider_is_an_error_not_a_none(make_control) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProviderApiError):
            await make_control(UNREACHABLE, client).find_dialled(TO, FROM, a_moment_ago())


async def test_an_ended_call_is_found_in_the_records(provider: tuple[FakeProviderApi, CallControl]) -> None:
    fake, control = provider
    since = a_moment_ago()
    fake.initiate_delay = 0.01
    fake.ring_seconds = 0.01
    fake.queue_outcome("busy")
    await control.dial(dial_request())
    call = await fake.wait_for_call()
    await call.ended.wait()
    assert (await control.find_dialled(TO, FROM, since)).found


# --- the decision: what the Calls recorded and the provider's list say -----------------------------------


@dataclass
class Control:
    """A provider client whose call list answers `lookup` (or raises `failure`)."""

    lookup: DialLookup = field(default_factory=lambda: DialLookup(()))
    failure: Exception | None = None
    asked: list[tuple[str, str, datetime]] = field(default_factory=list)

    async def find_dialled(self, to: str, from_: str, since: datetime) -> DialLookup:
        self.asked.append((to, from_, since))
        if self.failure is not None:
            raise self.failure
        return self.lookup


@dataclass
class World:
    control: Control
    calls: list[CallRow]
    ended: list[str] = field(default_factory=list)
    legs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def services(self) -> Any:
        plan = SimpleNamespace(
            control=SimpleNamespace(client=self.control, provider=SimpleNamespace(name="twilio")),
            outgoing=SimpleNamespace(to=TO, from_=FROM),
        )

        async def calls_of(_: str) -> list[CallRow]:
            return self.calls

        async def agent(agent_id: str) -> Any:
            return SimpleNamespace(id=agent_id, call_template={})

        async def plan_dial(*_: Any) -> Any:
            return plan

        async def update_leg(call_id: str, **values: Any) -> None:
            self.legs[call_id] = values

        async def end(row: CallRow, *_: Any) -> bool:
            self.ended.append(row.id)
            return True

        return SimpleNamespace(
            batches=SimpleNamespace(calls_of=calls_of),
            agents=SimpleNamespace(get=agent),
            legs=SimpleNamespace(plan_dial=plan_dial),
            calls_repo=SimpleNamespace(update_leg=update_leg),
            calls=SimpleNamespace(end=end),
        )


DIAL_BEGAN = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
BATCH = SimpleNamespace(id="b", agent_id="agent-1")
SCHEDULED = SimpleNamespace(
    id="s1", spec={"medium": {"twilio": {"outgoing": {"to": TO, "from": FROM}}}}, dial_started=DIAL_BEGAN
)


def call_row(call_id: str, created: datetime, provider_call_id: str | None = None) -> CallRow:
    return CallRow(id=call_id, created=created, medium_kind="twilio", provider_call_id=provider_call_id)


async def settle(world: World) -> Reconciliation:
    return await reconcile_call(world.services(), BATCH, SCHEDULED)  # type: ignore[arg-type]


async def test_no_call_created_since_the_dial_began_is_not_dialled_without_asking() -> None:
    earlier = call_row("old", DIAL_BEGAN - timedelta(minutes=5), "CAold")
    world = World(Control(), [earlier])
    assert (await settle(world)).outcome is Settled.NOT_DIALLED
    assert world.control.asked == []


async def test_a_call_with_the_providers_answer_recorded_is_dialled_without_asking() -> None:
    world = World(Control(), [call_row("c1", DIAL_BEGAN + timedelta(seconds=1), "CA1")])
    assert await settle(world) == Reconciliation(Settled.DIALLED, "the provider's answer was recorded", "c1")
    assert world.control.asked == []


async def test_a_call_the_provider_lists_is_recorded_on_the_call_and_dialled() -> None:
    world = World(Control(DialLookup(("CAnew",))), [call_row("c1", DIAL_BEGAN + timedelta(seconds=1))])
    settled = await settle(world)
    assert (settled.outcome, settled.call_id) == (Settled.DIALLED, "c1")
    assert world.legs["c1"]["provider_call_id"] == "CAnew"
    ((to, from_, since),) = world.control.asked
    assert (to, from_) == (TO, FROM) and since <= DIAL_BEGAN


async def test_only_an_earlier_dial_listed_is_provably_none_and_the_call_ends() -> None:
    earlier = call_row("old", DIAL_BEGAN - timedelta(seconds=1), "CAold")
    world = World(Control(DialLookup(("CAold",))), [call_row("c1", DIAL_BEGAN), earlier])
    assert (await settle(world)).outcome is Settled.NOT_DIALLED
    assert world.ended == ["c1"]


async def test_a_provider_that_cannot_answer_leaves_the_outcome_unknown() -> None:
    failure = ProviderApiError("twilio", "list calls", 503, None, "unavailable")
    world = World(Control(failure=failure), [call_row("c1", DIAL_BEGAN)])
    settled = await settle(world)
    assert settled.outcome is Settled.UNKNOWN and "unavailable" in settled.detail
    assert world.ended == [] and world.legs == {}


async def test_a_provider_without_a_call_list_leaves_the_outcome_unknown() -> None:
    world = World(
        Control(failure=NotImplementedError("exotel has no call list")), [call_row("c1", DIAL_BEGAN)]
    )
    assert (await settle(world)).outcome is Settled.UNKNOWN


async def test_a_dial_listed_by_its_request_id_is_recorded_as_the_request() -> None:
    world = World(Control(DialLookup((), ("req-1",))), [call_row("c1", DIAL_BEGAN)])
    assert (await settle(world)).outcome is Settled.DIALLED
    assert world.legs["c1"]["provider_request_id"] == "req-1"


async def test_a_dial_marked_before_its_start_was_recorded_is_never_redialled() -> None:
    world = World(Control(), [call_row("c1", DIAL_BEGAN)])
    unrecorded = SimpleNamespace(**{**vars(SCHEDULED), "dial_started": None})
    settled = await reconcile_call(world.services(), BATCH, unrecorded)  # type: ignore[arg-type]
    assert settled.outcome is Settled.UNKNOWN and world.control.asked == []
