"""Prometheus metrics, served at `/metrics`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS_CREATED = Counter("callbridge_calls_created", "Calls created", ["medium"], registry=REGISTRY)
CALLS_ENDED = Counter("callbridge_calls_ended", "Calls ended", ["end_reason"], registry=REGISTRY)
ACTIVE_SESSIONS = Gauge(
    "callbridge_active_sessions", "Live media sessions on this instance", registry=REGISTRY
)
WEBHOOKS = Counter(
    "callbridge_provider_webhooks", "Incoming provider webhooks", ["provider", "outcome"], registry=REGISTRY
)
STREAM_JOINS_REFUSED = Counter(
    "callbridge_stream_joins_refused", "Media stream joins refused", ["reason"], registry=REGISTRY
)
FRAMES_IN = Counter("callbridge_frames_in", "Inbound media frames", registry=REGISTRY)
FRAMES_OUT = Counter("callbridge_frames_out", "Outbound media frames", registry=REGISTRY)
BAD_FRAMES = Counter(
    "callbridge_bad_frames", "Inbound stream messages that could not be used", registry=REGISTRY
)
SIP_FALLBACK_ANSWERS = Counter(
    "callbridge_sip_fallback_answers",
    "INVITEs decided by the SIP fallback handler, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
SIP_REQUESTS_LIMITED = Counter(
    "callbridge_sip_requests_limited",
    "New out-of-dialog SIP requests over their source's rate limit (answered 503, or dropped)",
    ["kind", "outcome"],  # kind: INVITE or request (any other method): never the method, a scanner's choice
    registry=REGISTRY,
)
BATCH_DIALS = Counter(
    "callbridge_batch_dials",
    "Scheduled calls the scheduler placed, by outcome: dialled, refused (ERROR), put_back (429, no slot), "
    "unknown (no clear answer: settled from the provider's call list later)",
    ["outcome"],
    registry=REGISTRY,
)
BATCH_LEASE_EXPIRIES = Counter(
    "callbridge_batch_lease_expiries",
    "Scheduled calls claimed again because the instance holding them stopped before its lease ended",
    ["dial_state"],  # none (not dialled yet: dialled as usual), dialling (mid-dial: reconciled)
    registry=REGISTRY,
)
BATCH_QUEUE_DEPTH = Gauge(
    "callbridge_batch_queue_depth",
    "Scheduled calls of running batches still to be dialled: FUTURE (waiting) and PENDING (claimed)",
    ["status"],
    registry=REGISTRY,
)
BATCH_UNKNOWN_DIALS = Counter(
    "callbridge_batch_unknown_dials",
    "Scheduled calls claimed again after their lease ended mid-dial, by what reconciling them found",
    ["outcome"],  # dialled (recorded), not_dialled (dialled now), unknown (ERROR "outcome unknown")
    registry=REGISTRY,
)
CLUSTER_AVAILABLE = Gauge(
    "callbridge_cluster_available",
    "1 while the cluster's Redis (CALLBRIDGE_REDIS_URL) answers; 0 while it does not (new calls refused)",
    registry=REGISTRY,
)
CLUSTER_CONTROL_FORWARDED = Counter(
    "callbridge_cluster_control_forwarded",
    "Control requests (hang up, transfer, DTMF, text) sent to the instance holding the call",
    registry=REGISTRY,
)
CLUSTER_CALLS_REAPED = Counter(
    "callbridge_cluster_calls_reaped",
    "Calls ended here because the instance holding them stopped renewing its lease",
    registry=REGISTRY,
)
