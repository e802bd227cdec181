"""Per-source token buckets (app.sip.rate_limit) on a manual clock."""

from __future__ import annotations

import pytest

from app.sip.rate_limit import RateLimit, SourceRateLimiter

LIMITS = {"INVITE": RateLimit(rate=2.0, burst=3), "request": RateLimit(rate=10.0, burst=1)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> SourceRateLimiter:
    return SourceRateLimiter(LIMITS, clock=clock)


def test_a_burst_is_let_through_and_the_next_request_waits_for_a_token(limiter: SourceRateLimiter) -> None:
    assert [limiter.take("INVITE", "10.0.0.1") for _ in range(3)] == [None, None, None]
    assert limiter.take("INVITE", "10.0.0.1") == pytest.approx(0.5)


def test_tokens_come_back_at_the_rate(limiter: SourceRateLimiter, clock: Clock) -> None:
    for _ in range(3):
        limiter.take("INVITE", "10.0.0.1")
    clock.now += 0.5
    assert limiter.take("INVITE", "10.0.0.1") is None
    assert limiter.take("INVITE", "10.0.0.1") is not None


def test_an_idle_source_never_holds_more_than_its_burst(limiter: SourceRateLimiter, clock: Clock) -> None:
    limiter.take("INVITE", "10.0.0.1")
    clock.now += 3600
    assert [limiter.take("INVITE", "10.0.0.1") for _ in range(4)][-1] is not None


def test_each_source_has_its_own_bucket(limiter: SourceRateLimiter) -> None:
    for _ in range(3):
        limiter.take("INVITE", "10.0.0.1")
    assert limiter.take("INVITE", "10.0.0.1") is not None
    assert limiter.take("INVITE", "10.0.0.2") is None


def test_invites_and_other_requests_are_limited_apart(limiter: SourceRateLimiter) -> None:
    for _ in range(3):
        limiter.take("INVITE", "10.0.0.1")
    assert limiter.take("request", "10.0.0.1") is None
    assert limiter.take("request", "10.0.0.1") is not None
    assert limiter.take("INVITE", "10.0.0.1") is not None


def test_buckets_idle_until_full_again_are_forgotten(limiter: SourceRateLimiter, clock: Clock) -> None:
    for n in range(100):
        limiter.take("INVITE", f"10.0.0.{n}")
    clock.now += LIMITS["INVITE"].refill_s
    for n in range(100):
        limiter.take("INVITE", f"10.0.1.{n}")
    assert len(limiter) == 100  # the first hundred went as the second came


def test_no_more_than_max_buckets_are_kept(clock: Clock) -> None:
    limiter = SourceRateLimiter(LIMITS, max_buckets=50, clock=clock)
    for n in range(1000):
        limiter.take("INVITE", f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 50
