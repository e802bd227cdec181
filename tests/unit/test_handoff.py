"""Handoff: an item goes to the synchronous handler only while the consumer idles, else in order to `get`."""

from __future__ import annotations

import asyncio

import pytest

from app.handoff import Handoff


async def idle_consumer(handoff: Handoff[str]) -> asyncio.Task[str]:
    """A consumer task waiting in `get` (the handoff idles once it does)."""
    task = asyncio.create_task(handoff.get())
    await asyncio.sleep(0)  # one loop pass: the task runs into `get` and waits there
    assert handoff.idle
    return task


async def test_an_item_put_while_the_consumer_idles_goes_to_the_handler_and_not_the_consumer() -> None:
    handoff: Handoff[str] = Handoff()
    handled: list[str] = []
    handoff.handle_now(lambda item: handled.append(item))  # returns None: dealt with
    consumer = await idle_consumer(handoff)
    handoff.put("a")
    assert handled == ["a"]
    assert handoff.idle and not consumer.done()
    consumer.cancel()


async def test_what_the_handler_passes_back_is_what_the_consumer_gets() -> None:
    handoff: Handoff[str] = Handoff()
    handoff.handle_now(lambda item: item.upper())
    consumer = await idle_consumer(handoff)
    handoff.put("a")
    assert await consumer == "A"


async def test_items_put_while_the_consumer_is_busy_are_queued_in_order_past_the_handler() -> None:
    handoff: Handoff[str] = Handoff()
    handled: list[str] = []
    handoff.handle_now(lambda item: handled.append(item))
    handoff.put("a")  # nobody waits yet
    handoff.put("b")
    assert [await handoff.get(), await handoff.get()] == ["a", "b"]
    assert handled == []


async def test_an_item_put_after_the_consumer_was_woken_is_queued_behind_the_first() -> None:
    handoff: Handoff[str] = Handoff()
    handoff.handle_now(lambda item: item.upper())
    consumer = await idle_consumer(handoff)
    handoff.put("a")  # handed over: "A" is queued and the consumer woken
    handoff.put("b")  # the consumer has not run yet: queued as it is
    assert await consumer == "A"
    assert await handoff.get() == "b"


async def test_a_handler_failure_is_raised_by_the_consumers_get() -> None:
    handoff: Handoff[str] = Handoff()

    def fail(item: str) -> None:
        raise ValueError(f"cannot take {item}")

    handoff.handle_now(fail)
    consumer = await idle_consumer(handoff)
    handoff.put("a")  # the caller is not hit by it
    with pytest.raises(ValueError, match="cannot take a"):
        await consumer


async def test_the_end_is_raised_once_the_queued_items_are_taken() -> None:
    handoff: Handoff[str] = Handoff()
    handoff.put("a")
    handoff.end(lambda: EOFError("closed"))
    handoff.end(lambda: RuntimeError("a second end"))
    assert await handoff.get() == "a"
    with pytest.raises(EOFError):
        await handoff.get()
