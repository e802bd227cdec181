"""The webhook outbox's delivery loop, on SQLite and PostgreSQL, against a real receiver on loopback.

The loop's fallback poll is switched off (`POLL_S` an hour), so every delivery here also shows that writing
a row, or an attempt finishing, wakes the loop. Retry times run on an injected clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import select

from app.store.db import Database
from app.store.secret_box import SecretBox
from app.store.tables import WebhookDeliveryRow, WebhookRow
from app.store.webhooks import DELIVERED, FAILED, PENDING, DeliveryRepository, Destination, WebhookRepository
from app.webhooks import outbox as outbox_module
from app.webhooks.outbox import MAX_RETRIES, WebhookOutbox, retry_delay
from tests.conftest import wait_for
from tests.webhook_receiver import WebhookReceiver, signature_verifies

BASE_S = 30.0
BODY = orjson.dumps({"event": "call.ended", "call": {"callId": "c1"}})


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "POLL_S", 3600.0)


@pytest.fixture
def box() -> SecretBox:
    return SecretBox("outbox-test-key")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deliveries(database: Database, box: SecretBox) -> DeliveryRepository:
    return DeliveryRepository(database, box)


@pytest.fixture
def webhooks(database: Database, box: SecretBox) -> WebhookRepository:
    return WebhookRepository(database, box)


@pytest.fixture
async def make_outbox(
    deliveries: DeliveryRepository, webhooks: WebhookRepository, clock: Clock
) -> AsyncIterator[Callable[..., WebhookOutbox]]:
    started: list[WebhookOutbox] = []

    async def make(timeout_s: float = 5.0) -> WebhookOutbox:
        outbox = WebhookOutbox(deliveries, webhooks, retry_base_s=BASE_S, timeout_s=timeout_s, clock=clock)
        await outbox.start()
        started.append(outbox)
        return outbox

    yield make  # type: ignore[misc]
    for outbox in started:
        await outbox.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(status=204) as running:
        yield running


async def enqueue(
    outbox: WebhookOutbox,
    clock: Clock,
    url: str,
    secrets: list[str] | None = None,
    webhook_id: str | None = None,
) -> str:
    (delivery_id,) = await outbox.deliveries.enqueue(
        "c1", "call.ended", BODY, [Destination(url, secrets or ["s"], webhook_id)], clock()
    )
    outbox.wake()
    return delivery_id


async def row_of(database: Database, delivery_id: str) -> WebhookDeliveryRow:
    async with database.session() as session:
        row = await session.scalar(select(WebhookDeliveryRow).where(WebhookDeliveryRow.id == delivery_id))
        assert row is not None
        return row


async def attempts_reach(database: Database, delivery_id: str, attempts: int) -> WebhookDeliveryRow:
    async def reached() -> WebhookDeliveryRow | None:
        row = await row_of(database, delivery_id)
        return row if row.attempts >= attempts and row.lease_owner is None else None

    return await wait_for(reached)


def test_retries_wait_the_base_then_twice_as_long_each_time_ten_retries_in_all() -> None:
    delays = [retry_delay(n, BASE_S) for n in range(1, MAX_RETRIES + 2)]
    assert delays == [30.0 * 2**k for k in range(10)] + [None]


async def test_a_delivery_is_posted_signed_with_each_secret(
    make_outbox: Callable[..., WebhookOutbox], receiver: WebhookReceiver, clock: Clock
) -> None:
    outbox = await make_outbox()
    await enqueue(outbox, clock, receiver.url, secrets=["first-secret", "second-secret"])
    headers, body = await asyncio.wait_for(receiver.received.get(), 10)
    assert body == BODY and headers["content-type"] == "application/json"
    assert len(headers["x-callbridge-webhook-signature"].split(",")) == 2
    assert signature_verifies("first-secret", headers, body)
    assert signature_verifies("second-secret", headers, body)
    assert not signature_verifies("another-secret", headers, body)


async def test_a_2xx_marks_the_delivery_delivered(
    make_outbox: Callable[..., WebhookOutbox], receiver: WebhookReceiver, clock: Clock, database: Database
) -> None:
    delivery_id = await enqueue(await make_outbox(), clock, receiver.url)

    async def delivered() -> bool:
        return (await row_of(database, delivery_id)).status == DELIVERED

    await wait_for(delivered)


async def test_failed_attempts_are_retried_on_the_doubling_schedule(
    make_outbox: Callable[..., WebhookOutbox], receiver: WebhookReceiver, clock: Clock, database: Database
) -> None:
    receiver.status = 500
    outbox = await make_outbox()
    delivery_id = await enqueue(outbox, clock, receiver.url)
    waits = []
    for attempt in range(1, 4):
        row = await attempts_reach(database, delivery_id, attempt)
        waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at
        outbox.wake()
    assert waits == [30.0, 60.0, 120.0]
    assert row.status == PENDING and row.last_error == "answered HTTP 500"


async def test_a_delivery_gives_up_after_ten_retries(
    make_outbox: Callable[..., WebhookOutbox], receiver: WebhookReceiver, clock: Clock, database: Database
) -> None:
    receiver.status = 503
    outbox = await make_outbox()
    delivery_id = await enqueue(outbox, clock, receiver.url)
    for attempt in range(1, MAX_RETRIES + 2):
        row = await attempts_reach(database, delivery_id, attempt)
        clock.now = row.next_attempt_at + timedelta(days=1)
        outbox.wake()
    assert row.status == FAILED and row.attempts == MAX_RETRIES + 1
    assert receiver.received.qsize() == MAX_RETRIES + 1


async def test_an_unreachable_receiver_is_a_failed_attempt(
    make_outbox: Callable[..., WebhookOutbox], clock: Clock, database: Database
) -> None:
    async with WebhookReceiver() as gone:
        url = gone.url
    delivery_id = await enqueue(await make_outbox(), clock, url)
    row = await attempts_reach(database, delivery_id, 1)
    assert row.status == PENDING and row.last_error.startswith("could not be reached")


async def test_a_receiver_that_never_answers_is_a_failed_attempt_after_the_timeout(
    make_outbox: Callable[..., WebhookOutbox], clock: Clock, database: Database
) -> None:
    async with WebhookReceiver(hold=True) as silent:
        delivery_id = await enqueue(await make_outbox(timeout_s=0.3), clock, silent.url)
        row = await attempts_reach(database, delivery_id, 1)
    assert row.last_error == "no answer within 0.3 s"


async def test_a_slow_receiver_does_not_delay_another_receivers_delivery(
    make_outbox: Callable[..., WebhookOutbox], receiver: WebhookReceiver, clock: Clock, database: Database
) -> None:
    async with WebhookReceiver(hold=True) as slow:
        outbox = await make_outbox(timeout_s=60)
        slow_id = await enqueue(outbox, clock, slow.url)
        await asyncio.wait_for(slow.received.get(), 10)  # its attempt is under way, unanswered
        fast_id = await enqueue(outbox, clock, receiver.url)

        async def fast_delivered() -> bool:
            return (await row_of(database, fast_id)).status == DELIVERED

        await wait_for(fast_delivered)
        slow_row = await row_of(database, slow_id)
        assert slow_row.status == PENDING and slow_row.lease_owner is not None


async def test_stopping_releases_an_attempt_under_way_for_the_next_instance(
    make_outbox: Callable[..., WebhookOutbox],
    receiver: WebhookReceiver,
    clock: Clock,
    database: Database,
) -> None:
    async with WebhookReceiver(hold=True) as slow:
        first = await make_outbox(timeout_s=60)
        delivery_id = await enqueue(first, clock, slow.url)
        await asyncio.wait_for(slow.received.get(), 10)
        await first.stop()
    row = await row_of(database, delivery_id)
    assert row.status == PENDING and row.lease_owner is None and row.attempts == 0
    async with database.session.begin() as session:  # the receiver moved: the same row, a live URL
        (await session.get_one(WebhookDeliveryRow, row.seq)).url = receiver.url
    (await make_outbox()).wake()
    await asyncio.wait_for(receiver.received.get(), 10)


async def test_a_failure_makes_the_webhook_unhealthy_and_a_success_normal_again(
    make_outbox: Callable[..., WebhookOutbox],
    receiver: WebhookReceiver,
    clock: Clock,
    database: Database,
    webhooks: WebhookRepository,
) -> None:
    webhook = await webhooks.add(
        WebhookRow(
            id="w1",
            created=clock(),
            url=receiver.url,
            events=["call.ended"],
            secrets=["s"],
            status="normal",
            recent_failures=[],
        )
    )
    receiver.status = 500
    outbox = await make_outbox()
    delivery_id = await enqueue(outbox, clock, receiver.url, webhook_id=webhook.id)
    row = await attempts_reach(database, delivery_id, 1)

    async def status_is(status: str) -> WebhookRow | None:
        current = await webhooks.get(webhook.id)
        return current if current is not None and current.status == status else None

    unhealthy = await wait_for(lambda: status_is("unhealthy"))
    assert unhealthy.recent_failures == [{"timestamp": clock.now.isoformat(), "failure": "answered HTTP 500"}]
    receiver.status = 200
    clock.now = row.next_attempt_at
    outbox.wake()
    healthy = await wait_for(lambda: status_is("normal"))
    assert healthy.last_status_change == clock.now and len(healthy.recent_failures) == 1


async def test_a_webhook_remembers_its_last_ten_failures(webhooks: WebhookRepository, clock: Clock) -> None:
    await webhooks.add(
        WebhookRow(
            id="w1",
            created=clock(),
            url="http://x",
            events=["call.ended"],
            secrets=[],
            status="normal",
            recent_failures=[],
        )
    )
    for n in range(12):
        await webhooks.record_outcome("w1", f"failure {n}", clock())
    row = await webhooks.get("w1")
    assert row is not None and [f["failure"] for f in row.recent_failures] == [
        f"failure {n}" for n in range(2, 12)
    ]


async def test_two_instances_on_one_database_deliver_each_row_once(
    make_outbox: Callable[..., WebhookOutbox],
    receiver: WebhookReceiver,
    clock: Clock,
    deliveries: DeliveryRepository,
) -> None:
    first, second = await make_outbox(), await make_outbox()
    destinations = [Destination(receiver.url, ["s"])]
    for n in range(20):
        await deliveries.enqueue(f"c{n}", "call.ended", orjson.dumps({"n": n}), destinations, clock())
        first.wake()
        second.wake()
    got = [orjson.loads((await asyncio.wait_for(receiver.received.get(), 10))[1])["n"] for _ in range(20)]
    assert sorted(got) == list(range(20))

    async def all_delivered() -> bool:
        rows = [row for n in range(20) for row in await deliveries.of_call(f"c{n}")]
        return all(row.status == DELIVERED for row in rows)

    await wait_for(all_delivered)
    assert receiver.received.empty()
