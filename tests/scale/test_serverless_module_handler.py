"""The documented Lambda entry point ``receiver.serverless:handler`` builds its app from the
environment and delivers inline."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import receiver.serverless
from simulators import create_simulator_app
from tests.helpers.postgres import pg_schema
from tests.helpers.recorder import Recorder
from tests.helpers.servers import serve_app
from tests.helpers.stack import API_TOKEN, SECRET_KEY, stack_config
from tests.scale.test_serverless import (
    API_HOST,
    CONTEXT,
    http_api_event,
    lambda_thread,
)

ROUTE = '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'


@pytest.mark.postgres
async def test_module_handler_reads_the_environment_and_delivers_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``receiver.serverless.handler`` itself (what Lambda is configured with) builds the
    app from the environment and delivers a callback inline before it returns."""
    recorder = Recorder()
    simulators = create_simulator_app()
    async with pg_schema() as pg, AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        config = tmp_path / "relay.toml"
        config.write_text(
            stack_config(sim_url, sink_url + "/hooks", tmp_path / "events.jsonl") + ROUTE
        )
        for key, value in {
            "DATABASE_URL": pg.database_url,
            "RELAY_DELIVERY_MODE": "inline",
            "RELAY_PUBLIC_URL": f"https://{API_HOST}",
            "RELAY_SECRET_KEY": SECRET_KEY,
            "RELAY_API_TOKEN": API_TOKEN,
            "RELAY_CONFIG": str(config),
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(receiver.serverless, "_handler", None)
        run = stack.enter_context(lambda_thread())
        submit = json.dumps({"provider": "apiframe", "parent_id": "p-nocallback", "action": "U1"})
        auth = {"authorization": f"Bearer {API_TOKEN}"}
        event = http_api_event("POST", "/v1/upscales", auth, submit.encode(), base64_body=False)
        submitted = await run(lambda: receiver.serverless.handler(event, CONTEXT))
        assert submitted["statusCode"] == 202, submitted
        job = json.loads(submitted["body"])
        task = simulators.state.providers["apiframe"].state.book.get(job["provider_task_id"])
        body = json.dumps({"task_id": task.id, "image_url": task.image_url}).encode()
        secret = {"x-webhook-secret": task.extra["webhook_secret"]}
        callback = http_api_event(
            "POST", urlsplit(task.callback_url).path, secret, body, base64_body=True
        )
        answer = await run(lambda: receiver.serverless.handler(callback, CONTEXT))
        assert answer["statusCode"] == 200, answer
        [received] = recorder.received
        assert received.headers["webhook-id"] == json.loads(answer["body"])["event_id"]
