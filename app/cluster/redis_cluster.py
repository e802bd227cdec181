"""Several instances on one Redis (`CALLBRIDGE_REDIS_URL`): who holds each live call, control between
instances, and the calls of an instance that died ended by another.

Keys, under `callbridge:`:
- `instances`: the ids of the instances that have joined (an instance leaves it when it stops cleanly);
- `instance:{id}`: its lease, which expires `cluster_lease` after its last renewal (every third of that);
- `instance:{id}:calls`: the calls it holds; `holder:{callId}`: the instance holding a call.

Control goes over pub/sub (`control:{id}` to the holder, `reply:{id}` back): a request only means something
while its holder is alive and listening, and PUBLISH says how many received it (none: nobody holds the call
any more). A stream would keep requests that nobody will ever answer.

Redis going away never ends a call: this instance's calls are held in process and written again when Redis
is back (it may have lost them); meanwhile `available` is False and new calls are refused. Another instance
ends a dead one's calls only after seeing its lease gone for half a lease while Redis answered throughout, so
an outage of Redis itself is never taken for the death of every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.cluster.base import ControlHandler, ControlReply, OrphanHandler, cluster_unavailable
from app.cluster.local import LocalCallRegistry
from app.errors import ControlTimedOut
from app.metrics import CLUSTER_AVAILABLE, CLUSTER_CALLS_REAPED, CLUSTER_CONTROL_FORWARDED

log = logging.getLogger(__name__)

S = TypeVar("S")

#: How long a control request waits for the holder's answer (s): a transfer's provider request can retry.
CONTROL_REPLY_TIMEOUT_S = 30.0
#: Pause before trying Redis again after a failure (s).
RETRY_S = 0.5
#: Redis requests time out after this long (s): a hung connection counts as Redis gone.
REDIS_TIMEOUT_S = 3.0


def new_instance_id() -> str:
    """Host, process and a random part: unique even when a restarted process reuses its pid."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisKeys:
    """The names of the cluster's keys and channels."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.instances = f"{prefix}:instances"

    def lease(self, instance_id: str) -> str:
        return f"{self.prefix}:instance:{instance_id}"

    def calls(self, instance_id: str) -> str:
        return f"{self.prefix}:instance:{instance_id}:calls"

    def reaping(self, instance_id: str) -> str:
        return f"{self.prefix}:instance:{instance_id}:reaping"

    def holder(self, call_id: str) -> str:
        return f"{self.prefix}:holder:{call_id}"

    def control(self, instance_id: str) -> str:
        return f"{self.prefix}:control:{instance_id}"

    def reply(self, instance_id: str) -> str:
        return f"{self.prefix}:reply:{instance_id}"


class RedisCallRegistry(LocalCallRegistry[S], Generic[S]):
    """The sessions held in this process, each claim and release also reported to `changed`."""

    def __init__(self, changed: Callable[[str, bool], None]) -> None:
        super().__init__()
        self._changed = changed

    def claim(self, call_id: str, session: S) -> bool:
        if not super().claim(call_id, session):
            return False
        self._changed(call_id, True)
        return True

    def release(self, call_id: str, session: S) -> None:
        if self.get(call_id) is session:
            super().release(call_id, session)
            self._changed(call_id, False)

    def call_ids(self) -> list[str]:
        """The calls held here."""
        return list(self._sessions)


class RedisCluster:
    """`base.Cluster` shared through Redis."""

    def __init__(
        self,
        url: str,
        lease_s: float,
        *,
        instance_id: str | None = None,
        prefix: str = "callbridge",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance_id = instance_id or new_instance_id()
        self.lease_s = lease_s
        self.keys = RedisKeys(prefix)
        self.registry: RedisCallRegistry[Any] = RedisCallRegistry(self._held_changed)
        self._redis = Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._clock = clock
        self._available = False
        self._joined = False
        self._control: ControlHandler | None = None
        self._orphaned: OrphanHandler | None = None
        #: call id → held (True) or released (False), not yet written to Redis.
        self._unwritten: dict[str, bool] = {}
        self._unwritten_ready = asyncio.Event()
        self._replies: dict[str, asyncio.Future[ControlReply]] = {}
        #: Other instances whose lease was missing at a reaper pass, and since when (this clock).
        self._missing_since: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._handling: set[asyncio.Task[None]] = set()
        #: Set while this instance is subscribed to its control and reply channels.
        self._listening = asyncio.Event()

    @property
    def available(self) -> bool:
        return self._available

    # --- life ---------------------------------------------------------------------------------

    async def start(self, control: ControlHandler, orphaned: OrphanHandler) -> None:
        self._control, self._orphaned = control, orphaned
        await self._renew()
        if not self._available:
            log.warning("cluster: Redis cannot be reached; new calls are refused until it can")
        for name, loop in (
            ("renew", self._renew_forever),
            ("write", self._write_forever),
            ("listen", self._listen_forever),
            ("reap", self._reap_forever),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"cluster-{name}"))
        if self._available:  # answers to this instance's first requests must find it listening
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait(), REDIS_TIMEOUT_S)

    async def stop(self) -> None:
        await self._write_unwritten()  # the drain's releases
        for task in self._tasks:
            task.cancel()
        for task in (*self._tasks, *self._handling):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if not len(self.registry):  # else the lease lapses and another instance ends what is left
            with contextlib.suppress(RedisError, OSError):
                await self._leave()
        await self._redis.aclose()

    async def _leave(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.instances, self.instance_id)
            pipe.delete(self.keys.lease(self.instance_id), self.keys.calls(self.instance_id))
            await pipe.execute()

    def _set_available(self, available: bool, problem: BaseException | None = None) -> None:
        if available != self._available:
            if available and self._joined:
                log.warning("cluster: Redis reachable again; taking new calls")
            elif available:
                log.info("cluster: joined through Redis as instance %s", self.instance_id)
            else:
                log.warning("cluster: Redis unreachable (%s); refusing new calls, live calls go on", problem)
        self._available = available
        CLUSTER_AVAILABLE.set(1 if available else 0)

    # --- the lease ----------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            # Unavailable: try again soon, so that other instances never see this one's lease gone for long.
            await asyncio.sleep(self.lease_s / 3 if self._available else min(RETRY_S, self.lease_s / 3))
            try:
                await self._renew()
            except Exception:  # the lease must go on being renewed whatever one attempt hit
                log.exception("cluster: renewing the lease failed; trying again")

    async def _renew(self) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.lease(self.instance_id), b"1", px=round(self.lease_s * 1000), get=True)
                pipe.sadd(self.keys.instances, self.instance_id)
                previous, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._set_available(False, exc)
            return
        if self._joined and (previous is None or not self._available):
            # Back after an outage, or the lease was gone (Redis restarted, or lost our keys): what Redis
            # may have lost of this instance's calls is written again.
            if previous is None:
                log.warning("cluster: this instance's lease had lapsed in Redis; writing its calls again")
            self._write_again()
        self._set_available(True)
        self._joined = True

    def _write_again(self) -> None:
        for call_id in self.registry.call_ids():
            self._unwritten[call_id] = True
        self._unwritten_ready.set()

    # --- which calls are held here ------------------------------------------------------------

    def _held_changed(self, call_id: str, held: bool) -> None:
        self._unwritten[call_id] = held
        self._unwritten_ready.set()

    async def _write_forever(self) -> None:
        while True:
            await self._unwritten_ready.wait()
            if not await self._write_unwritten():
                await asyncio.sleep(RETRY_S)

    async def _write_unwritten(self) -> bool:
        """Write every claim and release not yet in Redis; False (kept for later) when Redis failed."""
        self._unwritten_ready.clear()
        changes, self._unwritten = self._unwritten, {}
        if not changes:
            return True
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call_id, held in changes.items():
                    if held:
                        pipe.set(self.keys.holder(call_id), self.instance_id)
                        pipe.sadd(self.keys.calls(self.instance_id), call_id)
                    else:
                        pipe.delete(self.keys.holder(call_id))
                        pipe.srem(self.keys.calls(self.instance_id), call_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            for call_id, held in changes.items():  # newer changes made meanwhile win
                self._unwritten.setdefault(call_id, held)
            self._unwritten_ready.set()
            self._set_available(False, exc)
            return False
        return True

    # --- control ------------------------------------------------------------------------------

    async def forward(self, call_id: str, body: bytes) -> ControlReply | None:
        try:
            holder = await self._redis.get(self.keys.holder(call_id))
        except (RedisError, OSError) as exc:
            self._set_available(False, exc)
            raise cluster_unavailable() from exc
        if holder is None or holder.decode() == self.instance_id:
            return None
        holder_id = holder.decode()
        request_id = secrets.token_hex(8)
        answer: asyncio.Future[ControlReply] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = answer
        request = {"id": request_id, "from": self.instance_id, "callId": call_id, "body": body.decode()}
        try:
            try:
                receivers = await self._redis.publish(self.keys.control(holder_id), orjson.dumps(request))
            except (RedisError, OSError) as exc:
                self._set_available(False, exc)
                raise cluster_unavailable() from exc
            if not receivers:  # its holder is not listening (it died): nobody else can act on it
                return None
            CLUSTER_CONTROL_FORWARDED.inc()
            try:
                return await asyncio.wait_for(answer, CONTROL_REPLY_TIMEOUT_S)
            except TimeoutError:
                raise ControlTimedOut(
                    "control_timeout",
                    f"instance {holder_id}, which holds call {call_id}, did not answer in "
                    f"{CONTROL_REPLY_TIMEOUT_S:g}s",
                ) from None
        finally:
            self._replies.pop(request_id, None)

    async def _listen_forever(self) -> None:
        control, reply = self.keys.control(self.instance_id), self.keys.reply(self.instance_id)
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(control, reply)
                self._listening.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._received(message["channel"].decode(), message["data"], reply)
            except (RedisError, OSError) as exc:
                self._set_available(False, exc)
            except Exception:  # never leave this instance deaf to control: listen again
                log.exception("cluster: the control listener failed; subscribing again")
            finally:
                self._listening.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RETRY_S)

    def _received(self, channel: str, data: bytes, reply_channel: str) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("cluster: unreadable message on %s", channel)
            return
        if channel == reply_channel:
            answer = self._replies.get(message.get("id"))
            if answer is not None and not answer.done():
                headers = message.get("headers") or {}
                answer.set_result(ControlReply(message["status"], message["body"].encode(), headers))
            return
        self._spawn(self._answer(message))

    async def _answer(self, request: dict[str, Any]) -> None:
        assert self._control is not None
        try:
            reply = await self._control(request["callId"], request["body"].encode())
        except Exception:
            log.exception("cluster: control for call %s failed", request.get("callId"))
            reply = ControlReply(500, b'{"detail": "the holding instance failed", "code": "internal_error"}')
        answer = {
            "id": request["id"],
            "status": reply.status,
            "body": reply.body.decode(),
            "headers": reply.headers,
        }
        try:
            await self._redis.publish(self.keys.reply(request["from"]), orjson.dumps(answer))
        except (RedisError, OSError) as exc:
            log.warning("cluster: could not answer control for call %s: %s", request.get("callId"), exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    # --- instances that died ------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.reap_dead()
            except (RedisError, OSError) as exc:
                self._missing_since.clear()  # only what is seen while Redis answers counts
                self._set_available(False, exc)
            except Exception:
                log.exception("cluster: ending dead instances' calls failed; trying again")

    async def reap_dead(self) -> None:
        """One pass: end the calls of every instance whose lease has been seen gone for half a lease."""
        members = sorted(m.decode() for m in await self._redis.smembers(self.keys.instances))
        others = [m for m in members if m != self.instance_id]
        if not others:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for instance_id in others:
                pipe.exists(self.keys.lease(instance_id))
            alive = await pipe.execute()
        now = self._clock()
        for instance_id, lease_held in zip(others, alive, strict=True):
            if lease_held:
                self._missing_since.pop(instance_id, None)
                continue
            since = self._missing_since.setdefault(instance_id, now)
            if now - since >= self.lease_s / 2:
                await self._reap(instance_id)

    async def _reap(self, dead: str) -> None:
        """End `dead`'s calls, once across the cluster (whoever takes the reaping key)."""
        assert self._orphaned is not None
        taken = await self._redis.set(
            self.keys.reaping(dead), self.instance_id, nx=True, px=round(self.lease_s * 3000)
        )
        if not taken:
            return
        call_ids = sorted(c.decode() for c in await self._redis.smembers(self.keys.calls(dead)))
        log.warning(
            "cluster: instance %s stopped renewing its lease; ending its %d call(s)", dead, len(call_ids)
        )
        for call_id in call_ids:
            try:
                await self._orphaned(call_id, dead)
            except Exception:  # left in its set: the next reaper tries it again
                log.exception("cluster: ending call %s of dead instance %s failed", call_id, dead)
                continue
            CLUSTER_CALLS_REAPED.inc()
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.holder(call_id))
                pipe.srem(self.keys.calls(dead), call_id)
                await pipe.execute()
        if not await self._redis.scard(self.keys.calls(dead)):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.srem(self.keys.instances, dead)
                pipe.delete(self.keys.calls(dead), self.keys.reaping(dead))
                await pipe.execute()
            self._missing_since.pop(dead, None)
