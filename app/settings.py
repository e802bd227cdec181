"""All configuration, read from `CALLBRIDGE_*` environment variables and `.env`."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime settings. Every field is documented in `.env.example`."""

    model_config = SettingsConfigDict(
        env_prefix="CALLBRIDGE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = Field(default="", description="Base of every URL callbridge gives out")
    data_dir: Path = Path("./data")
    database_url: str = ""
    api_keys: str = ""
    secret_key: str = ""
    log_level: str = "info"
    # How often unjoined calls past their join deadline are swept (seconds).
    sweep_interval: float = 1.0
    # How far ahead of real time outbound audio may be sent to the provider (ms).
    playout_lead_ms: int = 80
    # Log the event loop's stack whenever it stalls longer than this (ms; 0: off). A diagnostic.
    stall_trace_ms: int = Field(default=0, ge=0)
    # Calls live at once (created and not ended); more are refused with 429 and Retry-After. 0: no limit.
    max_concurrent_calls: int = Field(default=0, ge=0)
    # Of those, slots scheduled batches never take, so a running batch cannot block a caller calling in.
    reserved_incoming_calls: int = Field(default=0, ge=0)
    # Scheduled batches: how often the scheduler dials what is due (s), and the pace of a batch without
    # its own callsPerMinute.
    scheduler_interval: float = Field(default=1.0, gt=0)
    batch_calls_per_minute: float = Field(default=60.0, gt=0)
    # How long an instance's claim holds a scheduled call (s): another instance may take it over (and
    # reconcile a dial left unknown) only after it ends, so it must outlast the longest dial request.
    batch_lease: float = Field(default=60.0, gt=0)
    # Provider REST requests: timeout of each attempt, attempts in all, longest wait between them (s).
    provider_timeout: float = Field(default=10.0, gt=0)
    provider_attempts: int = Field(default=4, ge=1)
    provider_max_retry_wait: float = Field(default=8.0, ge=0)
    # Dialled calls: how long the callee's phone rings before the provider gives up (s).
    dial_ring_timeout: int = Field(default=30, ge=5, le=600)
    # Request bodies: API routes, provider webhooks (telephony_xml, telephony/*), and how long one may take.
    max_body_bytes: int = Field(default=2**20, ge=1024)
    max_webhook_body_bytes: int = Field(default=64 * 2**10, ge=1024)
    body_read_timeout: float = Field(default=10.0, gt=0)
    # WebSocket messages: provider media streams, and the serverWebSocket medium (binary PCM).
    max_stream_message_bytes: int = Field(default=64 * 2**10, ge=1024)
    max_medium_message_bytes: int = Field(default=256 * 2**10, ge=1024)
    # SIGTERM/SIGINT: how long live calls get to end before they are ended (s).
    drain_timeout: float = Field(default=30.0, ge=0)
    # Several instances (issue 15): Redis holds which instance holds each live call and carries control
    # between them (empty: one instance, in process). An instance renews its lease on its calls every
    # third of `cluster_lease` (s); another ends them (system_error) once it has stopped for that long.
    redis_url: str = ""
    # Where under Redis this service's keys live (several services can share one Redis).
    redis_prefix: str = "callbridge"
    cluster_lease: float = Field(default=10.0, ge=1)
    # Webhooks and call callbacks: the wait before a failed delivery's first retry (s; each next one
    # doubles it, 10 retries in all), and how long the receiver has to answer each attempt (s).
    webhook_retry_base_s: float = Field(default=30.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # SIP (ARCHITECTURE §3.1): where to listen (`udp|tcp|tls:HOST:PORT`, comma-separated; empty: no SIP), the
    # host put in Via/Contact/SDP, the RTP port range, silence on the wire that ends a call (s), and the
    # codecs offered and accepted, best first.
    sip_listen: str = ""
    sip_public_host: str = ""
    rtp_ports: str = "10000-20000"
    rtp_timeout: float = Field(default=30.0, gt=0)
    # Empty: DEFAULT_SIP_CODECS (opus,G722,PCMU,PCMA), opus left out where libopus is not installed.
    sip_codecs: str = ""
    # How long an incoming SIP call rings (180) before callbridge answers it (s); 0: at once.
    sip_answer_delay: float = Field(default=0.0, ge=0, le=60)
    # The account SIP domain `GET /api/sip` shows (read-only there); empty: the public URL's host.
    sip_domain: str = ""
    # TLS (issue 12, part TLS): the certificate chain and key (PEM files) a `tls:HOST:PORT` listen presents.
    sip_tls_cert: str = ""
    sip_tls_key: str = ""
    # SIP part 2, FB: how long the fallback handler has to answer (s; then 480); and per source address,
    # the out-of-dialog INVITEs, and other out-of-dialog requests (REGISTER, OPTIONS...), taken per second
    # and in a burst before more are refused (503 + Retry-After; dropped from a source not allowed).
    sip_fallback_timeout: float = Field(default=3.0, gt=0, le=30)
    sip_invite_rate: float = Field(default=10.0, gt=0)
    sip_invite_burst: int = Field(default=20, ge=1)
    sip_request_rate: float = Field(default=20.0, gt=0)
    sip_request_burst: int = Field(default=40, ge=1)
    # The webRtc medium: the local addresses ICE offers as host candidates, comma-separated (e.g.
    # `127.0.0.1` on a loopback-only machine); empty: every interface's but loopback (aioice's choice).
    webrtc_host_addresses: str = ""

    @field_validator("webrtc_host_addresses")
    @classmethod
    def _ip_addresses(cls, value: str) -> str:
        from app.webrtc.ice import parse_host_addresses

        parse_host_addresses(value)  # ValueError names the bad one
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def stream_message_limit(self, medium: str) -> int:
        """The largest WebSocket message a call's stream takes (serverWebSocket's own, else a provider's)."""
        return self.max_medium_message_bytes if medium == "serverWebSocket" else self.max_stream_message_bytes

    @cached_property
    def base_url(self) -> str:
        """The public HTTP(S) base URL (derived from host and port when unset)."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @cached_property
    def ws_base_url(self) -> str:
        """The public WebSocket base URL: `https` becomes `wss`, `http` becomes `ws`."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}"

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callbridge.db').as_posix()}"

    @cached_property
    def static_api_keys(self) -> tuple[str, ...]:
        """API keys given in the environment (comma-separated)."""
        return tuple(k.strip() for k in self.api_keys.split(",") if k.strip())
