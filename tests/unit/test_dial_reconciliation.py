"""Settling a dial whose outcome a crash left unknown: each provider's client asks its call list (served by
the fake provider APIs as documented) whether a call to the number was created since the dial began."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.providers.control import CallControl, DialRequest
from app.providers.plivo import PlivoCallControl
from app.providers.rest import ProviderApiError, RetryPolicy
from app.providers.telnyx import TelnyxCallControl
from app.providers.twilio import TwilioCallControl
from app.schemas.telephony import PlivoConfig, TelnyxConfig, TwilioConfig
from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeProviderApi
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio_api import FakeTwilioApi
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
    assert lookup.found and fake.dials[TO] == 1
    if dialled.provider_call_id is not None:
        assert lookup.provider_call_ids == (dialled.provider_call_id,)


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
