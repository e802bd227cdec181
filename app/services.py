"""The composition root: every long-lived service of one running callbridge, built from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from app.calls.join_tokens import JoinTokens
from app.calls.legs import ProviderLegs
from app.calls.service import CallService
from app.calls.session import CallSession, SessionSettings
from app.cluster.base import Cluster, ControlHandler, ControlReply
from app.cluster.local import LocalCluster
from app.cluster.redis_cluster import RedisCluster
from app.cluster.registry import CallRegistry
from app.events.log import CallEventLog
from app.pipeline import build_pipeline
from app.pipeline.base import Pipeline
from app.pipeline.secret_options import PipelineSecrets, call_owner
from app.scheduler.loop import Scheduler
from app.schemas.calls import EndReason
from app.settings import Settings
from app.sip.config import SipPolicyStore
from app.sip.service import SipService
from app.store.db import Database
from app.store.repositories import (
    AgentRepository,
    ApiKeyRepository,
    BatchRepository,
    CallRepository,
    EventRepository,
    SipConfigRepository,
    SipMessageRepository,
    SipRegistrationRepository,
    TelephonyConfigRepository,
)
from app.store.secret_box import SecretBox, load_master_secret
from app.store.tables import CallRow
from app.webhooks.events import Webhooks
from app.webrtc.calls import WebRtcSessions

log = logging.getLogger(__name__)

#: How long sessions ended by a drain get to close their streams and leave the registry.
DRAIN_END_GRACE_S = 5.0


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
    #: The instances of this service (one, in process, unless CALLBRIDGE_REDIS_URL is set).
    cluster: Cluster
    session_settings: SessionSettings
    legs: ProviderLegs
    pipeline_secrets: PipelineSecrets
    #: The account SIP config (`/api/sip`) and the policy incoming INVITEs are checked against.
    sip_policy: SipPolicyStore
    #: Scheduled batches and their calls (`/api/agents/{agentId}/scheduled_batches`, the scheduler).
    batches: BatchRepository
    #: The SIP messages of calls (`/api/calls/{callId}/sip_logs`; written behind through `events`).
    sip_messages: SipMessageRepository
    #: SIP registrations (`/api/sip/registrations`); their REGISTER clients run in `sip`.
    sip_registrations: SipRegistrationRepository
    #: CALLBRIDGE_SECRET_KEY (or the generated one), for migrations that seal stored secrets.
    master_secret: str = field(repr=False)
    #: Dials the scheduled batches (started with the service).
    scheduler: Scheduler | None = None
    #: SIP (CALLBRIDGE_SIP_LISTEN): the user agent, incoming calls and the dialer; None without SIP.
    sip: SipService | None = None
    #: Set by `drain`: new calls are refused (readyz 503, webhooks hang up, the API answers 503).
    draining: bool = False
    #: Acts on a call held here for another instance (set by the app: it is the API's data message).
    control_handler: ControlHandler | None = None
    _sweeper: asyncio.Task[None] | None = None
    #: Webhooks and call callbacks: their repositories and this instance's delivery loop (started with it).
    webhooks: Webhooks | None = None
    #: The webRtc calls' sessions running here (their WHIP requests were answered already).
    webrtc: WebRtcSessions = field(default_factory=WebRtcSessions)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        master = load_master_secret(settings.secret_key, settings.data_dir)
        db = Database(settings.resolved_database_url)
        box = SecretBox(master)  # one box for provider credentials and pipeline secrets
        pipeline_secrets = PipelineSecrets(box)
        calls_repo = CallRepository(db, pipeline_secrets)
        event_repo = EventRepository(db)
        events = CallEventLog(event_repo)
        telephony_configs = TelephonyConfigRepository(db, box)
        calls = CallService(settings, calls_repo, events, JoinTokens(master))
        cluster: Cluster = (
            RedisCluster(settings.redis_url, settings.cluster_lease, prefix=settings.redis_prefix)
            if settings.redis_url
            else LocalCluster()
        )
        sessions: CallRegistry[CallSession] = cluster.registry
        return cls(
            settings=settings,
            db=db,
            agents=AgentRepository(db, pipeline_secrets),
            calls_repo=calls_repo,
            event_repo=event_repo,
            telephony_configs=telephony_configs,
            api_keys=ApiKeyRepository(db),
            events=events,
            calls=calls,
            sessions=sessions,
            cluster=cluster,
            session_settings=SessionSettings(playout_lead_ms=settings.playout_lead_ms),
            legs=ProviderLegs(settings, calls, calls_repo, telephony_configs, sessions),
            pipeline_secrets=pipeline_secrets,
            sip_policy=SipPolicyStore(SipConfigRepository(db, box)),
            batches=BatchRepository(db, box),
            sip_messages=SipMessageRepository(db),
            sip_registrations=SipRegistrationRepository(db, box),
            master_secret=master,
        )

    async def start(self) -> None:
        await self.db.migrate(master_secret=self.master_secret)
        self.webrtc.start(self.settings.webrtc_host_addresses)
        self.webhooks = await Webhooks.start_for(self)
        await self.sip_policy.load()
        if self.settings.sip_listen:
            self.sip = SipService(self.settings, self)
            await self.sip.start()
        await self.events.start()
        await self.cluster.start(self._control, self._end_orphaned)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="unjoined-call-sweeper")
        self.scheduler = Scheduler.of(self)
        await self.scheduler.start()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.sip is not None:
            await self.sip.stop()
        await self.webrtc.stop()
        await self.cluster.stop()
        await self.legs.stop()
        await self.events.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.db.dispose()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new calls, give live ones `timeout_s` to end, then end the rest (`system_error`).

        Returns once no session is left (their provider legs' hang-ups are awaited by `stop`).
        """
        self.draining = True
        live = len(self.sessions)
        log.warning("draining: refusing new calls; %d live call(s) have %gs to end", live, timeout_s)
        if await self._sessions_gone_within(timeout_s):
            return
        remaining = list(self.sessions.live())
        log.warning("draining: ending %d call(s) still live after %gs", len(remaining), timeout_s)
        for session in remaining:
            session.finish(EndReason.SYSTEM_ERROR, f"the server shut down (its {timeout_s:g}s drain ended)")
        if not await self._sessions_gone_within(DRAIN_END_GRACE_S):
            log.error("draining: %d call(s) did not end", len(self.sessions))

    async def _sessions_gone_within(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every session to leave the registry; True when they all did."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        # The registry has no change notification; a drain polls it briefly.
        while len(self.sessions) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return not len(self.sessions)

    async def _control(self, call_id: str, body: bytes) -> ControlReply:
        if self.control_handler is None:  # the app always sets one
            raise RuntimeError("control request without a control handler")
        return await self.control_handler(call_id, body)

    async def _end_orphaned(self, call_id: str, holder: str) -> None:
        """End a call whose instance died (its provider leg is hung up by the end, as for any other)."""
        row = await self.calls_repo.get(call_id)
        if row is None or row.ended is not None:
            return
        text = f"the instance holding the call ({holder}) stopped renewing its lease"
        await self.calls.end(row, EndReason.SYSTEM_ERROR, text)

    def build_pipeline(self, call: CallRow) -> Pipeline:
        """The agent pipeline of a call going live: its stored spec, with the secrets opened only now."""
        spec = self.pipeline_secrets.open(call.definition.pipeline, call_owner(call.id, call.agent_id))
        return build_pipeline(spec)

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
