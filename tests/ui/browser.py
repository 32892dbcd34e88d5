"""Headless Debian Chromium driven by Playwright, with a screenshot on failure."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
# the machine's network is closed: keep Chromium from dialling out on its own
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium (``make test`` installs it when missing; never a Playwright
    download)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=20_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def screenshot_on_failure(page: Page, artifact: Path) -> AsyncIterator[None]:
    """Run a browser scenario; if it fails, save the page as ``artifact`` and name it
    in the failure."""
    try:
        yield
    except BaseException as exc:
        artifact.parent.mkdir(parents=True, exist_ok=True)
        try:
            await page.screenshot(path=str(artifact), full_page=True)
            note = f"screenshot of the page: {artifact} (url {page.url})"
        except Exception as shot_error:
            note = f"no screenshot ({shot_error!r})"
        print(note)
        raise AssertionError(f"{exc!r}\n{note}") from exc
