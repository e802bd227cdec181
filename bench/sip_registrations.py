"""Concurrent SIP registrations refreshed per second: N REGISTER clients on one user agent against Kamailio.

Run: `.venv/bin/python bench/sip_registrations.py [--clients 100,500,1000,2000] [--expires 4] [--seconds 20]`.
Prints numbers; asserts nothing. Needs Kamailio (Debian `kamailio`).

Each level starts Kamailio (tests/sip_peers/kamailio.py's registrar, every user's password `benchpass`,
`min_expires` 1 so short bindings are granted) and, in this process, a `SipUserAgent` on a free UDP loopback
port with N `RegistrationClient`s (users `bench-<i>`, distinct AORs) on the loop's clock. Each asks for
`--expires` seconds and so refreshes at half of it: N / (expires / 2) refreshes per second are offered,
each one a REGISTER challenged 401 and answered with MD5 digest (two transactions). Clients start
START_BATCH at a time. After every client's first binding, the window of `--seconds` counts the successful
and failed outcomes and this process's CPU time (user + sys); Kamailio's CPU is its own and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from app.sip.message import SipRequest, SipResponse, parse_uri
from app.sip.registration import RegistrationClient, RegistrationConfig, RegistrationOutcome
from app.sip.registrations import START_BATCH, START_PAUSE_S, UserAgentChannel
from app.sip.transaction import LoopClock
from app.sip.transport import ListenAddress, Peer
from app.sip.user_agent import SipUserAgent
from tests.sip_peers.kamailio import kamailio

HOST = "127.0.0.1"
PASSWORD = "benchpass"
FIRST_BINDING_WITHIN_S = 60.0


class TimedChannel(UserAgentChannel):
    """The user agent's channel, timing each transaction (request to final response)."""

    def __init__(self, ua: SipUserAgent) -> None:
        super().__init__(ua)
        self.durations: list[float] = []

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        started = time.perf_counter()
        response = await super().request(request, peer)
        self.durations.append(time.perf_counter() - started)
        return response


class Counter:
    """Outcomes by kind, and when every client had its first binding."""

    def __init__(self, clients: int) -> None:
        self.successes = 0
        self.failures = 0
        self.bound: set[str] = set()
        self.clients = clients
        self.all_bound = asyncio.Event()

    def recorder(self, registration_id: str):  # type: ignore[no-untyped-def]
        def record(outcome: RegistrationOutcome) -> None:
            if outcome.successful:
                self.successes += 1
                self.bound.add(registration_id)
                if len(self.bound) == self.clients:
                    self.all_bound.set()
            else:
                self.failures += 1

        return record


async def run_level(clients: int, expires: int, seconds: float, workdir: Path) -> dict[str, float]:
    extra = 'modparam("registrar", "min_expires", 1)'
    async with kamailio(workdir, passwords=f'$var(pw) = "{PASSWORD}";', extra=extra) as registrar:
        ua = SipUserAgent([ListenAddress("udp", HOST, 0)], HOST)
        await ua.start()
        channel = TimedChannel(ua)
        counter = Counter(clients)
        proxy = parse_uri(f"sip:{registrar.address}")
        running = []
        for index in range(clients):
            registration_id = str(uuid.uuid4())
            config = RegistrationConfig(registration_id, f"bench-{index}", PASSWORD, proxy)
            client = RegistrationClient(
                config,
                channel,
                counter.recorder(registration_id),
                clock=LoopClock(),
                requested_expires=expires,
            )
            client.start()
            running.append(client)
            if index % START_BATCH == START_BATCH - 1:  # as SipRegistrations.start does
                await asyncio.sleep(START_PAUSE_S)
        try:
            try:
                await asyncio.wait_for(counter.all_bound.wait(), FIRST_BINDING_WITHIN_S)
            except TimeoutError:
                return {"bound": len(counter.bound), "failures": counter.failures}
            successes, failures, cpu = counter.successes, counter.failures, _cpu()
            channel.durations.clear()
            started = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - started
            done = counter.successes - successes
            durations = sorted(channel.durations) or [0.0]
            return {
                "p50_ms": 1000 * durations[len(durations) // 2],
                "p99_ms": 1000 * durations[int(len(durations) * 0.99)],
                "offered": clients / (expires / 2),
                "refreshed": done / elapsed,
                "failed": (counter.failures - failures) / elapsed,
                "cpu_ms_per_refresh": 1000 * (_cpu() - cpu) / max(done, 1),
                "cpu_share": (_cpu() - cpu) / elapsed,
            }
        finally:
            await asyncio.gather(*(client.stop(deregister=False) for client in running))
            await ua.stop()


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,500,1000,2000", help="comma-separated client counts")
    parser.add_argument("--expires", type=int, default=4, help="seconds asked for (refresh at half)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per level")
    args = parser.parse_args()
    print(
        f"REGISTER refreshes against Kamailio, expires={args.expires}s (refresh every {args.expires / 2:g}s)"
    )
    print(
        f"{'clients':>8} {'offered/s':>10} {'refreshed/s':>12} {'failed/s':>9} "
        f"{'CPU ms/refresh':>15} {'CPU':>6} {'transaction p50/p99 ms':>23}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for clients in (int(n) for n in args.clients.split(",")):
            level = await run_level(clients, args.expires, args.seconds, Path(scratch) / f"k{clients}")
            if "bound" in level:
                print(
                    f"{clients:>8}  only {level['bound']:.0f} bound within {FIRST_BINDING_WITHIN_S:g} s "
                    f"({level['failures']:.0f} failed attempts)"
                )
                continue
            print(
                f"{clients:>8} {level['offered']:>10.0f} {level['refreshed']:>12.1f} {level['failed']:>9.1f} "
                f"{level['cpu_ms_per_refresh']:>15.3f} {level['cpu_share']:>6.0%} "
                f"{level['p50_ms']:>14.1f} / {level['p99_ms']:.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
