"""Browser tests of the console: Debian's Chromium, headless, driven by Playwright (no browser download),
against a real `callbridge serve`. Skipped where Chromium is missing, unless CALLBRIDGE_REQUIRE_BROWSER says
the machine must have it (CI). Screenshots go to test-artifacts/console/, one per page."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from app.simulator.audio import speech_like, write_wav
from app.simulator.twilio import FakeTwilio
from tests.conftest import (
    API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    import_config,
)

CHROMIUM = Path(os.environ.get("CALLBRIDGE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
#: The fake microphone's sound (Chromium loops it): what a browser call's echo is compared with.
PROBE_RATE = 16000
PROBE_SECONDS = 4.0
#: A dBFS value as the console writes it into a level's `data-dbfs` (empty while silent or not measured).
A_LEVEL = re.compile(r"^-\d+(\.\d)?$")


def _browser_problem() -> str | None:
    if not CHROMIUM.exists() and shutil.which(str(CHROMIUM)) is None:
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def probe_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "probe.wav"
    write_wav(path, probe_audio(), PROBE_RATE)
    return path


def probe_audio() -> bytes:
    """The speech-like probe the fake microphone plays (s16le at PROBE_RATE)."""
    return speech_like(PROBE_SECONDS, rate=PROBE_RATE)


@pytest.fixture(scope="session")
async def browser(probe_wav: Path) -> AsyncIterator[object]:
    problem = _browser_problem()
    if problem is not None:
        if os.environ.get("CALLBRIDGE_REQUIRE_BROWSER"):
            pytest.fail(f"CALLBRIDGE_REQUIRE_BROWSER is set but {problem}")
        pytest.skip(problem)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={probe_wav}",
                "--autoplay-policy=no-user-gesture-required",
                # Host candidates as 127.0.0.1, not mDNS names: WebRTC stays on loopback.
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--force-webrtc-ip-handling-policy=default",
            ],
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser, server: RunningServer) -> AsyncIterator[object]:
    """A fresh tab (its own sessionStorage) on the server; its console messages are printed (pytest shows
    them when the test fails)."""
    context = await browser.new_context(base_url=server.base_url, viewport={"width": 1200, "height": 800})
    await context.grant_permissions(["microphone"], origin=server.base_url)
    tab = await context.new_page()
    messages: list[str] = []
    tab.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    tab.on("pageerror", lambda error: messages.append(f"page error: {error}"))
    yield tab
    await context.close()
    print("browser console:\n" + "\n".join(messages))


async def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    """Save the whole page as test-artifacts/console/{name}.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def submit_key(page, key: str) -> None:  # type: ignore[no-untyped-def]
    """Open the console and give it `key` on its login form."""
    await page.goto("/console")
    await page.fill("#api-key", key)
    await page.click("#login button[type=submit]")


async def log_in(page) -> None:  # type: ignore[no-untyped-def]
    """Log in with the test key, and wait until the console took it."""
    await submit_key(page, API_KEY)
    await expect(page.locator("#nav")).to_be_visible()


@pytest.fixture(scope="session")
async def twilio(server: RunningServer) -> FakeTwilio:
    """A fake Twilio calling the shared server (its Twilio config imported once)."""
    await import_config(server, "twilio", TWILIO_CONFIG)
    return FakeTwilio(server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
