"""The media clock: parked playouts are served from one timer and one shared poke callback; a playout whose
sink writes at once keeps every behaviour of the async path (frames, marks, clear, closing)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from app.calls.framed_stream import FramedStream
from app.calls.media_clock import TICK_S, MediaClock, media_clock
from app.calls.playout import Playout
from app.calls.transport import TransportClosed
from app.media.formats import PCMU_8K
from app.providers.twilio import TwilioFraming
from tests.conftest import TWILIO_START as START
from tests.conftest import wait_for
from tests.unit.scripted_stream import ScriptedSocket
from tests.unit.sip.fake_clock import FakeTimer

# --- the clock alone, on a loop whose time the test moves ---------------------------------------------


class ManualLoop:
    """The three loop methods the clock uses; callbacks run only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []
        self.soon: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        handle = FakeTimer(when, callback)
        self.timers.append(handle)
        return handle

    def call_soon(self, callback: Callable[[], None]) -> FakeTimer:
        handle = FakeTimer(self.now, callback)
        self.soon.append(handle)
        return handle

    def live_timers(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def run_next_timer(self) -> None:
        timer = min(self.live_timers(), key=lambda t: t.when)
        self.timers.remove(timer)
        self.now = max(self.now, timer.when)
        timer.callback()

    def run_soon(self) -> None:
        soon, self.soon = self.soon, []
        for handle in soon:
            handle.callback()


class Driven:
    """Records when it was served; due every `period_s` from `first`, or hands back when told."""

    def __init__(self, first: float, period_s: float) -> None:
        self.due = first
        self.period_s = period_s
        self.served_at: list[float] = []
        self.hand_back = False

    def serve(self, now: float) -> float | None:
        self.served_at.append(now)
        if self.hand_back:
            return None
        while self.due <= now:
            self.due += self.period_s
        return self.due


def test_playouts_due_close_together_are_served_by_one_tick() -> None:
    loop = ManualLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    first, second = Driven(100.002, 0.005), Driven(100.004, 0.02)
    clock.park(first, first.due)
    clock.park(second, second.due)
    loop.run_next_timer()  # at 100.002: only the first is due
    loop.run_next_timer()  # not before 100.002 + TICK_S, and then both
    assert first.served_at == [100.002, pytest.approx(100.002 + TICK_S)]
    assert second.served_at == [pytest.approx(100.002 + TICK_S)]
    assert len(loop.live_timers()) == 1


def test_the_timer_sleeps_until_the_earliest_due_playout() -> None:
    loop = ManualLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    clock.park(Driven(100.05, 1.0), 100.05)
    clock.park(Driven(100.5, 1.0), 100.5)
    assert [t.when for t in loop.live_timers()] == [100.05]


def test_pokes_in_one_loop_iteration_share_one_callback() -> None:
    loop = ManualLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    idle = [Driven(math.inf, 0.02) for _ in range(3)]
    for playout in idle:
        clock.park(playout, math.inf)
        clock.poke(playout)
    assert len(loop.soon) == 1 and not loop.live_timers()
    loop.run_soon()
    assert [p.served_at for p in idle] == [[100.0]] * 3


def test_a_playout_that_hands_back_is_no_longer_served() -> None:
    loop = ManualLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    playout = Driven(100.01, 0.02)
    clock.park(playout, playout.due)
    playout.hand_back = True
    loop.run_next_timer()
    clock.poke(playout)
    assert len(clock) == 0 and not loop.soon and not loop.live_timers()


def test_each_event_loop_has_its_own_clock() -> None:
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert media_clock(first) is media_clock(first)
        assert media_clock(first) is not media_clock(second)
    finally:
        first.close()
        second.close()


# --- a playout on the clock, on a real loop --------------------------------------------------------------


class ImmediateSocket(ScriptedSocket):
    """A socket that can also write at once (as the direct WebSocket path can), unless told it cannot."""

    def __init__(self) -> None:
        super().__init__([])
        self.writable = True
        self.closed = False
        self.fail_now: Exception | None = None
        self.written_now = 0

    def send_now(self, message: str | bytes) -> bool:
        if self.fail_now is not None:
            raise self.fail_now
        if not self.writable or self.closed:
            return False
        self.sent.append(orjson.loads(message))
        self.written_now += 1
        return True

    async def send(self, message: str | bytes) -> None:
        if self.closed:
            raise TransportClosed("closed")
        await super().send(message)


def media_sizes(socket: ScriptedSocket) -> list[int]:
    return [len(base64.b64decode(m["media"]["payload"])) for m in socket.sent if m["event"] == "media"]


def immediate_playout(socket: ImmediateSocket) -> Playout:
    framing = TwilioFraming()
    framing.decode(orjson.dumps(START))
    stream = FramedStream(socket, framing)
    return Playout(stream, PCMU_8K, stream.rules, lead_ms=60)


@contextlib.asynccontextmanager
async def running(playout: Playout) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(playout.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TransportClosed, RuntimeError):
            await task


async def test_frames_go_out_through_the_sinks_immediate_write_then_the_segment_is_marked() -> None:
    socket = ImmediateSocket()
    playout = immediate_playout(socket)
    clock = media_clock(asyncio.get_running_loop())
    async with running(playout):

        async def parked() -> bool:
            return len(clock) == 1

        await wait_for(parked, within=2)
        playout.enqueue(b"\x01" * 400)  # 50 ms

        async def marked() -> bool:
            return socket.events()[-1:] == ["mark"]

        await wait_for(marked, within=2)
    assert media_sizes(socket) == [160, 160, 80] and socket.written_now == 3
    mark = playout.mark_returned(socket.sent[-1]["mark"]["name"])
    assert mark is not None and mark.position_ms == pytest.approx(50)


async def test_playouts_pacing_on_one_loop_are_parked_on_its_one_clock() -> None:
    sockets = [ImmediateSocket(), ImmediateSocket()]
    playouts = [immediate_playout(s) for s in sockets]
    async with running(playouts[0]), running(playouts[1]):
        for playout in playouts:
            playout.enqueue(b"\x01" * 8000)  # one second: paced, so parked between frames

        clock = media_clock(asyncio.get_running_loop())

        async def both_pacing() -> bool:
            return all(p.frames_sent >= 5 for p in playouts) and len(clock) == 2

        await wait_for(both_pacing, within=2)


async def test_a_frame_the_sink_cannot_write_now_goes_through_its_async_send_once() -> None:
    socket = ImmediateSocket()
    socket.writable = False
    playout = immediate_playout(socket)
    async with running(playout):
        playout.enqueue(b"\x01" * 480)  # three frames, each handed back to the task

        async def marked() -> bool:
            return socket.events()[-1:] == ["mark"]

        await wait_for(marked, within=2)
    assert media_sizes(socket) == [160, 160, 160] and socket.written_now == 0
    assert playout.frames_sent == 3 and playout.sent_ms == pytest.approx(60)


async def test_a_closed_sink_ends_the_playout_with_transport_closed() -> None:
    socket = ImmediateSocket()
    playout = immediate_playout(socket)
    async with running(playout) as task:
        playout.enqueue(b"\x01" * 160)
        await wait_for(lambda: _done_after(socket, "mark"), within=2)
        socket.closed = True
        playout.enqueue(b"\x01" * 160)
        with pytest.raises(TransportClosed):
            await asyncio.wait_for(task, 2)


async def _done_after(socket: ScriptedSocket, event: str) -> bool:
    return event in socket.events()


async def test_a_clear_while_parked_is_sent_and_no_audio_follows_it() -> None:
    socket = ImmediateSocket()
    playout = immediate_playout(socket)
    async with running(playout):
        playout.enqueue(b"\x01" * 8000)
        await wait_for(lambda: _done_after(socket, "media"), within=2)
        playout.clear()
        await wait_for(lambda: _done_after(socket, "clear"), within=2)
        assert playout.queued_ms == 0
        events = socket.events()
        assert "media" not in events[events.index("clear") :]


async def test_a_sink_failing_inside_the_clock_ends_only_its_own_playout() -> None:
    broken, healthy = ImmediateSocket(), ImmediateSocket()
    broken.fail_now = RuntimeError("boom")
    playouts = [immediate_playout(broken), immediate_playout(healthy)]
    async with running(playouts[0]) as broken_task, running(playouts[1]):
        for playout in playouts:
            playout.enqueue(b"\x01" * 800)
        with pytest.raises(RuntimeError, match="boom"):
            await asyncio.wait_for(broken_task, 2)
        await wait_for(lambda: _done_after(healthy, "mark"), within=2)
    assert media_sizes(healthy) == [160] * 5


async def test_the_end_of_a_segment_on_the_clock_calls_on_segment_end_after_its_mark() -> None:
    socket = ImmediateSocket()
    framing = TwilioFraming()
    framing.decode(orjson.dumps(START))
    stream = FramedStream(socket, framing)
    ended = asyncio.Event()
    seen_at_end: list[list[str]] = []

    async def segment_ended() -> None:
        seen_at_end.append(socket.events())
        ended.set()

    playout = Playout(stream, PCMU_8K, stream.rules, lead_ms=60, on_segment_end=segment_ended)
    async with running(playout):
        playout.enqueue(b"\x01" * 320)
        await asyncio.wait_for(ended.wait(), 2)
    assert seen_at_end == [["media", "media", "mark"]]
