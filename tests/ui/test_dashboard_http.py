"""The dashboard over real sockets without a browser: redirects, CSRF, escaping,
headers, and every page rendering with real data."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.helpers.recorder import Recorder
from tests.helpers.stack import API_TOKEN, Stack, running_stack

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _csrf(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


async def _browser(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, follow_redirects=False)


async def _login(client: httpx.AsyncClient, next_path: str = "/ui/jobs") -> httpx.Response:
    form = await client.get("/ui/login", params={"next": next_path})
    assert form.status_code == 200
    return await client.post(
        "/ui/login", data={"csrf": _csrf(form), "token": API_TOKEN, "next": next_path}
    )


async def test_pages_need_a_session_and_posts_need_its_csrf_token(tmp_path: Path) -> None:
    """No session: GETs go to the login form, POSTs replay nothing. A session: POSTs
    without (or with another session's) CSRF token are 403 and change nothing."""
    recorder = Recorder(default=410)  # dead at once
    routes = '[[routes]]\nevents = ["upscale.completed"]\nsinks = ["http"]\n'
    async with running_stack(tmp_path, recorder=recorder, extra_config=routes) as stack:
        job = await stack.submit(provider="apiframe", parent_id="g", action="U1")
        await stack.wait_job(job["job_id"], "completed")
        dead = await stack.wait_deliveries(1, state="dead")
        async with await _browser(stack) as anon, await _browser(stack) as other:
            page = await anon.get("/ui/deliveries", params={"state": "dead"})
            assert page.status_code == 303
            assert page.headers["location"] == "/ui/login?next=/ui/deliveries%3Fstate%3Ddead"
            refused = await anon.post("/ui/deliveries/retry", data={"csrf": "x"})
            assert refused.status_code == 303
            assert refused.headers["location"].startswith("/ui/login")

            assert (await _login(anon)).status_code == 303
            assert (await _login(other)).status_code == 303
            foreign = _csrf(await other.get("/ui/deliveries"))
            for data in ({}, {"csrf": "forged"}, {"csrf": foreign}):
                answer = await anon.post("/ui/deliveries/retry", data=data)
                assert answer.status_code == 403, data
                assert "CSRF" in answer.text
            assert len(await stack.deliveries(state="dead")) == len(dead)

            mine = _csrf(await anon.get("/ui/deliveries"))
            answer = await anon.post("/ui/deliveries/retry", data={"csrf": mine, "sink": "http"})
            assert answer.status_code == 303
            assert answer.headers["location"] == "/ui/deliveries?state=dead&sink=http&replayed=1"


async def test_login_logout_and_the_session_cookie(tmp_path: Path) -> None:
    """Login swaps the anonymous session for a new one and goes to ``next`` (only
    on the dashboard); a stale form is refused; logout ends the session."""
    async with running_stack(tmp_path) as stack, await _browser(stack) as client:
        form = await client.get("/ui/login")
        anonymous = client.cookies["relay_ui"]
        cookie = form.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/ui" in cookie
        assert "secure" not in cookie.replace("samesite", "")  # public URL is http
        stale = await client.post("/ui/login", data={"csrf": "old", "token": API_TOKEN})
        assert stale.status_code == 401
        assert "The form expired" in stale.text
        wrong = await client.post(
            "/ui/login", data={"csrf": _csrf(form), "token": "nope", "next": "/ui/sinks"}
        )
        assert wrong.status_code == 401
        assert "That is not the API token." in wrong.text
        evil = await client.post(
            "/ui/login",
            data={"csrf": _csrf(form), "token": API_TOKEN, "next": "https://evil.example/ui"},
        )
        assert evil.status_code == 303
        assert evil.headers["location"] == "/ui/jobs"
        assert client.cookies["relay_ui"] != anonymous
        assert (await client.get("/ui/login")).headers["location"] == "/ui/jobs"
        jobs = await client.get("/ui/jobs")
        assert jobs.status_code == 200
        assert "script-src 'nonce-" in jobs.headers["content-security-policy"]
        assert jobs.headers["cache-control"] == "no-store"
        assert (await client.get("/ui")).headers["location"] == "/ui/jobs"
        logout = await client.post("/ui/logout", data={"csrf": _csrf(jobs)})
        assert logout.status_code == 303
        assert "relay_ui" not in client.cookies
        assert (await client.get("/ui/jobs")).status_code == 303


async def test_every_page_renders_real_data_escaped(tmp_path: Path) -> None:
    """Jobs (with filters), a timeline, deliveries, a delivery and sinks render; a ref
    full of HTML is shown as text; unknown ids are 404 pages; the CSS is served."""
    ref = "<script>alert('x')</script>"
    async with running_stack(tmp_path) as stack, await _browser(stack) as client:
        job = await stack.submit(provider="apiframe", parent_id="g", action="U2", ref=ref)
        await stack.wait_job(job["job_id"], "completed")
        [delivery, *_] = await stack.wait_deliveries(2, state="delivered", job_id=job["job_id"])
        await _login(client)
        jobs = await client.get("/ui/jobs", params={"status": "completed", "provider": "apiframe"})
        assert job["job_id"] in jobs.text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in jobs.text
        assert ref not in jobs.text
        assert job["job_id"] not in (await client.get("/ui/jobs?status=failed")).text
        assert job["job_id"] in (await client.get("/ui/jobs?status=bogus")).text
        timeline = await client.get(f"/ui/jobs/{job['job_id']}")
        assert timeline.status_code == 200
        for text in ("Created", "Submitted", "upscale.completed", "Finished", delivery["id"]):
            assert text in timeline.text
        assert '<table class="attempts">' in timeline.text  # each delivery's attempt rows
        page = await client.get(f"/ui/deliveries/{delivery['id']}")
        assert page.status_code == 200
        assert "upscale." in page.text
        listed = await client.get(
            "/ui/deliveries", params={"state": "delivered", "sink": delivery["sink"]}
        )
        assert delivery["id"] in listed.text
        assert "No dead deliveries" in (await client.get("/ui/deliveries")).text
        sinks = await client.get("/ui/sinks")
        assert "http" in sinks.text
        assert "file" in sinks.text
        for missing in ("/ui/jobs/job_nope", "/ui/deliveries/dlv_nope"):
            assert (await client.get(missing)).status_code == 404
        css = await client.get("/ui/static/ui.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
