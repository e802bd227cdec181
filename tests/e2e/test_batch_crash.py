"""Exactly once under SIGKILL: real `callbridge serve` processes dial a batch through the fake Twilio, Telnyx
(TeXML) and Plivo APIs — its calls spread over the three by their medium, so each provider's reconciliation
(its call list) settles the dials left unknown — and are killed at random points (seeded) — while idle,
right after a claim, in the middle of a dial request (the provider dialled, callbridge has not heard back),
after the provider answered — and restarted on the same database. Seen from the providers: no number is
ever dialled twice, and every scheduled call ends with a fate (SUCCESS with its one dial, or ERROR / EXPIRED)
once the leases of the killed instances have run out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeProviderApi
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio_api import FakeTwilioApi
from tests.conftest import (
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    PLIVO_CONFIG,
    TELNYX_ACCOUNT_SID,
    TELNYX_API_KEY,
    TELNYX_CONFIG,
    TELNYX_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    import_config,
    wait_for,
)
from tests.e2e.conftest import TELNYX_APPLICATION_SID
from tests.e2e.instances import Instance

pytestmark = pytest.mark.slow

FROM = "+15550008888"
CALLS = 60
#: The batch's pace: its dials last about as long as the kills and restarts (≈ 15 s).
CALLS_PER_MINUTE = 240
KILLS = 5
LEASE_S = 2.0
#: The env of every instance: a short lease, a quick scheduler, one secret key for a shared database.
ENV = {
    "CALLBRIDGE_BATCH_LEASE": str(LEASE_S),
    "CALLBRIDGE_SCHEDULER_INTERVAL": "0.2",
    "CALLBRIDGE_SECRET_KEY": "batch-crash-test-secret-key",
}
FINAL = {"SUCCESS", "ERROR", "EXPIRED"}
#: Call i of a batch is dialled through PROVIDERS[i % 3].
PROVIDERS = ("twilio", "telnyx", "plivo")
#: How long each fake holds back its answer to a create (the call is dialled at once).
ANSWER_DELAY_S = 0.3
#: The kills' seed (CALLBRIDGE_CRASH_SEED runs other kill points).
SEED = int(os.environ.get("CALLBRIDGE_CRASH_SEED", "144"))


class Providers(dict[str, FakeProviderApi]):
    """The three fake provider APIs by name, and the dials made through all of them."""

    @property
    def dials(self) -> Counter[str]:
        """Calls dialled to each number, through any of the providers."""
        return sum((api.dials for api in self.values()), Counter())

    def configs(self) -> dict[str, dict[str, Any]]:
        """Each provider's callbridge config, calling its fake (Telnyx's with its TeXML accountSid, which
        its reconciliation lists calls of)."""
        telnyx = {**TELNYX_CONFIG, "applicationSid": TELNYX_APPLICATION_SID}
        given = {"twilio": TWILIO_CONFIG, "telnyx": telnyx, "plivo": PLIVO_CONFIG}
        return {name: {**given[name], "apiBaseUrl": api.base_url} for name, api in self.items()}


@pytest.fixture
async def provider_apis() -> AsyncIterator[Providers]:
    """The providers: short calls, and a slow answer to each create (the dial is made at once), so kills
    often fall inside a dial request."""
    apis = Providers(
        twilio=FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN),
        telnyx=FakeTelnyxApi(TELNYX_API_KEY, TELNYX_KEY, account_sid=TELNYX_ACCOUNT_SID),
        plivo=FakePlivoApi(PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN),
    )
    for api in apis.values():
        api.callee = CallScript(audio=speech_like(0.3, 8000), tail_seconds=0.2)
        api.answer_delay = ANSWER_DELAY_S
        await api.start()
    yield apis
    for api in apis.values():
        await api.stop()


async def start_batch(server: RunningServer, apis: Providers, numbers: list[str]) -> tuple[str, str]:
    """Import the fakes' configs, make an agent and post the batch; (agent id, batch id)."""
    for name, config in apis.configs().items():
        await import_config(server, name, config)
    async with server.api() as client:
        response = await client.post("/api/agents", json={"name": "crash", "callTemplate": {}})
        agent = response.json()["agentId"]
        calls = [
            {"medium": {PROVIDERS[i % len(PROVIDERS)]: {"outgoing": {"to": to, "from": FROM}}}}
            for i, to in enumerate(numbers)
        ]
        body = {"calls": calls, "callsPerMinute": CALLS_PER_MINUTE}
        response = await client.post(f"/api/agents/{agent}/scheduled_batches", json=body)
        assert response.status_code == 201, response.text
        return agent, response.json()["batchId"]


async def kill_at(rng: random.Random, apis: Providers, instance: Instance) -> str:
    """Kill `instance` at a random point: after a random while, or the moment a dial request arrives (at
    any of the providers)."""
    point = rng.choice(["anytime", "mid-request", "after-answer"])
    if point == "anytime":
        await asyncio.sleep(rng.uniform(0.1, 1.5))
    else:
        before = apis.dials.total()
        with contextlib.suppress(AssertionError):  # the batch may have no dial left to make
            await wait_for(lambda: _more(apis, before), within=3, interval=0.01)
        if point == "after-answer":
            await asyncio.sleep(ANSWER_DELAY_S + rng.uniform(0.0, 0.1))
    await instance.kill()
    return point


async def _more(apis: Providers, than: int) -> bool:
    return apis.dials.total() > than


async def fates(server: RunningServer, agent: str, batch: str) -> list[dict[str, Any]]:
    async with server.api() as client:
        path = f"/api/agents/{agent}/scheduled_batches/{batch}/scheduled_calls"
        return (await client.get(path, params={"pageSize": 200})).json()["results"]


async def all_final(server: RunningServer, agent: str, batch: str) -> list[dict[str, Any]] | None:
    calls = await fates(server, agent, batch)
    return calls if calls and all(call["status"] in FINAL for call in calls) else None


def numbers_of(run: str) -> list[str]:
    prefix = {"sqlite": "+1555301", "postgres": "+1555302"}[run]
    return [f"{prefix}{n:04d}" for n in range(CALLS)]


def check(calls: list[dict[str, Any]], apis: Providers, numbers: list[str]) -> None:
    """No number dialled twice (through any provider); SUCCESS exactly when it was dialled, through the
    provider of its medium (ERROR "outcome unknown" at most once)."""
    dials = apis.dials
    assert max(dials[number] for number in numbers) <= 1, {n: dials[n] for n in numbers if dials[n] > 1}
    for call in calls:
        ((provider, medium),) = call["medium"].items()
        to = medium["outgoing"]["to"]
        if call["status"] == "SUCCESS":
            assert apis[provider].dials[to] == 1, (to, call)
        elif call["status"] == "EXPIRED":
            assert dials[to] == 0, (to, call)


def report(
    label: str, points: list[str], instances: list[Instance], apis: Providers, calls: list[dict]
) -> None:
    found = [settled for instance in instances for settled in instance.reconciled()]
    outcomes = Counter(outcome for outcome, _ in found)
    # "{provider} lists call ..." / "{provider} lists no call ...": settled by that provider's call list
    listed = Counter(f"{how.split()[0]} {outcome}" for outcome, how in found if how.split()[0] in PROVIDERS)
    statuses = {s: sum(1 for c in calls if c["status"] == s) for s in FINAL}
    dials = {name: api.dials.total() for name, api in apis.items()}
    print(
        f"\n{label}: kills at {points}; reconciled {len(found)} unknown dials: {dict(outcomes)}, "
        f"by a provider's call list {dict(listed)}; fates {statuses}; dials {dials}"
    )


async def test_an_instance_killed_mid_batch_and_restarted_dials_no_one_twice(
    tmp_path: Path, provider_apis: Providers
) -> None:
    rng = random.Random(SEED)
    instance = Instance(tmp_path, {**ENV, "CALLBRIDGE_DATA_DIR": str(tmp_path / "data")}, "sqlite")
    numbers = numbers_of("sqlite")
    server = await instance.start()
    try:
        agent, batch = await start_batch(server, provider_apis, numbers)
        points = []
        for _ in range(KILLS):
            points.append(await kill_at(rng, provider_apis, instance))
            server = await instance.start()
        calls = await wait_for(lambda: all_final(server, agent, batch), within=30, interval=0.25)
    finally:
        await instance.stop()
    report("sqlite", points, [instance], provider_apis, calls)
    check(calls, provider_apis, numbers)


@pytest.mark.postgres
async def test_two_instances_sharing_a_batch_one_killed_again_and_again_dial_no_one_twice(
    tmp_path: Path, provider_apis: Providers, fresh_postgres_url: str
) -> None:
    rng = random.Random(SEED + 1)
    env = {**ENV, "CALLBRIDGE_DATABASE_URL": fresh_postgres_url}
    steady = Instance(tmp_path, env, "steady")
    killed = Instance(tmp_path, env, "killed")
    numbers = numbers_of("postgres")
    server = await steady.start()
    await killed.start()
    try:
        agent, batch = await start_batch(server, provider_apis, numbers)
        points = []
        for _ in range(KILLS):
            points.append(await kill_at(rng, provider_apis, killed))
            await killed.start()
        calls = await wait_for(lambda: all_final(server, agent, batch), within=30, interval=0.25)
    finally:
        await killed.stop()
        await steady.stop()
    report("postgres", points, [steady, killed], provider_apis, calls)
    check(calls, provider_apis, numbers)
