"""One registration's REGISTER client (RFC 3261 §10): callbridge registered as a user on a PBX.

It REGISTERs `username@<proxy host>` at the proxy (through the outbound proxy when there is one), answers
digest challenges (`authUser` as the digest username when given), retries a 423 with its Min-Expires, and
refreshes the binding before it expires (`refresh_delay`). Between refreshes it keeps the path open (RFC
5626 §4.4.1): a CRLF CRLF ping on TCP/TLS, an OPTIONS on UDP; a keep-alive that fails registers again at
once. A failed REGISTER is retried after a back-off with jitter (RFC 5626 §4.5's shape: 30 s doubling, at
most 10 min, a random 50-100 % of that). Each answer is reported as a `RegistrationOutcome`. `stop`
de-registers (Expires: 0) within a bounded wait.

The Contact's user is unique to the registration (`contact_user`): an INVITE the PBX sends to that Contact
maps back to it. Every timer runs on an injectable `Clock`; jitter comes from an injectable `random`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from app.sip.dialog import LocalAddress, peer_for_uri
from app.sip.digest import DigestClient, authorize
from app.sip.leg import ALLOW
from app.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    new_call_id,
    new_tag,
    parse_name_addr,
)
from app.sip.transaction import Clock
from app.sip.transport import Peer, TransportError
from app.store.tables import utcnow

log = logging.getLogger(__name__)

#: The binding time asked for; the registrar grants this or less (or asks for more with a 423).
REQUESTED_EXPIRES_S = 600
#: A refresh goes out this long before the binding expires; grants under twice this refresh at half.
REFRESH_MARGIN_S = 60
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 600.0
#: Keep-alive period per transport (RFC 5626 §4.4.1: sent at a random 80-100 % of it). A registrar's
#: Flow-Timer replaces it, within KEEPALIVE_BOUNDS_S.
KEEPALIVE_S = {"udp": 30.0, "tcp": 110.0, "tls": 110.0}
KEEPALIVE_BOUNDS_S = (10.0, 300.0)
#: 401/407 answered per REGISTER: a challenge after our credentials means they are wrong.
MAX_CHALLENGES = 2
#: 423s followed per REGISTER, and the longest Min-Expires taken.
MAX_INTERVAL_RETRIES = 3
MAX_MIN_EXPIRES_S = 86400
#: How long a de-register (on delete or shutdown) may take before it is given up.
DEREGISTER_WITHIN_S = 5.0
CONTACT_USER_PREFIX = "cb-"
USER_AGENT = "callbridge"


def contact_user(registration_id: str) -> str:
    """The Contact user of a registration: unique to it, the same across restarts (so a restarted
    callbridge replaces its binding instead of adding one)."""
    return CONTACT_USER_PREFIX + registration_id.replace("-", "")[:16]


@dataclass(frozen=True)
class RegistrationConfig:
    """What one registration registers, parsed."""

    registration_id: str
    username: str
    password: str = field(repr=False)
    proxy: SipUri
    outbound_proxy: SipUri | None = None
    auth_user: str | None = None
    #: Carried for the TLS transport (verify the registrar's certificate).
    tls_verify: bool = True

    @property
    def aor(self) -> SipUri:
        """The address of record, To and From: `sip:username@<proxy host>`."""
        return SipUri(self.proxy.scheme, self.username, self.proxy.host)

    @property
    def registrar(self) -> SipUri:
        """The REGISTER's Request-URI: the proxy without a user (its port and transport kept)."""
        return SipUri(self.proxy.scheme, None, self.proxy.host, self.proxy.port, dict(self.proxy.params))

    @property
    def next_hop(self) -> SipUri:
        """Where the REGISTER (and the keep-alives) go: the outbound proxy, else the proxy."""
        return self.outbound_proxy or self.proxy

    @property
    def transport(self) -> str:
        return self.next_hop.transport

    @property
    def contact_user(self) -> str:
        return contact_user(self.registration_id)


@dataclass(frozen=True)
class RegistrationOutcome:
    """What the registrar last answered: granted (`expires_at` set) or refused with a reason."""

    successful: bool
    last_error: str | None
    #: When the binding ends; after a failure, that of the last binding granted (None if none is left).
    expires_at: datetime | None


class RegisterChannel(Protocol):
    """What a client sends through: the user agent in service, a scripted registrar in tests."""

    def here(self, transport: str) -> LocalAddress:
        """Our address over `transport` (KeyError when callbridge does not listen on it)."""
        ...

    async def resolve(self, peer: Peer) -> Peer:
        """`peer` with its host resolved to an address (TransportError when it does not resolve)."""
        ...

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        """Send `request` in a client transaction; its final response (408 on timeout)."""
        ...

    async def ping(self, peer: Peer) -> None:
        """A CRLF CRLF keep-alive over the connection to `peer` (TransportError when it fails)."""
        ...


@dataclass
class _Attempt:
    """One REGISTER exchange: the binding granted (seconds) or why not, and when it was sent."""

    sent_at: float
    granted: int | None = None
    error: str | None = None
    retry_after: float | None = None


OutcomeHandler = Callable[[RegistrationOutcome], None]


class RegistrationClient:
    """Keeps one registration's binding alive until `stop`."""

    def __init__(
        self,
        config: RegistrationConfig,
        channel: RegisterChannel,
        on_outcome: OutcomeHandler,
        *,
        clock: Clock,
        wall: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
        requested_expires: int = REQUESTED_EXPIRES_S,
    ) -> None:
        self.config = config
        self._channel = channel
        self._on_outcome = on_outcome
        self._clock = clock
        self._wall = wall
        self._jitter = jitter
        self._expires = requested_expires
        self._digest = DigestClient(config.auth_user or config.username, config.password)
        self._call_id = new_call_id(USER_AGENT)
        self._tag = new_tag()
        self._cseq = 0
        self._failures = 0
        self._peer: Peer | None = None
        self._trusted: frozenset[str] = frozenset()
        self._bound_until: float | None = None
        self._expires_at: datetime | None = None
        self._keepalive_s = _keepalive_period(config.transport)
        self._task: asyncio.Task[None] | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register now, and keep registering until `stop`."""
        self._task = asyncio.create_task(self._run(), name=f"sip-register-{self.config.registration_id}")

    async def stop(self, *, deregister: bool = True, within: float = DEREGISTER_WITHIN_S) -> None:
        """Stop refreshing; with `deregister`, remove a live binding (Expires: 0) within `within` s."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if deregister and self.bound and self._peer is not None:
            try:
                async with asyncio.timeout(within):
                    await self._exchange(self._peer, 0)
            except TimeoutError:
                log.info("SIP registration %s: de-register unanswered", self.config.registration_id)
            except (OSError, SipParseError) as exc:
                log.info("SIP registration %s: de-register failed: %s", self.config.registration_id, exc)
        self._bound_until = None

    @property
    def bound(self) -> bool:
        """Whether the registrar holds a binding of ours now (granted, not expired, not removed)."""
        return self._bound_until is not None and self._clock.now() < self._bound_until

    @property
    def trusted_hosts(self) -> frozenset[str]:
        """The resolved addresses of the proxy and the outbound proxy (INVITEs on the binding come
        from there)."""
        return self._trusted

    # --- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            attempt = await self._attempt()
            if attempt.granted is not None:
                self._failures = 0
                self._bound_until = attempt.sent_at + attempt.granted
                self._expires_at = self._wall() + timedelta(seconds=attempt.granted)
                self._report(RegistrationOutcome(True, None, self._expires_at))
                await self._keep_alive_until(attempt.sent_at + refresh_delay(attempt.granted))
            else:
                self._failures += 1
                if not self.bound:
                    self._expires_at = None
                self._report(RegistrationOutcome(False, attempt.error, self._expires_at))
                delay = backoff_delay(self._failures, self._jitter())
                await self._sleep_until(self._clock.now() + max(delay, attempt.retry_after or 0.0))

    def _report(self, outcome: RegistrationOutcome) -> None:
        if not outcome.successful:
            log.info("SIP registration %s: %s", self.config.registration_id, outcome.last_error)
        try:
            self._on_outcome(outcome)
        except Exception:
            log.exception("SIP registration %s: recording its outcome failed", self.config.registration_id)

    async def _attempt(self) -> _Attempt:
        """Resolve the next hop and REGISTER there; never raises for the network's faults."""
        sent_at = self._clock.now()
        try:
            self._peer = await self._resolve()
            return await self._exchange(self._peer, self._expires)
        except KeyError:
            transport = self.config.transport
            return _Attempt(
                sent_at, error=f"callbridge does not listen on {transport} (CALLBRIDGE_SIP_LISTEN)"
            )
        except TransportError as exc:
            return _Attempt(sent_at, error=str(exc)[:200])
        except Exception:  # a bug (or a registrar's answer we mishandle) must not end the registration
            log.exception("SIP registration %s: REGISTER failed", self.config.registration_id)
            return _Attempt(sent_at, error="internal error while registering (see the server log)")

    async def _resolve(self) -> Peer:
        config = self.config
        peer = await self._channel.resolve(peer_for_uri(config.next_hop, tls_verify=config.tls_verify))
        trusted = {peer.host}
        if config.outbound_proxy is not None:
            try:  # only for trusting its INVITEs: the REGISTER goes to the outbound proxy all the same
                trusted.add((await self._channel.resolve(peer_for_uri(config.proxy))).host)
            except TransportError as exc:
                log.info("SIP registration %s: %s", config.registration_id, exc)
        self._trusted = frozenset(trusted)
        return peer

    async def _exchange(self, peer: Peer, expires: int) -> _Attempt:
        """One REGISTER asking for `expires` seconds, its challenges and 423s followed."""
        here = self._channel.here(peer.transport)
        sent_at = self._clock.now()
        request = self._register(here, expires)
        challenges = intervals = 0
        while True:
            response = await self._channel.request(request, peer)
            self._cseq = max(self._cseq, request.cseq[0])
            status = response.status
            if 200 <= status < 300:
                return self._granted(response, expires, sent_at)
            if status in (401, 407) and challenges < MAX_CHALLENGES:
                challenges += 1
                answered = authorize(request, response, self._digest)
                if answered is not None:
                    request = answered
                    continue
                return _Attempt(sent_at, error=self._refused_credentials(response, challenges))
            if status == 423 and intervals < MAX_INTERVAL_RETRIES:
                intervals += 1
                minimum = _min_expires(response)
                if minimum is None or minimum > MAX_MIN_EXPIRES_S:
                    return _Attempt(sent_at, error=f"423 {response.reason}: unusable Min-Expires")
                self._expires = expires = minimum
                sent_at = self._clock.now()
                request = self._register(here, expires)
                continue
            return _Attempt(sent_at, error=_refusal(response, peer), retry_after=_retry_after(response))

    def _refused_credentials(self, response: SipResponse, challenges: int) -> str:
        text = f"{response.status} {response.reason}"
        if challenges > 1:
            who = "authUser " if self.config.auth_user else "username "
            return f"{text} after digest authentication: wrong password or {who.strip()}?"
        return f"{text}: no Digest challenge callbridge can answer"

    def _granted(self, response: SipResponse, asked: int, sent_at: float) -> _Attempt:
        if asked == 0:
            return _Attempt(sent_at, granted=0)
        granted = granted_expires(response, self.config.contact_user, asked)
        if granted <= 0:
            return _Attempt(
                sent_at, error=f"{response.status} {response.reason} without a binding for our Contact"
            )
        self._keepalive_s = _flow_timer(response) or KEEPALIVE_S.get(
            self.config.transport, KEEPALIVE_S["udp"]
        )
        return _Attempt(sent_at, granted=granted)

    def _register(self, here: LocalAddress, expires: int) -> SipRequest:
        """A new REGISTER (the next CSeq, a new branch) asking for `expires` seconds."""
        config = self.config
        self._cseq += 1
        headers = self._headers(here, self._tag, config.aor, self._call_id, f"{self._cseq} REGISTER")
        headers.add("Contact", here.contact(config.contact_user))
        headers.add("Expires", str(expires))
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", USER_AGENT)
        return SipRequest("REGISTER", config.registrar, headers)

    # --- between refreshes --------------------------------------------------------------------

    async def _keep_alive_until(self, refresh_at: float) -> None:
        """Keep-alives until `refresh_at`; returns early (to register again) when one fails."""
        while True:
            ping_at = self._clock.now() + self._keepalive_s * (0.8 + 0.2 * self._jitter())
            if ping_at >= refresh_at:
                await self._sleep_until(refresh_at)
                return
            await self._sleep_until(ping_at)
            if not await self._keep_alive():
                return

    async def _keep_alive(self) -> bool:
        peer = self._peer
        if peer is None:
            return False
        try:
            if peer.reliable:
                await self._channel.ping(peer)
                return True
            response = await self._channel.request(self._options(self._channel.here(peer.transport)), peer)
        except Exception as exc:  # whatever broke, registering again is the way back
            log.info("SIP registration %s: keep-alive failed: %s", self.config.registration_id, exc)
            return False
        if response.status in (408, 503):  # no answer, or the transport failed: the path is gone
            log.info("SIP registration %s: keep-alive got %d", self.config.registration_id, response.status)
            return False
        return True

    def _options(self, here: LocalAddress) -> SipRequest:
        """An OPTIONS to the registrar: any answer shows the path (and a NAT binding on it) is alive."""
        config = self.config
        headers = self._headers(here, new_tag(), config.registrar, new_call_id(USER_AGENT), "1 OPTIONS")
        headers.add("User-Agent", USER_AGENT)
        return SipRequest("OPTIONS", config.registrar, headers)

    def _headers(self, here: LocalAddress, tag: str, to: SipUri, call_id: str, cseq: str) -> Headers:
        """The headers every request of the client starts with: from our AOR, by the outbound proxy."""
        headers = Headers()
        headers.add("Via", here.via())
        headers.add("Max-Forwards", "70")
        if self.config.outbound_proxy is not None:
            headers.add("Route", f"<{_loose_route(self.config.outbound_proxy)}>")
        headers.add("From", f"<{self.config.aor}>;tag={tag}")
        headers.add("To", f"<{to}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", cseq)
        return headers

    async def _sleep_until(self, when: float) -> None:
        """Wait on the client's clock until `when`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        handle = self._clock.call_later(max(0.0, when - self._clock.now()), wake)
        try:
            await future
        finally:
            handle.cancel()


def refresh_delay(granted: int) -> float:
    """Seconds after sending the REGISTER that its binding is refreshed: REFRESH_MARGIN_S before it
    expires, or at half of a grant shorter than twice the margin."""
    return max(granted / 2, granted - REFRESH_MARGIN_S)


def backoff_delay(failures: int, jitter: float) -> float:
    """The wait after `failures` failures in a row: BACKOFF_BASE_S doubling up to BACKOFF_MAX_S, of which a
    random 50-100 % (`jitter` in [0, 1))."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (failures - 1))
    return ceiling * (0.5 + 0.5 * jitter)


def granted_expires(response: SipResponse, user: str, asked: int) -> int:
    """The binding time a 2xx grants our Contact (the one whose user is `user`): its `expires` parameter,
    else the Expires header, else what was `asked`."""
    for value in response.headers.get_all("Contact"):
        try:
            contact = parse_name_addr(value)
        except SipParseError:
            continue
        if contact.uri.user == user:
            seconds = _seconds(contact.params.get("expires"))
            if seconds is not None:
                return seconds
    seconds = _seconds(response.headers.get("Expires"))
    return asked if seconds is None else seconds


def _seconds(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(int(value.strip()), 2**31 - 1)


def _min_expires(response: SipResponse) -> int | None:
    return _seconds(response.headers.get("Min-Expires"))


def _retry_after(response: SipResponse) -> float | None:
    value = response.headers.get("Retry-After")
    seconds = _seconds(value.partition(";")[0].partition("(")[0] if value else None)
    return None if seconds is None else float(min(seconds, BACKOFF_MAX_S))


def _keepalive_period(transport: str) -> float:
    return KEEPALIVE_S.get(transport, KEEPALIVE_S["udp"])


def _flow_timer(response: SipResponse) -> float | None:
    seconds = _seconds(response.headers.get("Flow-Timer"))
    if seconds is None:
        return None
    low, high = KEEPALIVE_BOUNDS_S
    return float(min(max(seconds, low), high))


def _refusal(response: SipResponse, peer: Peer) -> str:
    if response.status == 408:
        return f"timeout: no answer from the registrar ({peer.transport}:{peer.host}:{peer.port})"
    return f"{response.status} {response.reason}"[:200]


def _loose_route(uri: SipUri) -> SipUri:
    return SipUri(uri.scheme, None, uri.host, uri.port, {**uri.params, "lr": None})
