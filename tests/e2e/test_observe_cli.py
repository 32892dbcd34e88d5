"""``relay sink test``, ``relay sinks`` and ``relay tail`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from tests.helpers.recorder import Recorder
from tests.helpers.servers import free_port, serve_app
from tests.helpers.stack import API_TOKEN, SECRET_KEY, SINK_SECRET, running_stack, stack_config


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
        "RELAY_PUBLIC_URL": f"http://127.0.0.1:{free_port()}",
        "RELAY_SECRET_KEY": SECRET_KEY,
        "RELAY_API_TOKEN": API_TOKEN,
        "RELAY_CONFIG": str(tmp_path / "relay.toml"),
        **extra,
    }


def _relay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_sink_test_sends_one_signed_relay_test_event(tmp_path: Path) -> None:
    """The http sink's destination gets one Standard Webhooks-signed ``relay.test``
    event; the command prints what it answered (status and body, secrets redacted)."""
    recorder = Recorder(reply=f'{{"ok":true,"echo":"{SINK_SECRET}"}}')
    async with serve_app(recorder.app()) as sink_url:
        config = stack_config("http://127.0.0.1:9", sink_url + "/hooks", tmp_path / "e.jsonl")
        (tmp_path / "relay.toml").write_text(config)
        result = await asyncio.to_thread(_relay, _env(tmp_path), "sink", "test", "http")
        assert result.returncode == 0, result.stderr
        [received] = recorder.received
        event = Webhook(SINK_SECRET).verify(received.body, received.headers)
        assert event["type"] == "relay.test"
        assert received.headers["webhook-id"] == event["id"]
        assert "sink 'http' (http → 127.0.0.1:" in result.stdout
        assert f"delivered relay.test {event['id']}" in result.stdout
        assert "answered HTTP 200" in result.stdout
        assert '| {"ok":true,"echo":"[redacted]"}' in result.stdout
        assert SINK_SECRET not in result.stdout

        recorder.answer([503])
        failed = await asyncio.to_thread(_relay, _env(tmp_path), "sink", "test", "http")
        assert failed.returncode == 1
        assert "FAILED" in failed.stdout
        assert "answered HTTP 503" in failed.stdout

        unknown = await asyncio.to_thread(_relay, _env(tmp_path), "sink", "test", "nope")
        assert unknown.returncode == 1
        assert "no sink 'nope' is configured (configured: file, http)" in unknown.stderr


async def test_sinks_lists_each_sink_from_the_store(tmp_path: Path) -> None:
    """JSON lines when stdout is a pipe (a table on a terminal); no store, no listing."""
    config = stack_config("http://127.0.0.1:9", "http://127.0.0.1:9/hooks", tmp_path / "e.jsonl")
    (tmp_path / "relay.toml").write_text(config)
    missing = await asyncio.to_thread(_relay, _env(tmp_path), "sinks")
    assert missing.returncode == 1
    assert "no store at" in missing.stderr
    assert (await asyncio.to_thread(_relay, _env(tmp_path), "migrate")).returncode == 0
    listed = await asyncio.to_thread(_relay, _env(tmp_path), "sinks")
    assert listed.returncode == 0, listed.stderr
    views = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {v["name"]: (v["type"], v["state"], v["backlog"], v["dead"]) for v in views} == {
        "http": ("http", "ok", 0, 0),
        "file": ("file", "ok", 0, 0),
    }


async def test_tail_prints_one_line_per_event_of_the_job(tmp_path: Path) -> None:
    """``relay tail --job`` follows the live stream of a running relay."""
    route = '[[routes]]\nsinks = ["file"]\nevents = ["upscale.*"]\n'
    async with running_stack(tmp_path, extra_config=route) as stack:
        job = await stack.submit(provider="apiframe", parent_id="grid-1", action="U3", ref="t-1")
        await stack.wait_job(job["job_id"], "completed")
        env = _env(tmp_path, RELAY_URL=stack.base_url)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "receiver",
            "tail",
            "--job",
            job["job_id"],
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        lines: list[str] = []
        try:
            async with asyncio.timeout(20):
                assert process.stdout is not None
                while not any("upscale.completed" in line for line in lines):
                    lines.append((await process.stdout.readline()).decode())
        finally:
            process.terminate()
            await process.wait()
        assert all(job["job_id"] in line for line in lines)
        assert "upscale.progress" in lines[0]
        assert "ref=t-1" in lines[-1]
        assert "apiframe" in lines[-1]
