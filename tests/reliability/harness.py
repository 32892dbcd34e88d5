"""What the reliability tests share: simulators and a recording sink on real sockets,
a ``relay.toml`` beside them, and ``relay serve`` as a real process (SQLite) whose
stderr is captured to a file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from simulators import create_simulator_app
from tests.helpers.recorder import Recorder
from tests.helpers.servers import free_port, serve_app
from tests.helpers.stack import API_TOKEN, SECRET_KEY, SINK_SECRET, stack_config

KIE_HMAC_KEY = "kie-hmac-key-for-reliability"
ACCOUNT_SECRET = "apiframe-account-secret-for-reliability"
#: providers poll only when a test says so: a poll would change the store on its own
NO_POLLING = "poll_after_s = 3600\nconfirm_by_poll = false\n"
WEBHOOK_PROVIDERS = ("apiframe", "imaginepro", "kie", "useapi")


def kie_signature(task_id: str, timestamp: int, key: str = KIE_HMAC_KEY) -> str:
    message = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


@dataclass
class Job:
    """A job submitted through the relay, with what its callback needs."""

    provider: str
    job_id: str
    task_id: str
    callback_url: str
    headers: dict[str, str]

    def completed_body(self) -> dict[str, Any]:
        """A valid terminal callback body in the provider's own shape."""
        url = f"https://cdn.example.test/{self.task_id}.png"
        if self.provider == "apiframe":
            return {"task_id": self.task_id, "status": "finished", "image_url": url}
        if self.provider == "imaginepro":
            return {"messageId": self.task_id, "status": "DONE", "uri": url, "ref": self.job_id}
        if self.provider == "kie":
            data = {"taskId": self.task_id, "resultUrls": [url], "promptJson": '{"taskId":"p"}'}
            return {"code": 200, "msg": "success", "data": data}
        assert self.provider == "useapi"
        return {"jobid": self.task_id, "status": "completed", "attachments": [{"url": url}]}

    def auth_headers(self, task_id: str | None = None) -> dict[str, str]:
        """The callback's credentials (Kie's HMAC is over the task id it names)."""
        if self.provider != "kie":
            return dict(self.headers)
        now = int(time.time())
        return {
            "x-webhook-timestamp": str(now),
            "x-webhook-signature": kie_signature(task_id or self.task_id, now),
        }


@dataclass
class Harness:
    tmp_path: Path
    simulators: Starlette
    recorder: Recorder
    port: int
    env: dict[str, str]
    log_path: Path
    jobs: list[Job] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_TOKEN}"}

    def secrets(self) -> list[str]:
        """Every secret of the run: none may appear in the log."""
        found = [API_TOKEN, SECRET_KEY, SINK_SECRET, KIE_HMAC_KEY, ACCOUNT_SECRET]
        for job in self.jobs:
            found.append(job.callback_url.rsplit("/", 1)[1])
            found.extend(v for k, v in job.headers.items() if k == "x-webhook-secret")
        return found

    async def submit(self, client: httpx.AsyncClient, provider: str, parent: str) -> Job:
        answer = await client.post(
            self.base_url + "/v1/upscales",
            json={"provider": provider, "parent_id": parent, "action": "U1"},
            headers=self.api_headers,
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        task = self.simulators.state.providers[provider].state.book.get(body["provider_task_id"])
        headers = {}
        if provider == "apiframe":
            headers["x-webhook-secret"] = task.extra["webhook_secret"]
        job = Job(provider, body["job_id"], task.id, task.callback_url, headers)
        self.jobs.append(job)
        return job

    def counts(self) -> dict[str, int]:
        """Rows per table of the relay's SQLite store."""
        with sqlite3.connect(self.tmp_path / "relay.db") as db:
            return {
                table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("jobs", "events", "deliveries", "idempotency_keys")
            }

    def snapshot(self) -> list[Any]:
        """Every row of jobs, events and deliveries (for "nothing changed")."""
        with sqlite3.connect(self.tmp_path / "relay.db") as db:
            rows: list[Any] = []
            for table in ("jobs", "events", "deliveries"):
                rows.extend(db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
            return rows

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def log_records(self) -> list[dict[str, Any]]:
        """The log as JSON records; a line that is not JSON (uvicorn's own included)
        fails the test."""
        records = []
        for line in self.log_lines():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"a log line is not JSON: {line[:300]!r}") from None
        return records


@asynccontextmanager
async def harness(
    tmp_path: Path,
    *,
    recorder: Recorder | None = None,
    extra_config: str = "",
    http_sink_options: str = "",
    delivery_mode: str = "inprocess",
    lease_s: float = 60.0,
) -> AsyncIterator[Harness]:
    """Simulators + a recorder (the http sink, routed completed events only) and the
    config for ``relay serve``; start the relay with ``relay_process(h.env, h.port,
    log_path=h.log_path)``."""
    recorder = recorder or Recorder()
    simulators = create_simulator_app()
    simulators.state.providers["kie"].state.hmac_key = KIE_HMAC_KEY
    port = free_port()
    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        options = {name: NO_POLLING for name in (*WEBHOOK_PROVIDERS, "apimart")}
        options["kie"] += f'webhook_hmac_key = "{KIE_HMAC_KEY}"\n'
        options["apiframe"] += f'account_webhook_secret = "{ACCOUNT_SECRET}"\n'
        options["useapi"] += "max_jobs = 15\n"  # useapi's largest plan: no queueing in these tests
        config = stack_config(
            sim_url,
            sink_url + "/hooks",
            tmp_path / "events.jsonl",
            provider_options=options,
            http_sink_options=http_sink_options,
        )
        config = config.replace("[delivery]\n", f"[delivery]\nlease_s = {lease_s}\n", 1)
        routes = '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'
        (tmp_path / "relay.toml").write_text(config + extra_config + routes)
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
            "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "RELAY_SECRET_KEY": SECRET_KEY,
            "RELAY_API_TOKEN": API_TOKEN,
            "RELAY_CONFIG": str(tmp_path / "relay.toml"),
            "RELAY_LOG_FORMAT": "json",
            "RELAY_DELIVERY_MODE": delivery_mode,
        }
        yield Harness(tmp_path, simulators, recorder, port, env, tmp_path / "relay.log")
        for provider in WEBHOOK_PROVIDERS:
            await simulators.state.providers[provider].state.sender.drain()


async def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)
