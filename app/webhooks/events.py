"""What a call's webhook event puts in the outbox: a row for each webhook that wants it and for the call's
own callback, all holding the same body, `{"event", "call"}` with the Call as `GET /api/calls/{id}` shows
it when the event happens. `Webhooks` wires this and the delivery loop into a running service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from app.calls.service import CallService
from app.pipeline.secret_options import call_owner
from app.schemas.webhooks import CALLBACK_EVENTS, WebhookEvent
from app.store.secret_box import SecretBox
from app.store.tables import CallRow, utcnow
from app.store.webhooks import DeliveryRepository, Destination, WebhookRepository
from app.webhooks.callbacks import open_callback_secrets
from app.webhooks.outbox import WebhookOutbox

if TYPE_CHECKING:
    from app.services import Services

#: The callback kind (`callbacks.joined`...) of each event that has one.
_KIND_OF = {event: kind for kind, event in CALLBACK_EVENTS.items()}


class WebhookEvents:
    """The CallService's event sink: queues each event's deliveries, then wakes the delivery loop."""

    def __init__(
        self,
        calls: CallService,
        webhooks: WebhookRepository,
        deliveries: DeliveryRepository,
        box: SecretBox,
        wake: Callable[[], None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._calls = calls
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._box = box
        self._wake = wake
        self._clock = clock

    async def call_event(self, event: WebhookEvent, row: CallRow) -> None:
        destinations = await self.destinations(event, row)
        if not destinations:
            return
        current = await self._calls.calls.get(row.id) or row
        body = orjson.dumps({"event": event.value, "call": self._calls.to_schema(current).to_json()})
        await self._deliveries.enqueue(row.id, event.value, body, destinations, self._clock())
        self._wake()

    async def destinations(self, event: WebhookEvent, row: CallRow) -> list[Destination]:
        """Every webhook subscribed to `event` (for any agent, or the call's), then the call's callback."""
        found = [
            Destination(webhook.url, self._webhooks.secrets_of(webhook), webhook.id)
            for webhook in await self._webhooks.all()
            if event.value in webhook.events and webhook.agent_id in (None, row.agent_id)
        ]
        kind = _KIND_OF.get(event)
        callback = (row.definition.callbacks or {}).get(kind) if kind else None
        if callback:
            owner = call_owner(row.id, row.agent_id)
            found.append(
                Destination(callback["url"], open_callback_secrets(self._box, callback, owner, kind))
            )
        return found


@dataclass
class Webhooks:
    """Webhooks in a running service: the repositories the API uses, the event sink, the delivery loop."""

    repository: WebhookRepository
    deliveries: DeliveryRepository
    outbox: WebhookOutbox

    @classmethod
    async def start_for(cls, services: Services) -> Webhooks:
        """Attach to `services` (its CallService's events) and start this instance's delivery loop."""
        box = SecretBox(services.master_secret)
        repository = WebhookRepository(services.db, box)
        deliveries = DeliveryRepository(services.db, box)
        settings = services.settings
        outbox = WebhookOutbox(
            deliveries,
            repository,
            retry_base_s=settings.webhook_retry_base_s,
            timeout_s=settings.webhook_timeout_s,
        )
        services.calls.event_sinks.append(
            WebhookEvents(services.calls, repository, deliveries, box, outbox.wake)
        )
        await outbox.start()
        return cls(repository, deliveries, outbox)

    async def stop(self) -> None:
        """Stop delivering (events still queue rows until the database closes)."""
        await self.outbox.stop()
