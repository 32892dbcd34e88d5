"""The relay as a real process: crash safety under SIGKILL, and the CLI verbs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from simulators import create_simulator_app
from tests.helpers.processes import relay_process
from tests.helpers.recorder import Recorder
from tests.helpers.servers import free_port, serve_app
from tests.helpers.stack import API_TOKEN, SECRET_KEY, stack_config


def _env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
        "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RELAY_SECRET_KEY": SECRET_KEY,
        "RELAY_API_TOKEN": API_TOKEN,
        "RELAY_CONFIG": str(tmp_path / "relay.toml"),
        "RELAY_LOG_FORMAT": "json",
        **extra,
    }


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
        env = _env(tmp_path, port, RELAY_DELIVERY_MODE="external")
        async with relay_process(env, port) as process, httpx.AsyncClient() as client:
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
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            assert process.stderr is not None
            logs = process.stderr.read().decode()
        # one JSON line per request, and no credential in any of them
        requests = [json.loads(line) for line in logs.splitlines() if '"http.request"' in line]
        assert {r["path"] for r in requests} >= {"/v1/upscales", "/callbacks/apiframe/[redacted]"}
        assert all(r["request_id"] for r in requests)
        token = task.callback_url.rsplit("/", 1)[1]
        for secret in (token, task.extra["webhook_secret"], API_TOKEN, SECRET_KEY):
            assert secret not in logs
        assert recorder.received == []
        async with relay_process(_env(tmp_path, port), port):
            [received] = await recorder.wait_for(1, timeout=15)
        assert received.json["type"] == "upscale.completed"
        assert received.json["data"]["provider_task_id"] == task.id


def _relay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_names_every_problem_without_traceback(tmp_path: Path) -> None:
    """`relay check-config` lists all problems at once and exits 2; `serve` refuses the
    same config with the same messages and no traceback."""
    (tmp_path / "relay.toml").write_text(
        """
[providers.apiframe]
base_url = "http://127.0.0.1:1"
[sinks.team]
type = "pigeon"
[sinks.app]
type = "http"
url = "${UNSET_FOR_THIS_TEST}"
[[routes]]
sinks = ["ghost"]
"""
    )
    env = _env(tmp_path, free_port())
    env.pop("UNSET_FOR_THIS_TEST", None)
    checked = _relay(env, "check-config")
    assert checked.returncode == 2
    for fragment in (
        "providers.apiframe: api_key is required",
        "unknown sink type 'pigeon'",
        "${UNSET_FOR_THIS_TEST} is not set",
        "names unknown sink 'ghost'",
    ):
        assert fragment in checked.stderr
    served = _relay(env, "serve", "--port", "1")
    assert served.returncode == 2
    for fragment in (
        "providers.apiframe: api_key is required",
        "unknown sink type 'pigeon'",
        "${UNSET_FOR_THIS_TEST} is not set",
        "names unknown sink 'ghost'",
    ):
        assert fragment in served.stderr
    assert "Traceback" not in served.stderr + checked.stderr


def test_missing_secrets_refuse_to_start(tmp_path: Path) -> None:
    """Outside dev mode, no RELAY_SECRET_KEY / RELAY_API_TOKEN is a startup error."""
    env = _env(tmp_path, free_port())
    del env["RELAY_SECRET_KEY"], env["RELAY_API_TOKEN"]
    result = _relay(env, "check-config")
    assert result.returncode == 2
    assert "RELAY_SECRET_KEY is not set" in result.stderr
    assert "RELAY_API_TOKEN is not set" in result.stderr


def test_migrate_and_empty_listings(tmp_path: Path) -> None:
    """`relay migrate` is idempotent and the listing verbs run on a fresh store."""
    (tmp_path / "relay.toml").write_text("")
    env = _env(tmp_path, free_port())
    first = _relay(env, "migrate")
    second = _relay(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert '"schema_version"' in first.stdout
    for verb in ("jobs", "deliveries"):
        listed = _relay(env, verb)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout == ""
    assert _relay(env, "replay").stdout.strip() == '{"replayed": 0}'


def test_demo_prints_the_event_arriving_at_both_sinks(tmp_path: Path) -> None:
    """`relay demo` (what `make run` starts) submits an upscale through the simulator and
    prints its upscale.completed event arriving at the http and the file sink."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "DATABASE_URL"
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "demo", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            seen = "".join(lines)
            done = "file sink:" in seen and "delivery  delivered upscale.completed" in seen
            if done or len(lines) > 50:
                break
        text = "".join(lines)
        assert "http sink: upscale.completed evt_" in text, text
        assert "(signature verified)" in text
        assert "file sink: upscale.completed evt_" in text
        event_id = text.split("http sink: upscale.completed ")[1].split()[0]
        assert event_id in (tmp_path / ".relay-demo" / "events.jsonl").read_text()
        assert f"event     upscale.completed {event_id}" in text  # one line per event
        assert f"delivery  delivered upscale.completed {event_id} → " in text
        # the paste-ready exports work for the CLI while the demo serves
        exports = dict(re.findall(r"^  export (\w+)=(\S+)$", text, re.MULTILINE))
        assert set(exports) >= {
            "DATABASE_URL",
            "RELAY_CONFIG",
            "RELAY_API_TOKEN",
            "RELAY_SECRET_KEY",
            "DEMO_SINK_SECRET",
        }
        shell = {"PATH": os.environ["PATH"], **{k: shlex.split(v)[0] for k, v in exports.items()}}
        checked = _relay(shell, "check-config")
        assert checked.returncode == 0, checked.stderr
        assert "store ok: SQLite" in checked.stdout
        [job] = [json.loads(line) for line in _relay(shell, "jobs").stdout.splitlines()]
        assert job["status"] == "completed"
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


async def test_submit_verb_prints_only_json_on_stdout(tmp_path: Path) -> None:
    """`relay submit` submits through the provider and prints the job as JSON alone on
    stdout (logs go to stderr), so scripts can parse it."""
    async with serve_app(create_simulator_app()) as sim_url:
        (tmp_path / "relay.toml").write_text(
            stack_config(sim_url, "http://127.0.0.1:9/hooks", tmp_path / "events.jsonl")
        )
        env = _env(tmp_path, free_port())
        result = await asyncio.to_thread(
            _relay,
            env,
            "submit",
            "--provider",
            "apiframe",
            "--parent",
            "grid",
            "--action",
            "Upscale (Subtle)",
            "--ref",
            "cli-1",
        )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["action"] == "upscale_subtle"
    assert job["ref"] == "cli-1"
    assert job["provider_task_id"]
    assert "submit.accepted" in result.stderr


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
        env = _env(tmp_path, port, RELAY_DELIVERY_MODE="external")
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


def test_check_config_warns_about_sinks_no_route_uses(tmp_path: Path) -> None:
    """A valid config passes check-config, which still names the sinks no route uses."""
    (tmp_path / "relay.toml").write_text(
        """
[sinks.a]
type = "file"
path = "a.jsonl"
[sinks.b]
type = "file"
path = "b.jsonl"
[[routes]]
sinks = ["a"]
"""
    )
    result = _relay(_env(tmp_path, free_port()), "check-config")
    assert result.returncode == 0, result.stderr
    assert "sink 'b' is not used by any route" in result.stdout
    assert "config ok" in result.stdout
