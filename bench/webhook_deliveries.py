"""Webhook deliveries per second: a real `callbridge serve` (SQLite, then PostgreSQL) with one webhook for
`call.started`, N calls created through the API by a few concurrent clients, and a keep-alive receiver on
loopback answering 204 at once. Prints the creation rate, the delivery rate from the first delivery to the
last, the lag from a call's creation (its 201) to its delivery, and the server's CPU per delivery; then,
with the receiver refusing (503) until every delivery has failed once, how fast the backlog of retries
is delivered.

    .venv/bin/python bench/webhook_deliveries.py [--calls 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import bench_frames as bf
import httpx
import orjson
from server_process import API_KEY, run_server, scratch_postgres, tree_cpu_seconds

#: The first retry's delay in the backlog run (s).
RETRY_BASE_S = 1.0


class Receiver:
    """HTTP/1.1 with keep-alive: each POST's call id and arrival time, answered 204."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        #: While True every POST is answered 503 (and counted in `refused`), so a backlog builds up.
        self.refusing = False
        self.refused = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hooks"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = next(
                    int(line.split(":", 1)[1])
                    for line in head.split("\r\n")
                    if line.lower().startswith("content-length:")
                )
                body = await reader.readexactly(length)
                if self.refusing:
                    self.refused += 1
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                else:
                    self.arrived.setdefault(orjson.loads(body)["call"]["callId"], time.perf_counter())
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        writer.close()


async def measure(base: str, pid: int, calls: int, clients: int) -> None:
    receiver = Receiver()
    await receiver.start()
    created: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        hook = {"url": receiver.url, "events": ["call.started"]}
        (await api.post("/api/webhooks", json=hook)).raise_for_status()
        todo = iter(range(calls))
        cpu0, t0 = tree_cpu_seconds(pid), time.perf_counter()

        async def client() -> None:
            for _ in todo:
                response = await api.post("/api/calls", json={})
                created[response.raise_for_status().json()["callId"]] = time.perf_counter()

        await asyncio.gather(*(client() for _ in range(clients)))
        t_created = time.perf_counter()
        deadline = t_created + 120
        while len(receiver.arrived) < calls and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        cpu = tree_cpu_seconds(pid) - cpu0
    await receiver.stop()
    arrivals = sorted(receiver.arrived.values())
    lags = sorted((receiver.arrived[c] - created[c]) * 1000 for c in created if c in receiver.arrived)
    rate = calls / (t_created - t0)
    p95 = lags[int(0.95 * (len(lags) - 1))]
    print(f"  {calls} calls created in {t_created - t0:.1f} s ({rate:.0f}/s, {clients} clients)")
    print(f"  {len(arrivals)} delivered: {len(arrivals) / (arrivals[-1] - arrivals[0]):.0f}/s, first to last")
    print(f"  lag creation → delivery: p50 {statistics.median(lags):.0f} ms, p95 {p95:.0f} ms")
    print(f"  server CPU {cpu:.1f} s in all: {1000 * cpu / calls:.1f} ms per call created and delivered")


async def backlog(base: str, pid: int, calls: int, clients: int) -> None:
    """The receiver refuses while the calls are created; once every delivery failed once it takes them,
    and the retries (all due RETRY_BASE_S later) are drained as fast as the outbox goes."""
    receiver = Receiver()
    await receiver.start()
    receiver.refusing = True
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        (
            await api.post("/api/webhooks", json={"url": receiver.url, "events": ["call.started"]})
        ).raise_for_status()
        todo = iter(range(calls))

        async def client() -> None:
            for _ in todo:
                (await api.post("/api/calls", json={})).raise_for_status()

        await asyncio.gather(*(client() for _ in range(clients)))
        while receiver.refused < calls:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        receiver.refusing = False
        cpu0 = tree_cpu_seconds(pid)
        deadline = time.perf_counter() + 120
        while len(receiver.arrived) < calls and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        cpu = tree_cpu_seconds(pid) - cpu0
    await receiver.stop()
    arrivals = sorted(receiver.arrived.values())
    print(f"  a backlog of {calls} retries: {len(arrivals) / (arrivals[-1] - arrivals[0]):.0f} deliveries/s")
    print(f"  server CPU {1000 * cpu / len(arrivals):.1f} ms per delivery")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    bf.print_machine("callbridge webhook deliveries (call.started, one webhook, a 204 receiver)")
    for label in ("SQLite", "PostgreSQL"):
        print(label)
        with contextlib.ExitStack() as stack:
            overrides = (
                {"DATABASE_URL": stack.enter_context(scratch_postgres())} if label == "PostgreSQL" else {}
            )
            base, pid = stack.enter_context(run_server(**overrides))
            asyncio.run(measure(base, pid, args.calls, args.clients))
        with contextlib.ExitStack() as stack:
            overrides = {"WEBHOOK_RETRY_BASE_S": str(RETRY_BASE_S)}
            if label == "PostgreSQL":
                overrides["DATABASE_URL"] = stack.enter_context(scratch_postgres())
            base, pid = stack.enter_context(run_server(**overrides))
            asyncio.run(backlog(base, pid, args.calls, args.clients))


if __name__ == "__main__":
    main()
