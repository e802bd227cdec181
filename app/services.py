"""The composition root: every long-lived service of one running callbridge, built from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from app.calls.join_tokens import JoinTokens
from app.calls.legs import ProviderLegs
from app.calls.service import CallService
from app.calls.session import CallSession, SessionSettings
from app.cluster.local import LocalCallRegistry
from app.cluster.registry import CallRegistry
from app.events.log import CallEventLog
from app.settings import Settings
from app.store.db import Database
from app.store.repositories import (
    AgentRepository,
    ApiKeyRepository,
    CallRepository,
    EventRepository,
    TelephonyConfigRepository,
)
from app.store.secret_box import SecretBox, load_master_secret

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    agents: AgentRepository
    calls_repo: CallRepository
    event_repo: EventRepository
    telephony_configs: TelephonyConfigRepository
    api_keys: ApiKeyRepository
    events: CallEventLog
    calls: CallService
    sessions: CallRegistry[CallSession]
    session_settings: SessionSettings
    legs: ProviderLegs
    _sweeper: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        master = load_master_secret(settings.secret_key, settings.data_dir)
        db = Database(settings.resolved_database_url)
        calls_repo = CallRepository(db)
        event_repo = EventRepository(db)
        events = CallEventLog(event_repo)
        telephony_configs = TelephonyConfigRepository(db, SecretBox(master))
        calls = CallService(settings, calls_repo, events, JoinTokens(master))
        sessions: CallRegistry[CallSession] = LocalCallRegistry()
        return cls(
            settings=settings,
            db=db,
            agents=AgentRepository(db),
            calls_repo=calls_repo,
            event_repo=event_repo,
            telephony_configs=telephony_configs,
            api_keys=ApiKeyRepository(db),
            events=events,
            calls=calls,
            sessions=sessions,
            session_settings=SessionSettings(playout_lead_ms=settings.playout_lead_ms),
            legs=ProviderLegs(settings, calls, calls_repo, telephony_configs, sessions),
        )

    async def start(self) -> None:
        await self.db.migrate()
        await self.events.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="unjoined-call-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.legs.stop()
        await self.events.stop()
        await self.db.dispose()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                await self.calls.sweep_unjoined()
            except Exception:
                log.exception("sweeping unjoined calls failed; retrying")


def services_of(connection: HTTPConnection) -> Services:
    """The Services of the app serving this request or WebSocket."""
    return connection.app.state.services
