"""SIP in one running callbridge: the user agent, incoming calls and the dialer, built from Settings.

Built only when CALLBRIDGE_SIP_LISTEN is set; without it there is no SIP at all.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.settings import Settings
from app.sip.incoming import IncomingCalls
from app.sip.media_setup import SipMediaSetup, parse_codecs
from app.sip.message_log import SipMessageLog
from app.sip.outgoing import SipDialer
from app.sip.ports import RtpPortRange
from app.sip.rate_limit import RateLimit, SourceRateLimiter
from app.sip.registrations import SipRegistrations
from app.sip.running import SipCallRunner
from app.sip.tls import server_context
from app.sip.transaction import LoopClock
from app.sip.transport import ListenAddress, parse_listen
from app.sip.user_agent import SipUserAgent

if TYPE_CHECKING:
    from app.services import Services

WILDCARDS = ("0.0.0.0", "::", "")


def public_host(settings: Settings, listens: list[ListenAddress]) -> str:
    """The host put in Via, Contact and SDP: CALLBRIDGE_SIP_PUBLIC_HOST, else the listen host, else (for a
    wildcard listen) the public URL's host."""
    if settings.sip_public_host:
        return settings.sip_public_host
    host = listens[0].host
    if host not in WILDCARDS:
        return host
    return urlsplit(settings.base_url).hostname or "127.0.0.1"


def check_sip_settings(settings: Settings) -> None:
    """Raise ValueError with one clear line when the SIP settings cannot work."""
    tls_listen_context(settings, parse_listen(settings.sip_listen))
    parse_codecs(settings.sip_codecs)
    RtpPortRange.parse(settings.rtp_ports)


def source_rate_limiter(settings: Settings) -> SourceRateLimiter:
    """The per-source limits of CALLBRIDGE_SIP_INVITE_RATE/_BURST and CALLBRIDGE_SIP_REQUEST_RATE/_BURST."""
    return SourceRateLimiter(
        {
            "INVITE": RateLimit(settings.sip_invite_rate, settings.sip_invite_burst),
            "request": RateLimit(settings.sip_request_rate, settings.sip_request_burst),
        }
    )


def tls_listen_context(settings: Settings, listens: list[ListenAddress]) -> ssl.SSLContext | None:
    """The certificate a `tls:` listen presents (CALLBRIDGE_SIP_TLS_CERT/_KEY); None without one. ValueError
    in one line when the files are missing, unreadable or not a certificate and its key."""
    if not any(listen.transport == "tls" for listen in listens):
        return None
    return server_context(settings.sip_tls_cert, settings.sip_tls_key)


class SipService:
    """Everything SIP, started and stopped with the service."""

    def __init__(self, settings: Settings, services: Services) -> None:
        listens = parse_listen(settings.sip_listen)
        host = public_host(settings, listens)
        self.ua = SipUserAgent(listens, host, tls_server=tls_listen_context(settings, listens))
        self.ua.rate_limiter = source_rate_limiter(settings)
        self.messages = SipMessageLog(services.events)
        self.ua.transports.on_message_logged = self.messages.observe
        self.media = SipMediaSetup(
            ports=RtpPortRange.parse(settings.rtp_ports),
            bind_host=listens[0].host or "0.0.0.0",
            sdp_host=host,
            codecs=parse_codecs(settings.sip_codecs),
            rtp_timeout_s=settings.rtp_timeout,
            answer_delay_s=settings.sip_answer_delay,
        )
        self.runner = runner = SipCallRunner(services, self.media)
        self.registrations = SipRegistrations(self.ua, services.sip_registrations, LoopClock())
        self.incoming = IncomingCalls(
            self.ua, services, self.media, runner, self.messages, self.registrations
        )
        self.ua.handler = self.incoming
        self.dialer = SipDialer(
            self.ua, services, self.media, runner, settings.dial_ring_timeout, self.messages
        )
        runner.dialer = self.dialer

    async def start(self) -> None:
        await self.ua.start()
        await self.registrations.start()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.dialer.stop()
        await self.registrations.stop()
        await self.ua.stop()
