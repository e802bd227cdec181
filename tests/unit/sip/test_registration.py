"""The REGISTER client on a fake clock, against a scripted registrar: what it sends, digest, refresh
timing, 423, back-off, keep-alive, de-register."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from app.sip.dialog import LocalAddress
from app.sip.message import SipRequest, SipResponse, parse_message, parse_uri, response_to, serialize
from app.sip.registration import (
    BACKOFF_MAX_S,
    RegistrationClient,
    RegistrationConfig,
    RegistrationOutcome,
    backoff_delay,
    contact_user,
    refresh_delay,
)
from app.sip.registrations import called_user
from app.sip.transport import Peer, TransportError
from tests.sip_peers.digest import digest_is_valid, sent_credentials
from tests.unit.sip.fake_clock import FakeClock

REGISTRATION_ID = "0b7c3f4e-1111-4222-8333-944455556666"
WALL = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
RESOLVED = {"pbx.example.com": "198.51.100.7", "edge.example.com": "203.0.113.9"}
CHALLENGE = 'Digest realm="pbx.example.com", nonce="n-{n}", qop="auth", algorithm={algorithm}'
#: Seconds of fake time between two looks at the registrar while waiting for a request.
STEP_S = 0.5


@dataclass
class Sent:
    """A request the client sent, when (fake time), where; `answer` gives it its final response."""

    request: SipRequest
    peer: Peer
    at: float
    answered: asyncio.Future[SipResponse] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def answer(self, status: int, *headers: tuple[str, str]) -> None:
        response = response_to(self.request, status, to_tag="reg-tag")
        for name, value in headers:
            response.headers.add(name, value)
        self.answered.set_result(response)

    def grant(self, seconds: int) -> None:
        contact = self.request.headers.get("Contact") or ""
        self.answer(200, ("Contact", f"{contact};expires={seconds}"))

    def challenge(self, algorithm: str = "MD5", n: int = 1) -> None:
        self.answer(401, ("WWW-Authenticate", CHALLENGE.format(n=n, algorithm=algorithm)))

    @property
    def expires(self) -> str | None:
        return self.request.headers.get("Expires")

    def credentials(self) -> dict[str, str]:
        value = self.request.headers.get("Authorization")
        assert value is not None, "no Authorization header"
        found = sent_credentials(f"Authorization: {value}", "Authorization")
        assert found is not None
        return found


class ScriptedRegistrar:
    """A RegisterChannel whose requests the test answers, on a fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: asyncio.Queue[Sent] = asyncio.Queue()
        self.pings: list[tuple[Peer, float]] = []
        self.ping_fails = False
        self.breaks = False

    def here(self, transport: str) -> LocalAddress:
        return LocalAddress(transport, "192.0.2.10", 5070)

    async def resolve(self, peer: Peer) -> Peer:
        if peer.host not in RESOLVED:
            raise TransportError(f"cannot resolve {peer.host}")
        return Peer(peer.transport, RESOLVED[peer.host], peer.port)

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        if self.breaks:
            self.breaks = False
            raise RuntimeError("a bug")
        sent = Sent(parse_message(serialize(request)), peer, self.clock.now())  # type: ignore[arg-type]
        await self.sent.put(sent)
        return await sent.answered

    async def ping(self, peer: Peer) -> None:
        self.pings.append((peer, self.clock.now()))
        if self.ping_fails:
            raise TransportError("connection reset")

    async def next(self, within_s: float = 4000.0) -> Sent:
        """The next request, moving fake time on in STEP_S steps (at most `within_s`) until it is sent."""
        return await self._until(lambda: not self.sent.empty(), within_s, self.sent.get_nowait)

    async def next_register(self, within_s: float = 4000.0) -> Sent:
        """The next REGISTER, the keep-alive OPTIONS before it answered 200."""
        while True:
            sent = await self.next(within_s)
            if sent.request.method != "OPTIONS":
                return sent
            sent.answer(200)

    async def next_ping(self, within_s: float = 4000.0) -> tuple[Peer, float]:
        count = len(self.pings)
        return await self._until(lambda: len(self.pings) > count, within_s, lambda: self.pings[-1])

    async def _until(self, ready, within_s, take):  # type: ignore[no-untyped-def]
        deadline = self.clock.now() + within_s
        while True:
            await settle()
            if ready():
                return take()
            if self.clock.now() >= deadline:
                raise AssertionError(f"nothing sent within {within_s} s of fake time")
            self.clock.advance(STEP_S)


async def settle() -> None:
    """Let the client's tasks run until they wait for something (time or an answer)."""
    for _ in range(20):
        await asyncio.sleep(0)


@dataclass
class Running:
    client: RegistrationClient
    registrar: ScriptedRegistrar
    clock: FakeClock
    outcomes: asyncio.Queue[RegistrationOutcome]

    async def outcome(self) -> RegistrationOutcome:
        return await asyncio.wait_for(self.outcomes.get(), timeout=5)

    async def registered(self, seconds: int = 600) -> Sent:
        """The first REGISTER challenged, answered and granted `seconds`; the granted request."""
        first = await self.registrar.next()
        first.challenge()
        second = await self.registrar.next()
        second.grant(seconds)
        assert (await self.outcome()).successful
        return second


def config(**overrides: object) -> RegistrationConfig:
    values: dict[str, object] = {
        "registration_id": REGISTRATION_ID,
        "username": "bot",
        "password": "botpass",
        "proxy": parse_uri("sip:pbx.example.com"),
    }
    values.update(overrides)
    return RegistrationConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def registration_config() -> RegistrationConfig:
    return config()


@pytest.fixture
async def running(registration_config: RegistrationConfig) -> AsyncIterator[Running]:
    clock = FakeClock()
    registrar = ScriptedRegistrar(clock)
    outcomes: asyncio.Queue[RegistrationOutcome] = asyncio.Queue()
    client = RegistrationClient(
        registration_config,
        registrar,
        outcomes.put_nowait,
        clock=clock,
        wall=lambda: WALL + timedelta(seconds=clock.now()),
        jitter=lambda: 0.0,
    )
    client.start()
    yield Running(client, registrar, clock, outcomes)
    await client.stop(deregister=False)


# --- what is sent -------------------------------------------------------------------------------------


async def test_the_register_goes_to_the_proxy_for_the_user_at_its_domain(running: Running) -> None:
    sent = await running.registrar.next()
    request = sent.request
    assert str(request.uri) == "sip:pbx.example.com"
    assert str(request.to.uri) == str(request.from_.uri) == "sip:bot@pbx.example.com"
    assert sent.peer == Peer("udp", "198.51.100.7", 5060)
    assert sent.expires == "600"


async def test_the_contact_user_is_the_registrations_own(running: Running) -> None:
    contact = (await running.registrar.next()).request.contact
    assert contact is not None and contact.uri.user == contact_user(REGISTRATION_ID)
    assert contact.uri.host == "192.0.2.10" and contact.uri.port == 5070


def test_contact_users_differ_between_registrations() -> None:
    assert contact_user(REGISTRATION_ID) != contact_user("0b7c3f4e-2222-4222-8333-944455556666")


@pytest.mark.parametrize(
    "registration_config",
    [config(outbound_proxy=parse_uri("sip:edge.example.com:5080;transport=tcp"))],
)
async def test_an_outbound_proxy_is_the_next_hop_while_the_aor_stays_on_the_proxy(running: Running) -> None:
    sent = await running.registrar.next()
    assert sent.peer == Peer("tcp", "203.0.113.9", 5080)
    assert sent.request.headers.get("Route") == "<sip:edge.example.com:5080;transport=tcp;lr>"
    assert str(sent.request.uri) == "sip:pbx.example.com"
    assert str(sent.request.to.uri) == "sip:bot@pbx.example.com"


@pytest.mark.parametrize("registration_config", [config(outbound_proxy=parse_uri("sip:edge.example.com"))])
async def test_the_proxy_and_the_outbound_proxy_are_trusted_once_bound(running: Running) -> None:
    assert not running.client.bound
    await running.registered()
    assert running.client.bound
    assert running.client.trusted_hosts == {"198.51.100.7", "203.0.113.9"}


@pytest.mark.parametrize(
    "registration_config",
    [config(proxy=parse_uri("sip:pbx.invalid"), outbound_proxy=parse_uri("sip:edge.example.com"))],
)
async def test_a_proxy_that_does_not_resolve_still_registers_through_the_outbound_proxy(
    running: Running,
) -> None:
    sent = await running.registrar.next()
    assert sent.peer.host == "203.0.113.9" and str(sent.request.uri) == "sip:pbx.invalid"


@pytest.mark.parametrize("registration_config", [config(proxy=parse_uri("sip:pbx.invalid"))])
async def test_a_proxy_that_does_not_resolve_is_reported(running: Running) -> None:
    outcome = await running.outcome()
    assert not outcome.successful and outcome.last_error == "cannot resolve pbx.invalid"


# --- digest -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_a_challenge_is_answered_with_digest(running: Running, algorithm: str) -> None:
    first = await running.registrar.next()
    first.challenge(algorithm)
    credentials = (await running.registrar.next()).credentials()
    assert credentials["algorithm"] == algorithm and credentials["qop"] == "auth"
    assert credentials["username"] == "bot"
    assert digest_is_valid(credentials, "REGISTER", "botpass")


@pytest.mark.parametrize("registration_config", [config(auth_user="1001")])
async def test_the_auth_user_is_the_digest_username(running: Running) -> None:
    (await running.registrar.next()).challenge()
    credentials = (await running.registrar.next()).credentials()
    assert credentials["username"] == "1001" and digest_is_valid(credentials, "REGISTER", "botpass")


async def test_a_second_challenge_after_the_credentials_reports_a_wrong_password(running: Running) -> None:
    (await running.registrar.next()).challenge()
    (await running.registrar.next()).challenge(n=2)
    outcome = await running.outcome()
    assert not outcome.successful
    assert outcome.last_error == ("401 Unauthorized after digest authentication: wrong password or username?")


# --- outcomes and refresh -----------------------------------------------------------------------------


async def test_a_grant_is_successful_with_its_expiry(running: Running) -> None:
    first = await running.registrar.next()
    first.grant(120)
    outcome = await running.outcome()
    assert outcome == RegistrationOutcome(True, None, WALL + timedelta(seconds=120))


async def test_a_refusal_is_reported_with_its_status(running: Running) -> None:
    (await running.registrar.next()).answer(403)
    assert await running.outcome() == RegistrationOutcome(False, "403 Forbidden", None)


async def test_no_answer_is_reported_as_a_timeout(running: Running) -> None:
    (await running.registrar.next()).answer(408)
    outcome = await running.outcome()
    assert outcome.last_error is not None and outcome.last_error.startswith("timeout")


async def test_a_long_binding_is_refreshed_a_minute_before_it_expires(running: Running) -> None:
    granted = await running.registered(3600)
    refresh = await running.registrar.next_register()
    assert refresh.at - granted.at == pytest.approx(3540, abs=STEP_S)
    assert refresh.request.call_id == granted.request.call_id
    assert refresh.request.cseq[0] > granted.request.cseq[0]


async def test_a_short_binding_is_refreshed_at_half(running: Running) -> None:
    granted = await running.registered(60)
    refresh = await running.registrar.next_register()
    assert refresh.at - granted.at == pytest.approx(30, abs=STEP_S)


def test_refresh_delays() -> None:
    assert [refresh_delay(s) for s in (60, 120, 600, 3600)] == [30, 60, 540, 3540]


async def test_a_423_is_retried_at_once_with_the_min_expires(running: Running) -> None:
    first = await running.registrar.next()
    first.answer(423, ("Min-Expires", "1800"))
    retry = await running.registrar.next()
    assert retry.at == first.at and retry.expires == "1800"


async def test_the_min_expires_is_kept_for_the_refreshes(running: Running) -> None:
    (await running.registrar.next()).answer(423, ("Min-Expires", "1800"))
    (await running.registrar.next()).grant(1800)
    assert (await running.outcome()).successful
    assert (await running.registrar.next_register()).expires == "1800"


# --- back-off -----------------------------------------------------------------------------------------


async def test_failures_back_off_doubling_with_jitter(running: Running) -> None:
    times = []
    for _ in range(4):
        sent = await running.registrar.next()
        times.append(sent.at)
        sent.answer(503)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # jitter 0 takes the 50 % end of 30, 60, 120 s
    assert gaps == pytest.approx([15, 30, 60], abs=STEP_S)


def test_the_back_off_is_bounded_and_jittered() -> None:
    assert backoff_delay(20, 0.999) <= BACKOFF_MAX_S
    assert backoff_delay(20, 0.0) == BACKOFF_MAX_S / 2
    assert backoff_delay(1, 0.5) == 22.5


async def test_a_retry_after_delays_the_next_attempt(running: Running) -> None:
    first = await running.registrar.next()
    first.answer(503, ("Retry-After", "120"))
    assert (await running.registrar.next()).at - first.at == pytest.approx(120, abs=STEP_S)


async def test_a_success_after_failures_restarts_the_back_off(running: Running) -> None:
    (await running.registrar.next()).answer(503)
    assert not (await running.outcome()).successful
    (await running.registrar.next()).grant(60)
    assert (await running.outcome()).successful
    failed = await running.registrar.next_register()  # the refresh
    failed.answer(503)
    assert (await running.registrar.next()).at - failed.at == pytest.approx(15, abs=STEP_S)


async def test_an_unexpected_error_is_reported_and_retried_after_the_back_off(
    registration_config: RegistrationConfig,
) -> None:
    clock = FakeClock()
    registrar = ScriptedRegistrar(clock)
    registrar.breaks = True
    outcomes: asyncio.Queue[RegistrationOutcome] = asyncio.Queue()
    client = RegistrationClient(
        registration_config, registrar, outcomes.put_nowait, clock=clock, jitter=lambda: 0.0
    )
    client.start()
    try:
        outcome = await asyncio.wait_for(outcomes.get(), timeout=5)
        assert outcome.last_error == "internal error while registering (see the server log)"
        assert (await registrar.next()).at == pytest.approx(15, abs=STEP_S)
    finally:
        await client.stop(deregister=False)


# --- keep-alive -----------------------------------------------------------------------------------------


async def test_udp_keep_alives_are_options_to_the_registrar(running: Running) -> None:
    granted = await running.registered()
    options = await running.registrar.next()
    assert options.request.method == "OPTIONS" and str(options.request.uri) == "sip:pbx.example.com"
    assert options.at - granted.at == pytest.approx(24, abs=STEP_S)  # 80 % of 30 s with jitter 0


@pytest.mark.parametrize(
    "registration_config", [config(proxy=parse_uri("sip:pbx.example.com;transport=tcp"))]
)
async def test_tcp_keep_alives_are_crlf_pings(running: Running) -> None:
    granted = await running.registered()
    peer, at = await running.registrar.next_ping()
    assert peer == Peer("tcp", "198.51.100.7", 5060) and at - granted.at == pytest.approx(88, abs=STEP_S)


async def test_an_unanswered_keep_alive_registers_again_at_once(running: Running) -> None:
    await running.registered()
    options = await running.registrar.next()
    options.answer(408)
    again = await running.registrar.next()
    assert again.request.method == "REGISTER" and again.at == options.at


@pytest.mark.parametrize(
    "registration_config", [config(proxy=parse_uri("sip:pbx.example.com;transport=tcp"))]
)
async def test_a_failed_crlf_ping_registers_again_at_once(running: Running) -> None:
    await running.registered()
    running.registrar.ping_fails = True
    _, at = await running.registrar.next_ping()
    again = await running.registrar.next()
    assert again.request.method == "REGISTER" and again.at == at


# --- de-register ----------------------------------------------------------------------------------------


async def test_stop_removes_the_binding_with_expires_zero(running: Running) -> None:
    granted = await running.registered()
    stopping = asyncio.create_task(running.client.stop())
    removal = await running.registrar.next()
    assert removal.expires == "0" and removal.request.contact == granted.request.contact
    removal.challenge(n=3)
    (await running.registrar.next()).answer(200)
    await asyncio.wait_for(stopping, timeout=5)
    assert not running.client.bound


async def test_stop_gives_up_on_an_unanswered_deregister(running: Running) -> None:
    await running.registered()
    await asyncio.wait_for(running.client.stop(within=0.1), timeout=5)
    assert not running.client.bound


async def test_stop_without_a_binding_sends_nothing(running: Running) -> None:
    (await running.registrar.next()).answer(403)
    await running.outcome()
    await running.client.stop()
    assert running.registrar.sent.empty()


# --- which user an INVITE calls -------------------------------------------------------------------------


def invite(request_uri: str, to: str) -> SipRequest:
    data = (
        f"INVITE {request_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKx\r\n"
        f"From: <sip:caller@pbx.example.com>;tag=1\r\nTo: <{to}>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    request = parse_message(data)
    assert isinstance(request, SipRequest)
    return request


def test_an_invite_to_a_registrations_contact_calls_the_to_user() -> None:
    user = contact_user(REGISTRATION_ID)
    request = invite(f"sip:{user}@192.0.2.10:5070", "sip:bot@pbx.example.com")
    assert called_user(request, {user}) == "bot"


def test_any_other_invite_calls_its_request_uri_user() -> None:
    request = invite("sip:sales@192.0.2.10:5070", "sip:bot@pbx.example.com")
    assert called_user(request, {contact_user(REGISTRATION_ID)}) == "sales"
