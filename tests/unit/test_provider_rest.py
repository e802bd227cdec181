"""The provider REST layer: retries, back-off, Retry-After, and each provider's error and field names."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from app.providers.control import CallControl, DialRequest, pascal_case, snake_case
from app.providers.plivo import PlivoCallControl, plivo_error
from app.providers.rest import ProviderApiError, ProviderHttp, RetryPolicy, retry_after_seconds
from app.providers.telnyx import TelnyxCallControl, telnyx_error
from app.providers.twilio import TwilioCallControl, twilio_error
from app.schemas.telephony import PlivoConfig, TelnyxConfig, TwilioConfig
from tests.conftest import telnyx_public_key

FAST = RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=2.0, timeout_s=1.0)


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.AsyncClient, list[float]]:
    """A client whose requests get `answers` in order; returns it and the times requests arrived."""
    times: list[float] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), times


def http(client: httpx.AsyncClient, policy: RetryPolicy = FAST) -> ProviderHttp:
    return ProviderHttp("twilio", client, "https://api.example.test", parse_error=twilio_error, policy=policy)


async def test_a_429_is_retried_after_the_retry_after_it_gives() -> None:
    client, times = scripted(
        httpx.Response(429, headers={"Retry-After": "0.3"}, json={"code": 20429, "message": "Too Many"}),
        httpx.Response(201, json={"sid": "CA1"}),
    )
    response = await http(client).send("create call", "POST", "/Calls.json", form={}, repeatable=False)
    assert response.status_code == 201
    assert times[1] - times[0] >= 0.29


async def test_a_5xx_is_retried_for_a_request_that_is_safe_to_repeat() -> None:
    client, times = scripted(httpx.Response(503), httpx.Response(500), httpx.Response(200, json={}))
    response = await http(client).send("hang up", "POST", "/Calls/CA1.json", form={})
    assert response.status_code == 200 and len(times) == 3


async def test_a_5xx_on_a_dial_is_not_retried_because_it_may_have_dialled() -> None:
    client, times = scripted(httpx.Response(500, json={"code": 20500, "message": "Internal"}))
    with pytest.raises(ProviderApiError) as failure:
        await http(client).send("create call", "POST", "/Calls.json", form={}, repeatable=False)
    assert len(times) == 1
    assert failure.value.status == 500 and failure.value.code == "20500" and failure.value.temporary
    assert failure.value.outcome_unknown


async def test_a_connection_refused_is_retried_even_for_a_dial() -> None:
    client, times = scripted(httpx.ConnectError("refused"), httpx.Response(201, json={"sid": "CA1"}))
    response = await http(client).send("create call", "POST", "/Calls.json", form={}, repeatable=False)
    assert response.status_code == 201 and len(times) == 2


async def test_a_read_timeout_on_a_dial_is_not_retried() -> None:
    client, times = scripted(httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderApiError) as failure:
        await http(client).send("create call", "POST", "/Calls.json", form={}, repeatable=False)
    assert len(times) == 1 and failure.value.status is None
    assert failure.value.outcome_unknown  # it may have dialled


async def test_a_connection_lost_after_sending_a_dial_leaves_its_outcome_unknown() -> None:
    client, times = scripted(httpx.ReadError(""))
    with pytest.raises(ProviderApiError) as failure:
        await http(client).send("create call", "POST", "/Calls.json", form={}, repeatable=False)
    assert len(times) == 1 and failure.value.outcome_unknown


async def test_a_4xx_on_a_dial_is_a_known_refusal() -> None:
    client, _ = scripted(httpx.Response(400, json={"code": 21211, "message": "Invalid 'To'"}))
    with pytest.raises(ProviderApiError) as failure:
        await http(client).send("create call", "POST", "/Calls.json", form={}, repeatable=False)
    assert not failure.value.outcome_unknown


async def test_a_4xx_is_a_refusal_and_is_not_retried() -> None:
    client, times = scripted(httpx.Response(400, json={"code": 21211, "message": "Invalid 'To'"}))
    with pytest.raises(ProviderApiError) as failure:
        await http(client).send("create call", "POST", "/Calls.json", form={}, repeatable=False)
    assert len(times) == 1 and not failure.value.temporary
    assert "Invalid 'To'" in failure.value.detail and "21211" in failure.value.detail


async def test_retries_stop_after_the_policys_attempts() -> None:
    client, times = scripted(*[httpx.Response(429) for _ in range(3)])
    with pytest.raises(ProviderApiError):
        await http(client).send("hang up", "POST", "/x", form={})
    assert len(times) == 3


async def test_a_retry_after_longer_than_the_policy_waits_for_fails_at_once() -> None:
    client, times = scripted(httpx.Response(429, headers={"Retry-After": "120"}))
    with pytest.raises(ProviderApiError) as failure:
        await http(client).send("hang up", "POST", "/x", form={})
    assert len(times) == 1 and failure.value.retry_after_s == 120


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds("0.5") == 0.5
    now = time.time()
    assert 9 <= (retry_after_seconds(formatdate(now + 10, usegmt=True), now) or 0) <= 10
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_each_providers_error_body_gives_its_code_and_message() -> None:
    twilio = httpx.Response(404, json={"code": 20404, "message": "not found", "status": 404})
    telnyx = httpx.Response(422, json={"errors": [{"code": "90018", "title": "Call has already ended"}]})
    plivo = httpx.Response(404, json={"api_id": "x", "error": "call not found"})
    assert twilio_error(twilio) == ("20404", "not found")
    assert telnyx_error(telnyx) == ("90018", "Call has already ended")
    assert plivo_error(plivo) == (None, "call not found")
    assert twilio_error(httpx.Response(502, text="bad gateway")) == (None, "bad gateway")


def test_additional_params_take_each_providers_spelling() -> None:
    assert TwilioCallControl.additional_params({"record": True, "machine_detection": "Enable"}) == {
        "Record": True,
        "MachineDetection": "Enable",
    }
    assert PlivoCallControl.additional_params({"machineDetection": "true"}) == {"machine_detection": "true"}
    assert pascal_case("StatusCallbackEvent") == "StatusCallbackEvent"
    assert snake_case("ring_timeout") == "ring_timeout"


@pytest.mark.parametrize(
    ("control", "field"),
    [(TwilioCallControl, "statusCallback"), (TelnyxCallControl, "Url"), (PlivoCallControl, "answerUrl")],
)
def test_additional_params_may_not_replace_what_callbridge_needs(control: type, field: str) -> None:
    with pytest.raises(ValueError, match="may not set"):
        control.additional_params({field: "https://elsewhere.example"})


def _controls(client: httpx.AsyncClient) -> list[CallControl]:
    common = {"apiBaseUrl": "https://api.example.test"}
    return [
        TwilioCallControl(
            TwilioConfig.model_validate({"accountSid": "AC1", "authToken": "t", **common}), client, FAST
        ),
        TelnyxCallControl(
            TelnyxConfig.model_validate(
                {"apiKey": "k", "publicKey": telnyx_public_key(), "applicationSid": "1", **common}
            ),
            client,
            FAST,
        ),
        PlivoCallControl(
            PlivoConfig.model_validate({"authId": "MA1", "authToken": "t", **common}), client, FAST
        ),
    ]


DIAL = DialRequest("c1", "+15550001", "+15550002", "<Response/>", "https://a", "https://s", 30, 600)


@pytest.mark.parametrize("answer", [b"[]", b'"queued"', b"null", b"not json"])
@pytest.mark.parametrize("index", [0, 1, 2], ids=["twilio", "telnyx", "plivo"])
async def test_a_dial_answered_with_anything_but_a_json_object_is_a_provider_error(
    answer: bytes, index: int
) -> None:
    client, _ = scripted(httpx.Response(201, content=answer, headers={"content-type": "application/json"}))
    control = _controls(client)[index]
    with pytest.raises(ProviderApiError, match="not the JSON object") as raised:
        await control.dial(DIAL)
    assert raised.value.provider == control.provider and raised.value.temporary


@pytest.mark.parametrize("index", [0, 1, 2], ids=["twilio", "telnyx", "plivo"])
async def test_a_dial_taken_with_an_unreadable_answer_leaves_its_outcome_unknown(index: int) -> None:
    client, _ = scripted(httpx.Response(201, content=b"<html>ok</html>"))
    with pytest.raises(ProviderApiError) as raised:
        await _controls(client)[index].dial(DIAL)
    assert raised.value.outcome_unknown
