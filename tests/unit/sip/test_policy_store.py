"""SipPolicyStore: the cached policy, rebuilt on load and update, re-read once it is older than its age."""

from __future__ import annotations

from app.schemas.sip import SipConfigFields
from app.sip.config import SipPolicyStore

OPEN = SipConfigFields(allowed_cidr_ranges=["10.0.0.0/8"])


class FakeRepository:
    """The SIP config store in memory, counting reads."""

    def __init__(self) -> None:
        self.config = SipConfigFields()
        self.reads = 0

    async def get(self) -> SipConfigFields:
        self.reads += 1
        return self.config

    async def update(self, config: SipConfigFields) -> SipConfigFields:
        self.config = config
        return config


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def store_with(repository: FakeRepository, clock: FakeClock) -> SipPolicyStore:
    return SipPolicyStore(repository, max_age_s=5.0, clock=clock)  # type: ignore[arg-type]


def test_before_loading_nothing_is_allowed() -> None:
    assert not store_with(FakeRepository(), FakeClock()).current().source_allowed("10.0.0.1")


async def test_loading_applies_the_stored_config() -> None:
    repository = FakeRepository()
    repository.config = OPEN
    store = store_with(repository, FakeClock())
    await store.load()
    assert store.current().source_allowed("10.0.0.1")


async def test_an_update_applies_at_once() -> None:
    store = store_with(FakeRepository(), FakeClock())
    await store.update(OPEN)
    assert store.current().source_allowed("10.0.0.1")


async def test_fresh_uses_the_cache_while_it_is_young() -> None:
    repository, clock = FakeRepository(), FakeClock()
    store = store_with(repository, clock)
    await store.load()
    repository.config = OPEN  # another instance's PATCH
    clock.now += 4.9
    assert not (await store.fresh()).source_allowed("10.0.0.1")
    assert repository.reads == 1


async def test_fresh_re_reads_the_store_once_the_cache_is_old() -> None:
    repository, clock = FakeRepository(), FakeClock()
    store = store_with(repository, clock)
    await store.load()
    repository.config = OPEN
    clock.now += 5.0
    assert (await store.fresh()).source_allowed("10.0.0.1")
