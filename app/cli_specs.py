"""The API's resources as `callbridge` commands: one `Resource` each (its path, verbs, table columns)."""

from __future__ import annotations

from typing import Any

from app.cli_batches import add_batch_commands
from app.cli_calls import add_call_commands
from app.cli_output import Column
from app.cli_resources import Filter, Parent, Resource, Subparsers, add_resource
from app.schemas.telephony import CONFIG_MODELS


def call_state(call: dict[str, Any]) -> str:
    if call.get("ended"):
        return f"ended: {call.get('endReason')}"
    return "live" if call.get("joined") else "waiting"


def batch_state(batch: dict[str, Any]) -> str:
    if batch.get("endedAt"):
        return "ended"
    return "paused" if batch.get("paused") else "active"


def registration_state(registration: dict[str, Any]) -> str:
    successful = registration.get("successful")
    if successful is None:
        return "pending"
    return "registered" if successful else f"failing: {registration.get('lastError')}"


AGENT = Parent("--agent", "agent", "AGENT_ID", "the agent whose batch it is")

AGENTS = Resource(
    name="agents",
    noun="agent",
    path="/api/agents",
    summary="agents: a name and the callTemplate their calls are made from",
    verbs=("list", "get", "create", "update", "delete"),
    helps={
        "list": "list agents, newest first",
        "get": "show an agent",
        "create": "create an agent (name, callTemplate)",
        "update": "change an agent: each callTemplate field given replaces the stored one",
        "delete": "delete an agent",
    },
    columns=(
        Column("AGENT_ID", "agentId", "id"),
        Column("NAME", "name"),
        Column("CREATED", "created", "time"),
        Column("CALLS", "statistics.calls"),
    ),
)

CALLS = Resource(
    name="calls",
    noun="call",
    path="/api/calls",
    summary="calls: list, show, start one, follow its events, hang it up",
    verbs=("list", "get"),
    helps={"list": "list calls, newest first", "get": "show a call"},
    filters=(Filter("--agent", "agentId", "AGENT_ID", "only this agent's calls"),),
    columns=(
        Column("CALL_ID", "callId", "id"),
        Column("CREATED", "created", "time"),
        Column("STATE", call_state),
        Column("MEDIUM", lambda call: ",".join(call.get("medium") or {})),
        Column("AGENT_ID", "agentId", "id"),
    ),
    extra=add_call_commands,
)

CONFIGS = Resource(
    name="configs",
    noun="telephony config",
    path="/api/telephony_configs",
    summary=f"a provider's imported credentials, one config per provider ({', '.join(CONFIG_MODELS)})",
    verbs=("get", "create", "update", "delete"),
    helps={
        "get": "show a provider's credentials (secrets as their prefixes)",
        "create": "import a provider's credentials (the body is the provider's config)",
        "update": "change a provider's credentials: the fields given replace the stored ones",
        "delete": "delete a provider's credentials",
    },
    id_metavar="PROVIDER",
    keyed_create=True,
)

SIP_REGISTRATIONS = Resource(
    name="registrations",
    noun="SIP registration",
    path="/api/sip/registrations",
    summary="callbridge registered as a user on a PBX",
    verbs=("list", "get", "create", "update", "delete"),
    helps={
        "list": "list SIP registrations",
        "get": "show a SIP registration and how its last attempt went",
        "create": "register callbridge on a PBX (username, password, proxy, ...)",
        "update": "change a registration: the fields given replace the stored ones; it starts over",
        "delete": "delete a registration (callbridge unregisters)",
    },
    columns=(
        Column("REGISTRATION_ID", "registrationId", "id"),
        Column("USERNAME", "username"),
        Column("PROXY", "proxy"),
        Column("STATE", registration_state),
        Column("EXPIRES", "expiresAt", "time"),
    ),
)

SIP = Resource(
    name="sip",
    noun="SIP config",
    path="/api/sip",
    summary="the SIP config (who may call in, to which agents) and SIP registrations",
    verbs=("get", "update"),
    helps={
        "get": "show the SIP config",
        "update": "change the SIP config: the fields given replace the stored ones (next INVITE on)",
    },
    id_metavar=None,
    children=(SIP_REGISTRATIONS,),
)

BATCHES = Resource(
    name="batches",
    noun="scheduled batch",
    path="/api/agents/{agent}/scheduled_batches",
    summary="an agent's scheduled batches: create one from a CSV file, watch, pause, delete",
    verbs=("list", "get", "update", "delete"),
    helps={
        "list": "list the agent's batches, newest first",
        "get": "show a batch and its counts",
        "update": "pause (--set paused=true), resume or reschedule a batch",
        "delete": "delete a batch: it stops, the calls it made are kept",
    },
    parent=AGENT,
    columns=(
        Column("BATCH_ID", "batchId", "id"),
        Column("CREATED", "created", "time"),
        Column("STATE", batch_state),
        Column("DIALLED", lambda batch: f"{batch.get('completedCount')}/{batch.get('totalCount')}"),
        Column("LIVE", "liveCount"),
        Column("WINDOW_END", "windowEnd", "time"),
    ),
    extra=add_batch_commands,
)

WEBHOOKS = Resource(
    name="webhooks",
    noun="webhook",
    path="/api/webhooks",
    summary="webhooks: where call events are posted",
    verbs=("list", "get", "create", "update", "delete"),
    helps={
        "list": "list webhooks, newest first",
        "get": "show a webhook and its recent failures",
        "create": "create a webhook (url, events, agentId; a secret is generated unless given)",
        "update": "change a webhook: only the fields given change",
        "delete": "delete a webhook",
    },
    columns=(
        Column("WEBHOOK_ID", "webhookId", "id"),
        Column("URL", "url"),
        Column("EVENTS", lambda hook: ",".join(hook.get("events") or [])),
        Column("STATUS", "status"),
        Column("AGENT_ID", "agentId", "id"),
    ),
)

RESOURCES = (AGENTS, CALLS, CONFIGS, SIP, BATCHES, WEBHOOKS)


def add_resource_parsers(sub: Subparsers) -> None:
    """Every resource's commands."""
    for resource in RESOURCES:
        add_resource(sub, resource)
