"""The AWS Lambda entry point (Mangum) with API Gateway HTTP API (payload v2.0) events:
inline delivery on PostgreSQL, and the configurations it refuses."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from receiver.errors import ConfigError
from receiver.serverless import build_handler, build_worker_handler
from receiver.settings import Settings, load_settings
from simulators import create_simulator_app
from tests.helpers.postgres import pg_schema
from tests.helpers.recorder import Recorder
from tests.helpers.servers import serve_app
from tests.helpers.stack import API_TOKEN, SECRET_KEY, stack_config

T = TypeVar("T")
API_HOST = "r4nd0m1d.execute-api.eu-west-1.amazonaws.com"
CONTEXT = SimpleNamespace(
    function_name="upscale-relay",
    aws_request_id="c6af9ac6-7b61-11e6-9a41-93e812345678",
    get_remaining_time_in_millis=lambda: 30_000,
)


def http_api_event(
    method: str, path: str, headers: Mapping[str, str], body: bytes, *, base64_body: bool
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as Lambda receives it."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "content-length": str(len(body)),
            "host": API_HOST,
            "user-agent": "provider/1.0",
            "x-amzn-trace-id": "Root=1-5f84c7a9-0e5b1e1a3d7c4c1b2a3f4e5d",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            **headers,
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": API_HOST.split(".", 1)[0],
            "domainName": API_HOST,
            "domainPrefix": API_HOST.split(".", 1)[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "provider/1.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


@contextmanager
def lambda_thread() -> Iterator[Callable[[Callable[[], T]], asyncio.Future[T]]]:
    """Run calls in one thread of their own, as Lambda runs the handler: Mangum drives its
    own event loop there (it cannot run inside the test's), and it is closed at the end."""
    executor = ThreadPoolExecutor(max_workers=1)

    def close_loop() -> None:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        loop.close()
        asyncio.set_event_loop(None)

    try:
        yield lambda call: asyncio.get_running_loop().run_in_executor(executor, call)
    finally:
        executor.submit(close_loop).result()
        executor.shutdown()


def inline_settings(database_url: str, sim_url: str, sink_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": database_url,
            "RELAY_DELIVERY_MODE": "inline",
            "RELAY_PUBLIC_URL": f"https://{API_HOST}",
            "RELAY_SECRET_KEY": SECRET_KEY,
            "RELAY_API_TOKEN": API_TOKEN,
        },
        config_text=stack_config(sim_url, sink_url + "/hooks", tmp_path / "events.jsonl")
        + '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n',
    )


@pytest.mark.postgres
async def test_http_api_callback_is_committed_and_delivered_inline(tmp_path: Path) -> None:
    """Through Mangum: a POST /v1/upscales event creates the job, the provider's callback
    (base64 body, as API Gateway sends binary-safe bodies) answers 200 only after the
    event is in PostgreSQL and already at the sink; a plain-body repeat is a duplicate."""
    recorder = Recorder()
    simulators = create_simulator_app()
    async with pg_schema() as pg, AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        settings = inline_settings(pg.database_url, sim_url, sink_url, tmp_path)
        run = stack.enter_context(lambda_thread())
        handler = await run(lambda: build_handler(settings))

        submit = json.dumps({"provider": "apiframe", "parent_id": "p-nocallback", "action": "U3"})
        auth = {"authorization": f"Bearer {API_TOKEN}"}
        event = http_api_event("POST", "/v1/upscales", auth, submit.encode(), base64_body=False)
        submitted = await run(lambda: handler(event, CONTEXT))
        assert submitted["statusCode"] == 202, submitted
        job = json.loads(submitted["body"])
        task = simulators.state.providers["apiframe"].state.book.get(job["provider_task_id"])
        assert urlsplit(task.callback_url).netloc == API_HOST

        body = json.dumps({"task_id": task.id, "image_url": task.image_url}).encode()
        secret = {"x-webhook-secret": task.extra["webhook_secret"]}
        path = urlsplit(task.callback_url).path
        callback = http_api_event("POST", path, secret, body, base64_body=True)

        def call_back() -> tuple[dict[str, Any], int]:
            answer = handler(callback, CONTEXT)
            return answer, len(recorder.received)  # what the sink had when it returned

        answer, received_on_return = await run(call_back)
        assert answer["statusCode"] == 200, answer
        event_id = json.loads(answer["body"])["event_id"]
        assert received_on_return == 1
        [received] = recorder.received
        assert received.headers["webhook-id"] == event_id
        assert received.json["data"]["job_id"] == job["job_id"]
        assert received.json["data"]["action"] == "U3"
        [stored] = await pg.fetch("SELECT id, job_id, type FROM events")
        assert dict(stored) == {
            "id": event_id,
            "job_id": job["job_id"],
            "type": "upscale.completed",
        }
        states = await pg.fetch("SELECT state, attempts FROM deliveries")
        assert [tuple(row) for row in states] == [("delivered", 1)]

        again = http_api_event("POST", path, secret, body, base64_body=False)
        repeat = await run(lambda: handler(again, CONTEXT))
        assert repeat["statusCode"] == 200, repeat
        assert json.loads(repeat["body"]) == {"ok": True, "event_id": event_id, "duplicate": True}
        forged = http_api_event("POST", path, {"x-webhook-secret": "nope"}, body, base64_body=False)
        assert (await run(lambda: handler(forged, CONTEXT)))["statusCode"] == 401
        assert len(recorder.received) == 1
        assert len(await pg.fetch("SELECT 1 FROM events")) == 1


SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-23T18:00:00Z",
    "region": "eu-west-1",
    "resources": ["arn:aws:events:eu-west-1:123456789012:rule/relay-worker-every-minute"],
    "detail": {},
}


@pytest.mark.postgres
async def test_scheduled_worker_delivers_what_the_inline_budget_left(tmp_path: Path) -> None:
    """With no inline budget left the callback is still committed and answered 200 but
    not delivered; the scheduled function (``relay worker --once``) then delivers it."""
    recorder = Recorder()
    simulators = create_simulator_app()
    async with pg_schema() as pg, AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        settings = dataclasses.replace(
            inline_settings(pg.database_url, sim_url, sink_url, tmp_path), inline_budget_s=0.0
        )
        run = stack.enter_context(lambda_thread())
        handler = await run(lambda: build_handler(settings))
        submit = json.dumps({"provider": "apiframe", "parent_id": "p-nocallback", "action": "U1"})
        auth = {"authorization": f"Bearer {API_TOKEN}"}
        event = http_api_event("POST", "/v1/upscales", auth, submit.encode(), base64_body=False)
        job = json.loads((await run(lambda: handler(event, CONTEXT)))["body"])
        task = simulators.state.providers["apiframe"].state.book.get(job["provider_task_id"])
        body = json.dumps({"task_id": task.id, "image_url": task.image_url}).encode()
        secret = {"x-webhook-secret": task.extra["webhook_secret"]}
        callback = http_api_event(
            "POST", urlsplit(task.callback_url).path, secret, body, base64_body=True
        )
        answer = await run(lambda: handler(callback, CONTEXT))
        assert answer["statusCode"] == 200, answer
        event_id = json.loads(answer["body"])["event_id"]
        assert recorder.received == []
        pending = await pg.fetch("SELECT event_id, state FROM deliveries")
        assert [tuple(row) for row in pending] == [(event_id, "pending")]

        worker = build_worker_handler(settings)
        assert await asyncio.to_thread(worker, SCHEDULED_EVENT, CONTEXT) == {"attempted": 1}
        [received] = recorder.received
        assert received.headers["webhook-id"] == event_id
        delivered = await pg.fetch("SELECT state FROM deliveries")
        assert [row["state"] for row in delivered] == ["delivered"]
        assert await asyncio.to_thread(worker, SCHEDULED_EVENT, CONTEXT) == {"attempted": 0}


def test_sqlite_and_other_modes_are_refused(tmp_path: Path) -> None:
    """``build_handler`` refuses SQLite (no disk outlives a function) and any delivery
    mode but inline, naming the fix; the scheduled worker refuses SQLite too."""
    base = {"RELAY_SECRET_KEY": SECRET_KEY, "RELAY_API_TOKEN": API_TOKEN}
    sqlite_url = f"sqlite:///{tmp_path / 'relay.db'}"
    sqlite = load_settings(
        {**base, "DATABASE_URL": sqlite_url, "RELAY_DELIVERY_MODE": "inline"}, config_text=""
    )
    with pytest.raises(ConfigError, match=r"networked store.*postgresql://") as refused:
        build_handler(sqlite)
    assert len(refused.value.problems) == 1  # only the store is wrong
    external = load_settings(
        {**base, "DATABASE_URL": "postgresql://u@127.0.0.1/db", "RELAY_DELIVERY_MODE": "external"},
        config_text="",
    )
    with pytest.raises(ConfigError, match="RELAY_DELIVERY_MODE=inline") as refused:
        build_handler(external)
    assert len(refused.value.problems) == 1
    with pytest.raises(ConfigError, match="networked store"):
        build_worker_handler(sqlite)
    assert not (tmp_path / "relay.db").exists()


@pytest.mark.postgres
async def test_inline_delivery_is_bounded_by_its_budget(tmp_path: Path) -> None:
    """A sink slower than the inline budget does not hold the callback: the handler answers
    200 before the sink could have answered, the event is committed and its delivery left
    pending (how close to the budget is bench/'s business, not a timed test's)."""
    recorder = Recorder(delay_s=5.0)
    simulators = create_simulator_app()
    async with pg_schema() as pg, AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        settings = dataclasses.replace(
            inline_settings(pg.database_url, sim_url, sink_url, tmp_path), inline_budget_s=0.3
        )
        run = stack.enter_context(lambda_thread())
        handler = await run(lambda: build_handler(settings))
        submit = json.dumps({"provider": "apiframe", "parent_id": "p-nocallback", "action": "U1"})
        auth = {"authorization": f"Bearer {API_TOKEN}"}
        event = http_api_event("POST", "/v1/upscales", auth, submit.encode(), base64_body=False)
        job = json.loads((await run(lambda: handler(event, CONTEXT)))["body"])
        task = simulators.state.providers["apiframe"].state.book.get(job["provider_task_id"])
        body = json.dumps({"task_id": task.id, "image_url": task.image_url}).encode()
        secret = {"x-webhook-secret": task.extra["webhook_secret"]}
        callback = http_api_event(
            "POST", urlsplit(task.callback_url).path, secret, body, base64_body=True
        )
        started = time.monotonic()
        answer = await run(lambda: handler(callback, CONTEXT))
        elapsed = time.monotonic() - started
        assert answer["statusCode"] == 200, answer
        assert elapsed < recorder.delay_s, elapsed  # budget 0.3 s; the sink takes 5 s
        assert recorder.received == []  # answered without waiting for the sink
        [pending] = await pg.fetch("SELECT state FROM deliveries")
        assert pending["state"] == "pending"
