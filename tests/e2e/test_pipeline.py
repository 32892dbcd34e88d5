"""The core pipeline end to end on real sockets: submit → simulator → signed callback →
store → worker → http and file sinks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.helpers.recorder import Recorder
from tests.helpers.stack import SINK_SECRET, Stack, running_stack

HTTP_COMPLETED = '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'
ROUTE_ALL = """
[[routes]]
events = ["upscale.completed", "upscale.failed"]
sinks = ["http", "file"]
"""


def _task_for(stack: Stack, job: dict[str, Any]) -> Any:
    return stack.sim("apiframe").state.book.get(job["provider_task_id"])


async def _store_counts(stack: Stack) -> tuple[int, int]:
    deliveries = await stack.deliveries(limit="1000")
    jobs = (await stack.api.get("/v1/jobs")).json()["jobs"]
    events = 0
    for job in jobs:
        events += len((await stack.job(job["job_id"]))["events"])
    return events, len(deliveries)


async def test_submit_reaches_http_and_file_sinks_signed(tmp_path: Path) -> None:
    """A completed upscale arrives at the http sink with a valid Standard Webhooks
    signature, and the file sink holds the very same event."""
    async with running_stack(tmp_path, extra_config=ROUTE_ALL) as stack:
        job = await stack.submit(
            provider="apiframe", parent_id="grid-1", action="Upscale (Creative)", ref="order-42"
        )
        assert job["status"] == "submitted"
        assert job["callback"] == "webhook"
        [received] = await stack.recorder.wait_for(1)
        event = Webhook(SINK_SECRET).verify(received.body, received.headers)
        assert received.headers["webhook-id"] == event["id"]
        assert event["type"] == "upscale.completed"
        data = event["data"]
        assert data["job_id"] == job["job_id"]
        assert data["provider"] == "apiframe"
        assert data["provider_task_id"] == job["provider_task_id"]
        assert data["action"] == "upscale_creative"
        assert data["ref"] == "order-42"
        assert data["image_url"] == f"{stack.sim_url}/apiframe/images/{job['provider_task_id']}.png"
        assert data["error"] is None
        await stack.wait_deliveries(2, state="delivered")
        lines = stack.events_path.read_text().splitlines()
        assert [json.loads(line) for line in lines] == [event]
        finished = await stack.wait_job(job["job_id"], "completed")
        assert [e["type"] for e in finished["events"]][-1] == "upscale.completed"
        assert "upscale.progress" in [e["type"] for e in finished["events"]]


async def test_duplicate_callback_makes_one_event_and_one_delivery_per_sink(
    tmp_path: Path,
) -> None:
    """The same callback posted twice (and the simulator's own double post) yields one
    completed event and exactly one delivery per sink."""
    async with running_stack(tmp_path, extra_config=ROUTE_ALL) as stack:
        job = await stack.submit(provider="apiframe", parent_id="grid-twice", action="U1")
        await stack.wait_job(job["job_id"], "completed")
        task = _task_for(stack, job)
        body = {"task_id": task.id, "image_url": task.image_url, "task_type": "upscale#1"}
        headers = {"x-webhook-secret": task.extra["webhook_secret"]}
        async with httpx.AsyncClient() as client:
            for _ in range(2):
                response = await client.post(task.callback_url, json=body, headers=headers)
                assert response.status_code == 200
                assert response.json()["duplicate"] is True
        await stack.wait_deliveries(2, state="delivered")
        # deliveries are made with their event: a duplicate event would be listed already
        deliveries = await stack.deliveries()
        assert sorted(d["sink"] for d in deliveries) == ["file", "http"]
        assert [d["attempts"] for d in deliveries] == [1, 1]
        assert len(stack.recorder.received) == 1
        events = (await stack.job(job["job_id"]))["events"]
        assert [e["type"] for e in events].count("upscale.completed") == 1


async def test_bad_callbacks_are_refused_and_change_nothing(tmp_path: Path) -> None:
    """Wrong secret → 401, tampered token → 401, another job's task → 409, malformed
    JSON → 400, unknown provider → 404, 2 MiB → 413; the store is untouched."""
    async with running_stack(tmp_path, extra_config=ROUTE_ALL) as stack:
        job_a = await stack.submit(provider="apiframe", parent_id="a-nocallback", action="U1")
        job_b = await stack.submit(provider="apiframe", parent_id="b-nocallback", action="U2")
        task_a, task_b = _task_for(stack, job_a), _task_for(stack, job_b)
        secret_a = {"x-webhook-secret": task_a.extra["webhook_secret"]}
        good = {"task_id": task_a.id, "image_url": task_a.image_url}
        before = await _store_counts(stack)
        url_a = task_a.callback_url
        token = url_a.rsplit("/", 1)[1]
        tampered = url_a[: -len(token)] + token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
        cases = [
            (url_a, good, {"x-webhook-secret": "wrong"}, 401),
            (url_a, good, {}, 401),
            (tampered, good, secret_a, 401),
            (url_a, {"task_id": task_b.id, "image_url": "https://x/y.png"}, secret_a, 409),
            (url_a.replace("/apiframe/", "/nosuch/"), good, secret_a, 404),
        ]
        async with httpx.AsyncClient() as client:
            for url, body, headers, status in cases:
                response = await client.post(url, json=body, headers=headers)
                assert response.status_code == status, (status, response.text)
                assert response.json()["error"]
                assert token not in response.text
                assert task_a.extra["webhook_secret"] not in response.text
            malformed = await client.post(
                url_a,
                content=b'{"task_id": ',
                headers={**secret_a, "content-type": "application/json"},
            )
            assert malformed.status_code == 400
            missing_field = await client.post(url_a, json={"image_url": "x"}, headers=secret_a)
            assert missing_field.status_code == 400
            assert missing_field.json()["field"] == "task_id"
            huge = await client.post(url_a, content=b"x" * (2 * 1024 * 1024), headers=secret_a)
            assert huge.status_code == 413
        assert await _store_counts(stack) == before
        assert (await stack.job(job_a["job_id"]))["status"] == "submitted"


async def test_late_progress_after_completed_is_recorded_not_routed(tmp_path: Path) -> None:
    """A progress callback after completion is kept as an event but moves nothing and
    goes to no sink."""
    async with running_stack(tmp_path, extra_config='[[routes]]\nsinks = ["http"]\n') as stack:
        job = await stack.submit(provider="apiframe", parent_id="p-outoforder", action="U3")
        await stack.wait_job(job["job_id"], "completed")
        async with asyncio.timeout(10):  # the late progress arrives after the completion
            while True:
                events = (await stack.job(job["job_id"]))["events"]
                types = [e["type"] for e in events]
                if "upscale.progress" in types:
                    break
                await asyncio.sleep(0.02)
        # the simulator's ``outoforder`` sends no progress before the final callback
        assert types == ["upscale.completed", "upscale.progress"]
        assert (await stack.job(job["job_id"]))["status"] == "completed"
        # only the events before completion were routed
        routed = [r.json["type"] for r in stack.recorder.received]
        assert routed == ["upscale.completed"]


async def test_sink_failing_three_times_gets_event_on_fourth_attempt(tmp_path: Path) -> None:
    """500, 500, 500, then 200: delivered on the 4th attempt with the same webhook-id."""
    async with running_stack(tmp_path, extra_config=HTTP_COMPLETED) as stack:
        stack.recorder.answer([500, 500, 500])
        job = await stack.submit(provider="apiframe", parent_id="g", action="U4")
        [received] = await stack.recorder.wait_for(1)
        assert stack.recorder.attempts == 4
        [delivery] = await stack.wait_deliveries(1, state="delivered")
        assert delivery["attempts"] == 4
        assert delivery["job_id"] == job["job_id"]
        assert received.headers["webhook-id"] == delivery["event_id"]


async def test_gone_sink_is_dead_at_once_and_replay_redelivers(tmp_path: Path) -> None:
    """410 dead-letters at once (one attempt); `relay replay` and the API replay it."""
    async with running_stack(tmp_path, extra_config=HTTP_COMPLETED) as stack:
        stack.recorder.answer([410, 410])
        await stack.submit(provider="apiframe", parent_id="g", action="U1")
        [dead] = await stack.wait_deliveries(1, state="dead")
        assert dead["attempts"] == 1
        assert dead["last_status"] == 410
        assert stack.recorder.attempts == 1
        env = {
            **os.environ,
            "DATABASE_URL": stack.settings.database_url,
            "RELAY_SECRET_KEY": "k",
            "RELAY_API_TOKEN": "t",
        }
        env.pop("RELAY_CONFIG", None)
        replayed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "receiver", "replay", "--sink", "http"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout) == {"replayed": 1}
        async with asyncio.timeout(10):
            while stack.recorder.attempts < 2:
                await asyncio.sleep(0.02)
        [dead_again] = await stack.wait_deliveries(1, state="dead")
        assert dead_again["id"] == dead["id"]
        response = await stack.api.post(f"/v1/deliveries/{dead['id']}/retry")
        assert response.status_code == 202
        assert response.json() == {"replayed": 1}
        [received] = await stack.recorder.wait_for(1)
        assert received.headers["webhook-id"] == dead["event_id"]
        [delivered] = await stack.wait_deliveries(1, state="delivered")
        assert delivered["id"] == dead["id"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"provider": "apiframe", "parent_id": "p", "action": "redo_upscale_2x"},
            422,
            "unsupported_action",
        ),
        ({"provider": "apiframe", "parent_id": "p", "action": "V1"}, 422, "unsupported_action"),
        ({"provider": "apiframe", "parent_id": "p", "action": 7}, 400, "bad_request"),
        ({"provider": "nobody", "parent_id": "p", "action": "U1"}, 404, "unknown_provider"),
        ({"provider": "apiframe", "action": "U1"}, 400, "bad_request"),
        (
            {"provider": "apiframe", "parent_id": "p", "action": "U1", "sinks": ["nope"]},
            422,
            "unknown_sink",
        ),
        (
            {"provider": "apiframe", "parent_id": "p-ratelimit", "action": "U1"},
            429,
            "provider_rate_limited",
        ),
    ],
)
async def test_submit_errors_are_clear(
    tmp_path: Path, body: dict[str, Any], status: int, code: str
) -> None:
    """Bad submissions get the documented status and machine code, never a 500."""
    async with running_stack(tmp_path) as stack:
        response = await stack.api.post("/v1/upscales", json=body)
        assert response.status_code == status, response.text
        answer = response.json()
        assert answer["error"] == code
        assert answer["message"]
        if code == "unsupported_action":
            assert "U1" in answer["supported"]
        if code == "provider_rate_limited":
            assert int(response.headers["retry-after"]) >= 1


async def test_idempotency_key_returns_same_job_and_submits_once(tmp_path: Path) -> None:
    """Same key and body → the same job, one submission; same key, other body → 422."""
    async with running_stack(tmp_path) as stack:
        headers = {"Idempotency-Key": "k-1"}
        body = {"provider": "apiframe", "parent_id": "p", "action": "U1", "ref": "r"}
        first = await stack.submit(headers=headers, **body)
        second = await stack.submit(headers=headers, **body)
        assert first["job_id"] == second["job_id"]
        assert len(stack.sim("apiframe").state.book.submissions) == 1
        other = await stack.submit(expect=422, headers=headers, **{**body, "action": "U2"})
        assert other["error"] == "idempotency_key_reused"


async def test_api_requires_bearer_token(tmp_path: Path) -> None:
    """/v1 answers 401 without the token or with a wrong one; health needs none."""
    async with (
        running_stack(tmp_path) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as anon,
    ):
        assert (await anon.get("/v1/jobs")).status_code == 401
        wrong = await anon.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        assert (await anon.get("/readyz")).status_code == 200
        metrics = await anon.get("/metrics")
        assert "relay_callbacks_total" in metrics.text


MALFORMED_BODIES = [
    b"[" * 50_000,
    b'{"task_id": ' + b"9" * 5000 + b"}",
    b'{"task_id": "\\ud800", "image_url": "https://x/y.png"}',
    b"\xff\xfe not utf-8",
    b'{"task_id": "t", "status": "processing", "percentage": "inf"}',
    b'{"task_id": "t", "status": "processing", "percentage": 1e400}',
    b"null",
    b"[1, 2]",
    b'"just a string"',
]


async def test_malformed_input_is_400_never_500(tmp_path: Path) -> None:
    """Deep nesting, giant integers, lone surrogates, bad UTF-8, infinite percentages and
    non-object JSON are 400 on callbacks and on the API; odd query values are 400 too."""
    async with running_stack(tmp_path) as stack:
        job = await stack.submit(provider="apiframe", parent_id="m-nocallback", action="U1")
        task = _task_for(stack, job)
        headers = {"x-webhook-secret": task.extra["webhook_secret"]}
        async with httpx.AsyncClient() as client:
            for body in MALFORMED_BODIES:
                answer = await client.post(task.callback_url, content=body, headers=headers)
                assert answer.status_code == 400, (body[:40], answer.text)
                submit = await stack.api.post("/v1/upscales", content=body)
                assert submit.status_code == 400, (body[:40], submit.text)
        for path in ("/v1/jobs?limit=\u00b2", "/v1/deliveries?limit=x", "/v1/jobs?status=nope"):
            assert (await stack.api.get(path)).status_code == 400
        for body_json in ({"sink": ["a"]}, {"job_id": {"x": 1}}, {"state": "nope"}, [1]):
            answer = await stack.api.post("/v1/deliveries/retry", json=body_json)
            assert answer.status_code == 400, answer.text
        assert (await stack.job(job["job_id"]))["status"] == "submitted"


async def test_bulk_replay_honours_a_chunked_filter(tmp_path: Path) -> None:
    """POST /v1/deliveries/retry reads its filter even without Content-Length (chunked)."""
    async with running_stack(tmp_path, extra_config=HTTP_COMPLETED) as stack:
        stack.recorder.answer([410, 410])
        await stack.submit(provider="apiframe", parent_id="g1", action="U1")
        await stack.submit(provider="apiframe", parent_id="g2", action="U2")
        await stack.wait_deliveries(2, state="dead")

        async def chunks() -> Any:
            yield b'{"sink": "nosuch"}'

        answer = await stack.api.post("/v1/deliveries/retry", content=chunks())
        assert answer.status_code == 202
        assert answer.json() == {"replayed": 0}
        answer = await stack.api.post("/v1/deliveries/retry", json={"sink": "http"})
        assert answer.json() == {"replayed": 2}
        await stack.wait_deliveries(2, state="delivered")


async def test_slow_sink_times_out_per_its_timeout_and_retries(tmp_path: Path) -> None:
    """A sink slower than its timeout_s fails that attempt as a timeout and is retried;
    once it answers in time the event is delivered."""
    recorder = Recorder(delay_s=1.0)
    async with running_stack(
        tmp_path,
        extra_config=HTTP_COMPLETED,
        recorder=recorder,
        http_sink_options="timeout_s = 0.2\n",
    ) as stack:
        await stack.submit(provider="apiframe", parent_id="g", action="U1")
        async with asyncio.timeout(10):
            while True:
                [delivery] = await stack.wait_deliveries(1)
                if delivery["attempts"] >= 1:
                    break
                await asyncio.sleep(0.02)
        assert delivery["state"] == "pending"
        assert delivery["last_error"] == "timed out"
        recorder.delay_s = 0
        [delivered] = await stack.wait_deliveries(1, state="delivered")
        assert delivered["attempts"] >= 2


async def test_confirm_by_poll_for_any_provider(tmp_path: Path) -> None:
    """With confirm_by_poll on, an Apiframe callback whose body lies about the image is
    answered 200 and the event carries what /fetch says."""
    options = {"apiframe": "confirm_by_poll = true\npoll_interval_s = 0.1\n"}
    async with running_stack(
        tmp_path, extra_config=HTTP_COMPLETED, provider_options=options
    ) as stack:
        job = await stack.submit(provider="apiframe", parent_id="c-nocallback", action="U1")
        task = _task_for(stack, job)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                task.callback_url,
                json={"task_id": task.id, "image_url": "https://evil.example/x.png"},
                headers={"x-webhook-secret": task.extra["webhook_secret"]},
            )
        assert answer.status_code == 200
        [received] = await stack.recorder.wait_for(1)
        assert received.json["data"]["image_url"] == task.image_url
