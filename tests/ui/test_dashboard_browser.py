"""The dashboard in a real browser (headless Chromium) against the real relay on real
sockets: sign in, find a dead letter, retry it once its sink is back, see it delivered."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import expect

from tests.helpers.recorder import Recorder
from tests.helpers.stack import API_TOKEN, running_stack
from tests.ui.browser import chromium, screenshot_on_failure

ONLY_COMPLETED_TO_HTTP = '[[routes]]\nevents = ["upscale.completed"]\nsinks = ["http"]\n'


async def test_retry_a_dead_delivery_from_the_dashboard(tmp_path: Path) -> None:
    """Log in, open the dead delivery of a sink that was down, click Retry after it
    recovers: the page shows it delivered and the sink has the event."""
    recorder = Recorder(default=503)
    async with running_stack(
        tmp_path, extra_config=ONLY_COMPLETED_TO_HTTP, recorder=recorder
    ) as stack:
        job = await stack.submit(provider="apiframe", parent_id="grid-ui", action="U3", ref="o-7")
        [dead] = await stack.wait_deliveries(1, state="dead")
        async with chromium() as browser:
            page = await browser.new_page()
            async with screenshot_on_failure(page, tmp_path / "artifacts" / "retry.png"):
                await page.goto(f"{stack.base_url}/ui/sinks")
                await expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/sinks$"))
                await page.fill("input[name=token]", API_TOKEN)
                await page.click("form.login button[type=submit]")
                await expect(page).to_have_url(f"{stack.base_url}/ui/sinks")
                await expect(page.locator("table.sinks")).to_contain_text("http")

                await page.click("nav >> text=Dead letters")
                await page.click(f"a[href='/ui/deliveries/{dead['id']}']")
                await expect(page.locator("h1")).to_have_text(f"Delivery {dead['id']}")
                await expect(page.locator("#delivery-state")).to_have_text("dead")
                await expect(page.locator("dl.facts")).to_contain_text("503")

                recorder.answer([], default=200)  # the sink is back
                await page.click(f"button[data-delivery='{dead['id']}']")
                await expect(page.locator("p.notice")).to_have_text("Replayed 1 delivery.")
                # the page refreshes itself until the worker has delivered it
                await expect(page.locator("#delivery-state")).to_have_text(
                    "delivered", timeout=10_000
                )
                [received] = recorder.received
                assert received.json["data"]["job_id"] == job["job_id"]

                await page.click(f"a[href='/ui/jobs/{job['job_id']}']")
                timeline = page.locator("ol.timeline")
                await expect(timeline).to_contain_text("upscale.completed")
                await expect(timeline.locator(f"#delivery-{dead['id']}")).to_contain_text(
                    "delivered"
                )
                await expect(timeline.locator("img.thumb")).to_have_count(1)
                await page.click("nav >> text=Jobs")
                await expect(page.locator("table.jobs td.thumb img")).to_have_count(1)
                await page.click("header button:text('Sign out')")
                await expect(page).to_have_url(f"{stack.base_url}/ui/login")
                await page.goto(f"{stack.base_url}/ui/jobs")
                await expect(page).to_have_url(re.compile(r"/ui/login\?next="))


async def test_a_wrong_token_stays_out(tmp_path: Path) -> None:
    """A wrong token is refused with a message, and every page still sends the browser
    back to the login form."""
    async with running_stack(tmp_path) as stack, chromium() as browser:
        page = await browser.new_page()
        async with screenshot_on_failure(page, tmp_path / "artifacts" / "wrong-token.png"):
            await page.goto(f"{stack.base_url}/ui/jobs")
            await page.fill("input[name=token]", API_TOKEN + "-not")
            await page.click("form.login button[type=submit]")
            await expect(page.locator("p.error")).to_have_text("That is not the API token.")
            for path in ("/ui/jobs", "/ui/deliveries", "/ui/sinks"):
                await page.goto(f"{stack.base_url}{path}")
                await expect(page).to_have_url(re.compile(r"/ui/login\?next="))
                await expect(page.locator("nav")).to_have_count(0)


async def test_docs_render_with_nothing_fetched_from_outside(tmp_path: Path) -> None:
    """Swagger UI at /docs lists every operation, and the browser asks nothing of any
    host but the relay (no CDN, no validator badge)."""
    async with running_stack(tmp_path) as stack, chromium() as browser:
        page = await browser.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        async with screenshot_on_failure(page, tmp_path / "artifacts" / "docs.png"):
            await page.goto(f"{stack.base_url}/docs")
            await expect(page.locator(".opblock")).to_have_count(
                14 + 1, timeout=10_000
            )  # + the webhook
            await expect(page.locator(".opblock-summary-path").first).to_contain_text("/v1/")
            outside = [url for url in requested if not url.startswith((stack.base_url, "data:"))]
            assert not outside, outside
