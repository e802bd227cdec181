"""The Redis cluster against a real Redis: which instance holds a call, control between instances, a dead
instance's calls ended by another, and an instance (or every instance) cut off from Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from app.cluster.base import ControlReply
from app.cluster.redis_cluster import RedisCluster
from app.errors import ControlTimedOut, Unavailable
from tests.cluster.tcp_proxy import CuttableProxy
from tests.conftest import REDIS_URL, require_redis, wait_for

#: A short lease, so that a lapsed one is seen in about a second.
LEASE_S = 1.0


class FakeClock:
    """The reaper's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Instance:
    """A RedisCluster with what it was asked to do recorded."""

    cluster: RedisCluster
    controlled: list[tuple[str, bytes]] = field(default_factory=list)
    orphaned: list[tuple[str, str]] = field(default_factory=list)
    answer: ControlReply = field(default_factory=lambda: ControlReply(204))

    async def control(self, call_id: str, body: bytes) -> ControlReply:
        self.controlled.append((call_id, body))
        return self.answer

    async def orphan(self, call_id: str, holder: str) -> None:
        self.orphaned.append((call_id, holder))


@dataclass
class Cluster:
    prefix: str
    redis: Redis
    instances: list[Instance] = field(default_factory=list)
    proxies: list[CuttableProxy] = field(default_factory=list)

    async def instance(
        self, name: str, *, through: CuttableProxy | None = None, clock: FakeClock | None = None
    ) -> Instance:
        url = through.url if through else REDIS_URL
        extra = {"clock": clock} if clock else {}
        cluster = RedisCluster(url, LEASE_S, instance_id=name, prefix=self.prefix, **extra)
        instance = Instance(cluster)
        await cluster.start(instance.control, instance.orphan)
        self.instances.append(instance)
        return instance

    async def proxy(self) -> CuttableProxy:
        target = urlsplit(REDIS_URL)
        proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 6379)
        await proxy.start()
        self.proxies.append(proxy)
        return proxy

    async def holder(self, call_id: str) -> str | None:
        value = await self.redis.get(f"{self.prefix}:holder:{call_id}")
        return value.decode() if value is not None else None

    async def lease_held(self, name: str) -> bool:
        return bool(await self.redis.exists(f"{self.prefix}:instance:{name}"))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    await require_redis()
    prefix = f"cbtest-{uuid.uuid4().hex[:10]}"
    redis = Redis.from_url(REDIS_URL)
    state = Cluster(prefix, redis)
    try:
        yield state
    finally:
        for proxy in state.proxies:
            await proxy.stop()
        for instance in state.instances:
            await instance.cluster.stop()
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_a_claimed_call_is_written_as_held_by_its_instance(cluster: Cluster) -> None:
    a = await cluster.instance("a")
    a.cluster.registry.claim("call-1", object())
    assert await wait_for(lambda: cluster.holder("call-1")) == "a"


async def test_a_released_call_is_no_longer_held(cluster: Cluster) -> None:
    a = await cluster.instance("a")
    session = object()
    a.cluster.registry.claim("call-1", session)
    await wait_for(lambda: cluster.holder("call-1"))
    a.cluster.registry.release("call-1", session)

    async def released() -> bool:
        return await cluster.holder("call-1") is None

    await wait_for(released)


async def test_control_for_a_call_another_instance_holds_is_carried_out_there(cluster: Cluster) -> None:
    a, b = await cluster.instance("a"), await cluster.instance("b")
    a.cluster.registry.claim("call-1", object())
    await wait_for(lambda: cluster.holder("call-1"))
    reply = await b.cluster.forward("call-1", b'{"type": "hang_up"}')
    assert reply == ControlReply(204, b"", {})
    assert a.controlled == [("call-1", b'{"type": "hang_up"}')]
    assert b.controlled == []


async def test_the_holders_refusal_comes_back_as_it_gave_it(cluster: Cluster) -> None:
    a, b = await cluster.instance("a"), await cluster.instance("b")
    a.answer = ControlReply(502, b'{"detail": "no", "code": "transfer_failed"}', {"Retry-After": "5"})
    a.cluster.registry.claim("call-1", object())
    await wait_for(lambda: cluster.holder("call-1"))
    assert await b.cluster.forward("call-1", b"{}") == a.answer


async def test_control_for_a_call_nobody_holds_is_left_to_this_instance(cluster: Cluster) -> None:
    b = await cluster.instance("b")
    assert await b.cluster.forward("call-unknown", b"{}") is None


async def test_control_for_a_call_held_here_is_left_to_this_instance(cluster: Cluster) -> None:
    a = await cluster.instance("a")
    a.cluster.registry.claim("call-1", object())
    await wait_for(lambda: cluster.holder("call-1"))
    assert await a.cluster.forward("call-1", b"{}") is None
    assert a.controlled == []


async def test_a_dead_instances_calls_are_ended_by_another_once_its_lease_has_been_gone_half_a_lease(
    cluster: Cluster,
) -> None:
    link = await cluster.proxy()
    a = await cluster.instance("a", through=link)
    clock = FakeClock()
    b = await cluster.instance("b", clock=clock)
    for call_id in ("call-1", "call-2"):
        a.cluster.registry.claim(call_id, object())
        await wait_for(lambda call_id=call_id: cluster.holder(call_id))
    await link.cut()  # a can no longer renew: to the others it is dead

    async def lapsed() -> bool:
        return not await cluster.lease_held("a")

    await wait_for(lapsed)
    await b.cluster.reap_dead()  # first seen gone
    assert b.orphaned == []
    clock.now += LEASE_S / 2
    await b.cluster.reap_dead()

    async def both_ended() -> bool:
        return sorted(b.orphaned) == [("call-1", "a"), ("call-2", "a")]

    await wait_for(both_ended)
    assert await cluster.holder("call-1") is None
    assert not await cluster.redis.sismember(f"{cluster.prefix}:instances", "a")


async def test_an_instance_cut_off_from_redis_refuses_new_work_and_keeps_its_calls(cluster: Cluster) -> None:
    link = await cluster.proxy()
    a = await cluster.instance("a", through=link)
    session = object()
    a.cluster.registry.claim("call-1", session)
    await wait_for(lambda: cluster.holder("call-1"))
    assert a.cluster.available
    await link.cut()

    async def unavailable() -> bool:
        return not a.cluster.available

    await wait_for(unavailable)
    assert a.cluster.registry.get("call-1") is session
    with pytest.raises(Unavailable):
        await a.cluster.forward("call-2", b"{}")


async def test_calls_claimed_while_redis_was_away_are_written_once_it_is_back(cluster: Cluster) -> None:
    link = await cluster.proxy()
    a = await cluster.instance("a", through=link)
    await link.cut()

    async def unavailable() -> bool:
        return not a.cluster.available

    await wait_for(unavailable)
    a.cluster.registry.claim("call-1", object())
    await link.restore()
    assert await wait_for(lambda: cluster.holder("call-1")) == "a"
    assert a.cluster.available


async def test_calls_lost_by_a_restarted_redis_are_written_again(cluster: Cluster) -> None:
    a = await cluster.instance("a")
    a.cluster.registry.claim("call-1", object())
    await wait_for(lambda: cluster.holder("call-1"))
    keys = [key async for key in cluster.redis.scan_iter(match=f"{cluster.prefix}:*")]
    await cluster.redis.delete(*keys)  # what a Redis restarted without persistence has
    assert await wait_for(lambda: cluster.holder("call-1")) == "a"


async def test_an_outage_of_redis_itself_is_not_taken_for_the_death_of_an_instance(cluster: Cluster) -> None:
    link = await cluster.proxy()
    a = await cluster.instance("a", through=link)
    clock = FakeClock()
    b = await cluster.instance("b", through=link, clock=clock)
    a.cluster.registry.claim("call-1", object())
    await wait_for(lambda: cluster.holder("call-1"))
    await link.cut()

    async def lapsed() -> bool:
        return not await cluster.lease_held("a")

    await wait_for(lapsed)  # longer than a lease without Redis: every lease has lapsed
    clock.now += 10 * LEASE_S
    await link.restore()

    async def renewed() -> bool:
        return await cluster.lease_held("a")

    await wait_for(renewed)
    clock.now += LEASE_S
    await b.cluster.reap_dead()
    assert b.orphaned == []
    assert await cluster.holder("call-1") == "a"


async def test_control_reaches_an_instance_again_once_its_link_to_redis_is_back(cluster: Cluster) -> None:
    link = await cluster.proxy()
    a = await cluster.instance("a", through=link)
    b = await cluster.instance("b")
    a.cluster.registry.claim("call-1", object())
    await wait_for(lambda: cluster.holder("call-1"))
    await link.cut()

    async def unavailable() -> bool:
        return not a.cluster.available

    await wait_for(unavailable)
    await link.restore()

    async def answered() -> bool:
        try:
            return await b.cluster.forward("call-1", b"{}") == ControlReply(204)
        except ControlTimedOut:
            return False

    await wait_for(answered, within=20)
    assert a.controlled
