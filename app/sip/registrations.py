"""Every SIP registration of this instance: one `RegistrationClient` each, on the user agent.

`SipRegistrations` loads the stored registrations when SIP starts and de-registers them all when it stops
(bounded); the API tells it of each create, patch (the client restarts) and delete (it de-registers) made
on this instance. Each outcome is written back to the store (`successful`, `lastError`, `expiresAt`).

Incoming calls ask it two things: whether a source address is a registrar (or outbound proxy) holding one of
our bindings (`is_registrar`: such INVITEs are accepted outside `allowedCidrRanges`), and which user an
INVITE calls (`called_user`): the PBX sends the INVITE to our Contact, whose user is the registration's
own (`cb-...`); then the To user (the registered user, or the DID dialled) is the one routed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Collection

from app.schemas.sip_registrations import parse_registrar
from app.sip.dialog import LocalAddress
from app.sip.message import SipParseError, SipRequest, SipResponse
from app.sip.registration import (
    DEREGISTER_WITHIN_S,
    RegistrationClient,
    RegistrationConfig,
    RegistrationOutcome,
)
from app.sip.transaction import Clock
from app.sip.transport import Peer, resolve_peer
from app.sip.user_agent import SipUserAgent
from app.store.repositories import SipRegistrationRepository
from app.store.tables import SipRegistrationRow

log = logging.getLogger(__name__)

#: Stored registrations start this many at a time, START_PAUSE_S apart.
START_BATCH = 100
START_PAUSE_S = 0.1


class UserAgentChannel:
    """A RegisterChannel over the service's user agent (its transactions and transports)."""

    def __init__(self, ua: SipUserAgent) -> None:
        self._ua = ua

    def here(self, transport: str) -> LocalAddress:
        return self._ua.here(transport)

    async def resolve(self, peer: Peer) -> Peer:
        return await resolve_peer(peer)

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        return await self._ua.transactions.request(request, peer).final()

    async def ping(self, peer: Peer) -> None:
        await self._ua.transports.send_keepalive(peer)


def registration_config(row: SipRegistrationRow, password: str) -> RegistrationConfig:
    """The client's config from a stored registration (its values were validated when stored)."""
    return RegistrationConfig(
        registration_id=row.id,
        username=row.username,
        password=password,
        proxy=parse_registrar(row.proxy),
        outbound_proxy=parse_registrar(row.outbound_proxy) if row.outbound_proxy else None,
        auth_user=row.auth_user,
        tls_verify=row.tls_verify,
    )


def called_user(request: SipRequest, contact_users: Collection[str]) -> str | None:
    """The user an INVITE calls: the To user when its Request-URI user is one of `contact_users` (the PBX
    sent it to a registration's Contact; To carries the registered user or the DID dialled), else the
    Request-URI user."""
    user = request.uri.user
    if user is not None and user in contact_users:
        return request.to.uri.user
    return user


class SipRegistrations:
    """The REGISTER clients of this instance, by registration id."""

    def __init__(self, ua: SipUserAgent, repository: SipRegistrationRepository, clock: Clock) -> None:
        self._ua = ua
        self._repository = repository
        self._clock = clock
        self._channel = UserAgentChannel(ua)
        self._clients: dict[str, RegistrationClient] = {}
        self._by_contact_user: dict[str, RegistrationClient] = {}
        # One writer at a time per registration, so its outcomes are stored in the order they came.
        self._writes: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def start(self) -> None:
        """Start a client for every stored registration, START_BATCH at a time (thousands of REGISTERs in
        one burst would overflow a registrar's socket and all back off together)."""
        for index, row in enumerate(await self._repository.all()):
            if index and index % START_BATCH == 0:
                await asyncio.sleep(START_PAUSE_S)
            self.started(row)

    async def stop(self) -> None:
        """De-register every binding (all at once, DEREGISTER_WITHIN_S at most) and stop the clients."""
        clients = list(self._clients.values())
        self._clients.clear()
        self._by_contact_user.clear()
        await asyncio.gather(*(client.stop(within=DEREGISTER_WITHIN_S) for client in clients))

    def started(self, row: SipRegistrationRow) -> None:
        """A registration was created (or loaded): register it."""
        try:
            config = registration_config(row, self._repository.password(row))
        except (SipParseError, ValueError) as exc:  # a row edited by hand, or the wrong secret key
            log.error("SIP registration %s cannot start: %s", row.id, exc)
            return
        client = RegistrationClient(
            config, self._channel, lambda outcome: self._record(row.id, outcome), clock=self._clock
        )
        self._clients[row.id] = client
        self._by_contact_user[config.contact_user] = client
        client.start()

    async def restarted(self, row: SipRegistrationRow) -> None:
        """A registration was changed: its old binding is removed, the new settings registered."""
        await self.removed(row.id)
        self.started(row)

    async def removed(self, registration_id: str) -> None:
        """A registration was deleted: de-register it (bounded) and forget it."""
        client = self._clients.pop(registration_id, None)
        if client is None:
            return
        self._by_contact_user.pop(client.config.contact_user, None)
        await client.stop(within=DEREGISTER_WITHIN_S)

    def is_registrar(self, host: str) -> bool:
        """Whether `host` is the resolved address of a registrar (or outbound proxy) holding a binding of
        ours now."""
        return any(client.bound and host in client.trusted_hosts for client in self._clients.values())

    def called_user(self, request: SipRequest) -> str | None:
        """The user an INVITE calls (see `called_user`)."""
        return called_user(request, self._by_contact_user.keys())

    def _record(self, registration_id: str, outcome: RegistrationOutcome) -> None:
        self._ua.spawn(self._write(registration_id, outcome), f"sip-registration-outcome-{registration_id}")

    async def _write(self, registration_id: str, outcome: RegistrationOutcome) -> None:
        async with self._writes[registration_id]:
            await self._repository.record_outcome(
                registration_id, outcome.successful, outcome.last_error, outcome.expires_at
            )
