"""Attempts, the stream's delivery outcomes, shared sink health, ``submit --wait`` and
the metrics, end to end on real sockets."""

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

from receiver.feed import FeedFilter
from receiver.tail import stream_items
from simulators import create_simulator_app
from tests.e2e.test_stream import collect
from tests.helpers.postgres import pg_schema
from tests.helpers.processes import relay_process, worker_process
from tests.helpers.recorder import Recorder
from tests.helpers.servers import free_port, serve_app
from tests.helpers.stack import (
    API_TOKEN,
    SECRET_KEY,
    SINK_SECRET,
    Stack,
    running_stack,
    stack_config,
)
from tests.unit.test_metrics import promtool_problems, samples

HTTP_ONLY = '[[routes]]\nevents = ["upscale.completed"]\nsinks = ["http"]\n'
FAST_RETRY = "retry_schedule_s = [0.05, 0.05, 0.05]\n"


async def _wait(check: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_every_attempt_is_recorded_and_streamed(tmp_path: Path) -> None:
    """The http sink answers 503 (echoing its secret), then 200: the delivery lists both
    attempts with status, error, host only and a redacted excerpt; the stream carried
    ``delivery.retry_scheduled`` then ``delivery.delivered``; the job view counts them."""
    recorder = Recorder(reply=f"busy, your secret is {SINK_SECRET}?")
    recorder.answer([503])
    async with running_stack(
        tmp_path, extra_config=HTTP_ONLY, recorder=recorder, http_sink_options=FAST_RETRY
    ) as stack:
        connected = asyncio.Event()
        live = stream_items(
            stack.base_url, API_TOKEN, FeedFilter(types=("delivery.*",)), connected=connected
        )
        first = asyncio.ensure_future(live.__anext__())
        await asyncio.wait_for(connected.wait(), 10)  # at the head: what commits from now
        job = await stack.submit(provider="apiframe", parent_id="grid-1", action="U1")
        outcomes = [await asyncio.wait_for(first, 15)]
        if outcomes[0].type != "delivery.delivered":
            outcomes += await collect(live, "delivery.delivered", job["job_id"])
        await live.aclose()
        assert [o.type for o in outcomes] == ["delivery.retry_scheduled", "delivery.delivered"]
        retry, done = (o.data for o in outcomes)
        assert (retry["sink"], retry["attempt"], retry["status"]) == ("http", 1, 503)
        assert retry["error"].startswith("HTTP 503")
        assert retry["next_attempt_at"]
        assert (done["attempt"], done["status"], done["state"]) == (2, 200, "delivered")

        [row] = await stack.deliveries(job_id=job["job_id"])
        assert row["event_type"] == "upscale.completed"
        response = await stack.api.get(f"/v1/deliveries/{row['id']}")
        assert response.status_code == 200
        delivery = response.json()
        assert delivery["event_type"] == "upscale.completed"
        assert delivery["state"] == "delivered"
        assert delivery["attempt_count"] == 2
        one, two = delivery["attempts"]
        sink_url = httpx.URL(stack.settings.sinks["http"].options["url"])
        for n, attempt in enumerate((one, two), start=1):
            assert set(attempt) >= {
                "n",
                "started_at",
                "duration_ms",
                "status",
                "error",
                "host",
                "response_excerpt",
            }
            assert attempt["n"] == n
            assert attempt["host"] == f"127.0.0.1:{sink_url.port}"  # no path, no query
            assert attempt["duration_ms"] >= 0
        assert (one["status"], two["status"]) == (503, 200)
        assert one["error"].startswith("HTTP 503")
        assert two["error"] is None
        assert one["response_excerpt"] == "busy, your secret is [redacted]?"
        assert SINK_SECRET not in response.text
        assert one["started_at"] < two["started_at"]
        assert (await stack.api.get("/v1/deliveries/dlv_nope")).status_code == 404

        view = await stack.job(job["job_id"])
        completed = [e for e in view["events"] if e["type"] == "upscale.completed"]
        assert completed[0]["deliveries"] == [
            {
                "id": row["id"],
                "sink": "http",
                "state": "delivered",
                "attempts": 2,
                "last_status": 200,
                "last_error": None,
            }
        ]


async def test_metrics_show_backlog_dead_letters_and_durations(tmp_path: Path) -> None:
    recorder = Recorder(default=410)  # every delivery is dead at once
    async with running_stack(tmp_path, extra_config=HTTP_ONLY, recorder=recorder) as stack:
        job = await stack.submit(provider="apiframe", parent_id="grid-1", action="U1")
        await stack.wait_deliveries(1, state="dead")
        await stack.wait_job(job["job_id"], "completed")
        text = (await stack.api.get("/metrics")).text
        assert promtool_problems(text) == []
        found = samples(text)
        assert found[("relay_sink_dead_letters", (("sink", "http"),))] == 1
        assert found[("relay_sink_backlog", (("sink", "http"),))] == 0
        assert found[("relay_sink_backlog", (("sink", "file"),))] == 0
        assert found[("relay_sink_oldest_pending_age_seconds", (("sink", "http"),))] == 0
        job_labels = (("provider", "apiframe"), ("status", "completed"))
        assert found[("relay_job_duration_seconds_count", job_labels)] == 1
        callbacks = found[("relay_callback_duration_seconds_count", (("provider", "apiframe"),))]
        assert callbacks >= 1


def _cli_env(stack: Stack, tmp_path: Path, extra: str) -> dict[str, str]:
    config = stack_config(
        stack.sim_url, stack.settings.sinks["http"].options["url"], stack.events_path, extra
    )
    (tmp_path / "relay.toml").write_text(config)
    return {
        **os.environ,
        "DATABASE_URL": stack.settings.database_url,
        "RELAY_PUBLIC_URL": stack.base_url,
        "RELAY_SECRET_KEY": SECRET_KEY,
        "RELAY_API_TOKEN": API_TOKEN,
        "RELAY_CONFIG": str(tmp_path / "relay.toml"),
    }


def _submit(env: dict[str, str], parent: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "receiver",
            "submit",
            "--provider",
            "apiframe",
            "--parent",
            parent,
            "--action",
            "U1",
            "--wait",
            "--timeout",
            "30",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_submit_wait_exits_0_when_delivered_and_1_on_dead_or_failed(tmp_path: Path) -> None:
    route = (
        '[[routes]]\nevents = ["upscale.completed", "upscale.failed"]\nsinks = ["http", "file"]\n'
    )
    recorder = Recorder()
    async with running_stack(tmp_path, extra_config=route, recorder=recorder) as stack:
        env = _cli_env(stack, tmp_path, route)
        ok = await asyncio.to_thread(_submit, env, "grid-1")
        assert ok.returncode == 0, ok.stderr
        job = json.loads(ok.stdout)  # stdout: the job's JSON alone
        last = [line for line in ok.stderr.splitlines() if line.startswith(job["job_id"])][-1]
        assert "completed" in last
        assert "100%" in last
        assert "http: delivered HTTP 200" in last
        assert "file: delivered" in last

        failed = await asyncio.to_thread(_submit, env, "grid-fail")
        assert failed.returncode == 1, failed.stderr
        assert "failed" in failed.stderr

        recorder.answer([], default=410)
        dead = await asyncio.to_thread(_submit, env, "grid-2")
        assert dead.returncode == 1, dead.stderr
        assert "http: dead HTTP 410" in dead.stderr


async def test_sinks_show_a_paused_circuit_when_the_worker_is_another_process(
    tmp_path: Path,
) -> None:
    """RELAY_DELIVERY_MODE=external: the web process runs no worker, yet GET /v1/sinks
    shows the circuit the ``relay worker`` process opened (and closed), from the store."""
    recorder = Recorder(default=503)
    options = (
        "retry_schedule_s = [0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]\n"
        "circuit_failure_threshold = 2\ncircuit_probe_interval_s = 0.3\n"
    )
    async with (
        serve_app(recorder.app()) as sink_url,
        serve_app(create_simulator_app()) as sim_url,
    ):
        port = free_port()
        config = stack_config(
            sim_url,
            sink_url + "/hooks",
            tmp_path / "e.jsonl",
            HTTP_ONLY,
            http_sink_options=options,
        )
        (tmp_path / "relay.toml").write_text(config)
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
            "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "RELAY_SECRET_KEY": SECRET_KEY,
            "RELAY_API_TOKEN": API_TOKEN,
            "RELAY_CONFIG": str(tmp_path / "relay.toml"),
            "RELAY_DELIVERY_MODE": "external",
        }
        async with (
            relay_process(env, port, log_path=tmp_path / "web.log"),
            worker_process(env, tmp_path / "worker.log"),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as api,
        ):
            for n in range(4):
                response = await api.post(
                    "/v1/upscales",
                    json={"provider": "apiframe", "parent_id": f"g{n}", "action": "U1"},
                )
                assert response.status_code == 202, response.text

            async def sink() -> dict[str, Any]:
                views = (await api.get("/v1/sinks")).json()["sinks"]
                return {v["name"]: v for v in views}["http"]

            async def paused() -> bool:
                return (await sink())["state"] in ("paused", "probing")

            await _wait(paused, 20)
            view = await sink()
            assert view["circuit_opened"] >= 1
            assert view["last_error"].startswith("HTTP 503")
            assert view["backlog"] >= 1
            recorder.answer([], default=200)

            async def closed() -> bool:
                view = await sink()
                return view["state"] == "ok" and view["backlog"] == 0

            await _wait(closed, 20)
            assert (await sink())["circuit_closed"] >= 1


@pytest.mark.postgres
async def test_postgres_stream_and_circuit_span_processes(tmp_path: Path) -> None:
    """On PostgreSQL: a web process (no worker) and two ``relay worker`` processes. The
    web's stream carries the outcomes the workers commit (LISTEN/NOTIFY), the workers
    pause the failing sink together and one probe closes it for both."""
    recorder = Recorder(default=503)
    options = (
        "retry_schedule_s = [0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]\n"
        "circuit_failure_threshold = 2\ncircuit_probe_interval_s = 0.5\n"
    )
    async with (
        pg_schema() as pg,
        serve_app(recorder.app()) as sink_url,
        serve_app(create_simulator_app()) as sim_url,
    ):
        port = free_port()
        config = stack_config(
            sim_url, sink_url + "/hooks", tmp_path / "e.jsonl", HTTP_ONLY, http_sink_options=options
        )
        (tmp_path / "relay.toml").write_text(config)
        env = {
            **os.environ,
            "DATABASE_URL": pg.database_url,
            "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "RELAY_SECRET_KEY": SECRET_KEY,
            "RELAY_API_TOKEN": API_TOKEN,
            "RELAY_CONFIG": str(tmp_path / "relay.toml"),
            "RELAY_DELIVERY_MODE": "external",
        }
        async with (
            relay_process(env, port, log_path=tmp_path / "web.log"),
            worker_process(env, tmp_path / "w1.log"),
            worker_process(env, tmp_path / "w2.log"),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as api,
        ):
            base = f"http://127.0.0.1:{port}"
            connected = asyncio.Event()
            live = stream_items(
                base, API_TOKEN, FeedFilter(types=("delivery.*",)), connected=connected
            )
            first = asyncio.ensure_future(live.__anext__())
            await asyncio.wait_for(connected.wait(), 10)  # at the head: what commits from now
            for n in range(6):
                response = await api.post(
                    "/v1/upscales",
                    json={"provider": "apiframe", "parent_id": f"g{n}", "action": "U1"},
                )
                assert response.status_code == 202, response.text
            assert (await asyncio.wait_for(first, 20)).type == "delivery.retry_scheduled"

            async def sink() -> dict[str, Any]:
                views = (await api.get("/v1/sinks")).json()["sinks"]
                return {v["name"]: v for v in views}["http"]

            async def paused() -> bool:
                return (await sink())["state"] in ("paused", "probing")

            await _wait(paused, 20)
            attempts_when_paused = recorder.attempts
            await asyncio.sleep(0.3)  # paused: neither worker keeps hammering the sink
            assert recorder.attempts - attempts_when_paused <= 2
            recorder.answer([], default=200)

            delivered: set[str] = set()
            async with asyncio.timeout(30):
                async for item in live:
                    if item.type == "delivery.delivered":
                        delivered.add(item.data["delivery_id"])
                    if len(delivered) == 6:
                        break
            await live.aclose()
            view = await sink()
            assert view["state"] == "ok"
            assert view["circuit_opened"] >= 1
            assert view["circuit_closed"] >= 1
            logs = (tmp_path / "w1.log").read_text() + (tmp_path / "w2.log").read_text()
            assert logs.count('"delivery.delivered"') == 6  # each delivered once, overall
