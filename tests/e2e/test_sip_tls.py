"""SIP over TLS with Opus against a real peer (ARCHITECTURE §3.1): a `callbridge serve` listening on
`tls:` with a self-signed certificate made here, and headless baresip (reference/sip.md §3.5) calling it
and being called by it. SIPp on Debian has no TLS."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.simulator.audio import measure_round_trip
from tests.conftest import RunningServer, ended, run_server, wait_for
from tests.e2e.test_simulate_sip import echo_agent
from tests.e2e.test_sip_calls import (
    SIP_POLICY,
    dial_out,
    events_of_type,
    hang_up,
    heard_at_least,
    joined,
    only_call_of,
    patch_sip_policy,
    require_sip_peers,
)
from tests.sip_peers.baresip import BaresipOptions, baresip
from tests.sip_peers.certificates import CertificateFiles, self_signed
from tests.sip_peers.ctrl_tcp import CALL_CLOSED, CALL_ESTABLISHED
from tests.sip_peers.ports import HOST, free_sip_port, free_sip_port_pair, rtp_port_range

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class TlsServer:
    """The module's server, where it listens for SIP over TLS, and the certificate it presents."""

    server: RunningServer
    tls_port: int
    certificate: CertificateFiles

    def uri(self, user: str) -> str:
        return f"sip:{user}@{HOST}:{self.tls_port};transport=tls"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A server listening for SIP on UDP and on TLS (a self-signed certificate for 127.0.0.1), Opus first."""
    require_sip_peers()
    certificate = self_signed(tmp_path_factory.mktemp("sip-tls-cert"))
    udp_port, tls_port = free_sip_port(), free_sip_port()
    first, last = rtp_port_range(100)
    env = {
        "CALLBRIDGE_SIP_LISTEN": f"udp:{HOST}:{udp_port},tls:{HOST}:{tls_port}",
        "CALLBRIDGE_SIP_TLS_CERT": str(certificate.cert),
        "CALLBRIDGE_SIP_TLS_KEY": str(certificate.key),
        "CALLBRIDGE_RTP_PORTS": f"{first}-{last}",
    }
    with run_server(tmp_path_factory.mktemp("sip-tls-server"), **env) as running:
        yield TlsServer(running, tls_port, certificate)


@pytest.fixture(scope="module")
async def tls(tls_server: TlsServer) -> TlsServer:
    """The TLS server with loopback allowed and every agent reachable as agent_<agentId>."""
    await patch_sip_policy(tls_server.server, SIP_POLICY)
    return tls_server


def tls_phone(tmp_path: Path) -> BaresipOptions:
    """baresip speaking only Opus, listening for TLS with a self-signed certificate of its own."""
    certificate = self_signed(tmp_path / "phone-cert").combined
    return BaresipOptions(codec="opus", certificate=certificate, sip_port=free_sip_port_pair())


async def test_a_tls_callers_opus_audio_comes_back_from_the_echo_agent(
    tls: TlsServer, tmp_path: Path
) -> None:
    agent = await echo_agent(tls.server)
    async with baresip(tls_phone(tmp_path), tmp_path / "baresip") as phone:  # it offers Opus only
        await phone.ctrl.dial(tls.uri(f"agent_{agent}"))
        await phone.ctrl.wait_event(CALL_ESTABLISHED, within=15)
        await wait_for(lambda: heard_at_least(phone, 4.0), within=20)
        await phone.ctrl.hangup()
        await phone.ctrl.wait_event(CALL_CLOSED, within=10)
    trip = measure_round_trip(phone.sent(), phone.heard(), phone.options.rate)
    assert trip is not None, "baresip recorded nothing"
    assert 0 <= trip.lag_ms <= 500 and trip.correlation >= 0.9, trip
    call = await ended(tls.server, (await only_call_of(tls.server, agent))["callId"])
    assert call["endReason"] == "hangup"


async def test_an_outgoing_tls_call_without_verification_reaches_a_self_signed_peer(
    tls: TlsServer, tmp_path: Path
) -> None:
    async with baresip(tls_phone(tmp_path), tmp_path / "baresip") as phone:
        created = await dial_out(tls.server, phone.options.uri, tlsVerify=False)
        await phone.ctrl.wait_event(CALL_ESTABLISHED, within=15)
        await joined(tls.server, created["callId"])
        await hang_up(tls.server, created["callId"])
        await phone.ctrl.wait_event(CALL_CLOSED, within=10)
    call = await ended(tls.server, created["callId"])
    assert call["endReason"] == "agent_hangup"


async def test_an_outgoing_tls_call_refuses_a_self_signed_certificate_by_default_and_says_why(
    tls: TlsServer, tmp_path: Path
) -> None:
    async with baresip(tls_phone(tmp_path), tmp_path / "baresip") as phone:
        created = await dial_out(tls.server, phone.options.uri)
        call = await ended(tls.server, created["callId"], within=15)
    assert call["endReason"] == "unjoined" and call["joined"] is None
    [status] = await events_of_type(tls.server, call["callId"], "sip_status")
    assert status["extras"]["code"] == 503
    assert "TLS certificate of 127.0.0.1 was refused (self-signed certificate)" in status["extras"]["reason"]


async def test_digits_from_an_opus_caller_arrive_as_dtmf_events(tls: TlsServer, tmp_path: Path) -> None:
    # baresip offers telephone-event/8000 beside opus/48000/2 (no /48000): callbridge takes it.
    agent = await echo_agent(tls.server)
    async with baresip(tls_phone(tmp_path), tmp_path / "baresip") as phone:
        await phone.ctrl.dial(tls.uri(f"agent_{agent}"))
        await phone.ctrl.wait_event(CALL_ESTABLISHED, within=15)
        call_id = (await only_call_of(tls.server, agent))["callId"]
        for digit in "12#":
            await phone.ctrl.command("sndcode", digit)

        async def digits() -> list[str] | None:
            found = [event["extras"]["digit"] for event in await events_of_type(tls.server, call_id, "dtmf")]
            return found if len(found) >= 3 else None

        assert await wait_for(digits, within=10) == ["1", "2", "#"]
        await phone.ctrl.hangup()
