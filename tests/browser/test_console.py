"""The console in a real (headless) Chromium against a real server: logging in, agents, calls appearing
live and ending, a call's timeline and its audio levels."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from app.simulator.audio import speech_like
from app.simulator.twilio import CallScript, FakeTwilio
from tests.browser.conftest import A_LEVEL, log_in, screenshot, submit_key
from tests.conftest import RunningServer, ended
from tests.live_call import live_call

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]


async def test_a_wrong_key_shows_the_apis_error_and_keeps_asking(page) -> None:
    await submit_key(page, "not-a-key")
    await expect(page.locator("#login-error")).to_contain_text("invalid_api_key")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#nav")).to_be_hidden()
    await screenshot(page, "login-wrong-key")


async def test_the_right_key_opens_the_calls_page(page) -> None:
    await log_in(page)
    await expect(page.locator("#view h1")).to_have_text("Calls")
    await expect(page.locator("#login")).to_be_hidden()


async def test_the_agents_page_lists_an_agent_and_shows_its_template(page, server: RunningServer) -> None:
    async with server.api() as api:
        body = {"name": "console-echo", "callTemplate": {"systemPrompt": "Echo me", "pipeline": {"echo": {}}}}
        agent = (await api.post("/api/agents", json=body)).json()["agentId"]
    await log_in(page)
    await page.goto("/console#/agents")
    row = page.locator(f"tr[data-agent-id='{agent}']")
    await expect(row).to_contain_text("console-echo")
    await screenshot(page, "agents")
    await row.locator("a").click()
    await expect(page.locator("#view h1")).to_have_text("Agent console-echo")
    await expect(page.locator("#template")).to_contain_text('"systemPrompt": "Echo me"')
    await expect(page.locator("#call-agent")).to_be_enabled()
    await screenshot(page, "agent")


async def test_a_call_appears_live_and_moves_to_the_ended_ones_without_a_reload(
    page, server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    agent = await make_agent()
    await log_in(page)
    await expect(page.locator("#view h1")).to_have_text("Calls")
    async with live_call(server, twilio, agent, CallScript(audio=speech_like(2.0))) as call:
        await expect(page.locator(f"#live-calls tr[data-call-id='{call.call_id}']")).to_have_attribute(
            "data-status", "live"
        )
        await screenshot(page, "calls-live")
    await ended(server, call.call_id)
    await expect(page.locator(f"#ended-calls tr[data-call-id='{call.call_id}']")).to_contain_text("hangup")
    await expect(page.locator(f"#live-calls tr[data-call-id='{call.call_id}']")).to_have_count(0)
    await screenshot(page, "calls")


async def test_a_live_calls_timeline_shows_its_events_dtmf_and_moving_levels(
    page, server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    agent = await make_agent(pipeline={"echo": {}})
    script = CallScript(audio=speech_like(5.0), dtmf=[(1.0, "7")], tail_seconds=1.5)
    await log_in(page)
    async with live_call(server, twilio, agent, script) as call:
        await page.goto(f"/console#/calls/{call.call_id}")
        caller_level = page.locator("#level-caller")
        await expect(caller_level).to_have_attribute("data-dbfs", A_LEVEL)
        await expect(page.locator("#level-agent")).to_have_attribute("data-dbfs", A_LEVEL)
        first = await caller_level.get_attribute("data-dbfs")
        await expect(caller_level).not_to_have_attribute("data-dbfs", first)  # it moves
        await expect(page.locator("#events tr[data-type='dtmf']")).to_contain_text("[7]")
        await screenshot(page, "call-live")
    await expect(page.locator("#call-status")).to_have_text("ended: hangup")
    await expect(page.locator("#events tr[data-type='joined']")).to_have_count(1)
    await expect(page.locator("#events tr[data-type='ended']")).to_have_count(1)
    await expect(page.locator("#levels")).to_be_hidden()
    await screenshot(page, "call-timeline")
