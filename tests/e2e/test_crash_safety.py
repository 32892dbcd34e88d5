"""The relay as a real process under signals: SIGKILL after a 2xx loses nothing and SIGTERM
lets the delivery in flight finish."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from simulators import create_simulator_app
from tests.helpers.processes import relay_env, relay_process
from tests.helpers.recorder import Recorder
from tests.helpers.servers import free_port, serve_app
from tests.helpers.stack import API_TOKEN, SECRET_KEY, stack_config
from tests.helpers.waiting import wait_until


async def test_sigkill_after_ack_still_delivers_after_restart(tmp_path: Path) -> None:
    """A callback answered 200 survives SIGKILL of the server before any delivery: the
    restarted relay delivers it."""
    recorder = Recorder()
    simulators = create_simulator_app()
    port = free_port()
    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        (tmp_path / "relay.toml").write_text(
            stack_config(sim_url, sink_url + "/hooks", tmp_path / "events.jsonl")
            + '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'
        )
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        # external delivery mode: this process only ingests, so nothing is delivered yet
        env = relay_env(tmp_path, port, RELAY_DELIVERY_MODE="external")
        log_path = tmp_path / "relay.log"
        async with (
            relay_process(env, port, log_path=log_path) as process,
            httpx.AsyncClient() as client,
        ):
            submitted = await client.post(
                f"http://127.0.0.1:{port}/v1/upscales",
                json={"provider": "apiframe", "parent_id": "p-nocallback", "action": "U1"},
                headers=headers,
            )
            assert submitted.status_code == 202, submitted.text
            task = simulators.state.providers["apiframe"].state.book.get(
                submitted.json()["provider_task_id"]
            )
            answer = await client.post(
                task.callback_url,
                json={"task_id": task.id, "image_url": task.image_url},
                headers={"x-webhook-secret": task.extra["webhook_secret"]},
            )
            assert answer.status_code == 200
            # the request line is logged just after the answer: kill once it is written
            await wait_until(lambda: "/callbacks/apiframe/" in log_path.read_text())
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            logs = log_path.read_text()
        # one JSON line per request (a callback's is its callback.* line), no credential
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        requests = [r for r in lines if "path" in r and "status" in r]
        assert {r["event"] for r in requests} >= {"http.request", "callback.accepted"}
        assert {r["path"] for r in requests} >= {"/v1/upscales", "/callbacks/apiframe/[redacted]"}
        assert all(r["request_id"] for r in requests)
        ids = [r["request_id"] for r in requests]
        assert len(ids) == len(set(ids))
        token = task.callback_url.rsplit("/", 1)[1]
        for secret in (token, task.extra["webhook_secret"], API_TOKEN, SECRET_KEY):
            assert secret not in logs
        assert recorder.received == []
        async with relay_process(relay_env(tmp_path, port), port):
            [received] = await recorder.wait_for(1, timeout=15)
        assert received.json["type"] == "upscale.completed"
        assert received.json["data"]["provider_task_id"] == task.id


async def test_worker_finishes_in_flight_delivery_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM to `relay worker` (a deploy) lets the delivery it is sending finish and be
    recorded, then exits 0: nothing is left to a lease or sent twice."""
    recorder = Recorder(delay_s=1.0)
    simulators = create_simulator_app()
    port = free_port()
    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        (tmp_path / "relay.toml").write_text(
            stack_config(sim_url, sink_url + "/hooks", tmp_path / "events.jsonl")
            + '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'
        )
        env = relay_env(tmp_path, port, RELAY_DELIVERY_MODE="external")
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with relay_process(env, port), httpx.AsyncClient() as client:
            submitted = await client.post(
                f"http://127.0.0.1:{port}/v1/upscales",
                json={"provider": "apiframe", "parent_id": "g", "action": "U1"},
                headers=headers,
            )
            assert submitted.status_code == 202
            worker = subprocess.Popen(
                [sys.executable, "-m", "receiver", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                async with asyncio.timeout(15):
                    while recorder.attempts == 0:
                        await asyncio.sleep(0.02)
                worker.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(worker.wait, 15)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            assert code == 0
            listed = await client.get(f"http://127.0.0.1:{port}/v1/deliveries", headers=headers)
            [delivery] = listed.json()["deliveries"]
            assert delivery["state"] == "delivered"
            assert delivery["attempts"] == 1
            assert len(recorder.received) == 1
