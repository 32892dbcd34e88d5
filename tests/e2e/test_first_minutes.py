"""A new user's first minutes, run as they run them: the real ``relay`` CLI as
subprocesses, with only the environment each command needs (issue 9)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from simulators import create_simulator_app, default_keys
from tests.helpers.servers import free_port, serve_app

TYPOS = """
[relay]
poll_tik_s = 1

[delivery]
retry_shedule_s = [0, 5]

[providers.apiframe]
api_key = "k"
bse_url = "http://127.0.0.1:9/apiframe"
account_webhook_secret = "short"

[providers.kie]
api_key = "k"
webhook_hmac_key = ""

[sinkz.x]
type = "file"

[sinks.hook]
type = "http"
urll = "https://example.com/hook"

[[routes]]
event = ["upscale.completed"]
sinks = ["hook"]
"""


def base_env(**extra: str) -> dict[str, str]:
    """What a clean shell has: no RELAY_* variables, no DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**env, **extra}


def relay(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def on_a_terminal(cwd: Path, env: dict[str, str], *args: str) -> str:
    """Run ``relay *args`` with stdout on a pseudo-terminal; return what it showed."""
    controller, terminal = pty.openpty()
    try:
        subprocess.run(
            [sys.executable, "-m", "receiver", *args],
            cwd=cwd,
            env=env,
            stdout=terminal,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=True,
        )
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal side is closed: everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_typos_are_named_with_their_table_and_the_key_meant(tmp_path: Path) -> None:
    """Every typo of the issue fails `check-config` (exit 2, no traceback), each named
    with its table and the closest known key; bad provider options are named too."""
    (tmp_path / "relay.toml").write_text(TYPOS)
    result = relay(tmp_path, base_env(RELAY_SECRET_KEY="s", RELAY_API_TOKEN="t"), "check-config")
    assert result.returncode == 2, result.stdout + result.stderr
    for expected in (
        "unknown key `bse_url` in [providers.apiframe] (did you mean `base_url`?)",
        "unknown key `retry_shedule_s` in [delivery] (did you mean `retry_schedule_s`?)",
        "unknown key `poll_tik_s` in [relay] (did you mean `poll_tick_s`?)",
        "unknown table [sinkz] in the config file (did you mean [sinks]?)",
        "unknown key `event` in [[routes]] #1 (did you mean `events`?)",
        "unknown key `urll` in [sinks.hook] (did you mean `url`?)",
        "providers.kie: webhook_hmac_key is empty",
        "providers.apiframe: account_webhook_secret is too short",
    ):
        assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "config ok" not in result.stdout


def test_store_commands_need_only_database_url(tmp_path: Path) -> None:
    """`jobs`, `deliveries`, `replay` and `migrate` run with DATABASE_URL alone (a
    relay.toml full of unset ${VAR}s in the directory is not read); a read-only verb
    never creates an empty store; bad URLs and unreachable stores are one line."""
    (tmp_path / "relay.toml").write_text('[sinks.a]\ntype = "http"\nurl = "${NOT_SET_HERE}"\n')
    bare = base_env()
    refused = relay(tmp_path, bare, "jobs")
    assert refused.returncode == 1, refused.stderr
    assert f"no store at {tmp_path.resolve() / 'relay.db'}" in refused.stderr
    assert not (tmp_path / "relay.db").exists()

    malformed = base_env(DATABASE_URL="sqlite://relay.db")
    for args in (("jobs",), ("check-config", "--offline")):
        result = relay(
            tmp_path, {**malformed, "RELAY_SECRET_KEY": "s", "RELAY_API_TOKEN": "t"}, *args
        )
        assert result.returncode == 2, result.stderr
        assert "DATABASE_URL 'sqlite://relay.db' is malformed" in result.stderr
        assert "sqlite:///relay.db" in result.stderr

    unreachable = relay(tmp_path, base_env(DATABASE_URL="postgresql://u:pw@127.0.0.1:1/x"), "jobs")
    assert unreachable.returncode == 1
    assert unreachable.stderr.strip() == (
        "relay: cannot reach postgresql://u@127.0.0.1:1/x: connection refused "
        "(is the server running?)"
    )
    secrets = {"RELAY_SECRET_KEY": "s", "RELAY_API_TOKEN": "t", "NOT_SET_HERE": "https://x.test"}
    served = relay(
        tmp_path, base_env(DATABASE_URL="postgresql://u@127.0.0.1:1/x", **secrets), "serve"
    )
    assert served.returncode == 1
    assert served.stderr.startswith("relay: cannot reach postgresql://u@127.0.0.1:1/x")
    (tmp_path / "a-file").write_text("")
    not_a_dir = relay(tmp_path, base_env(DATABASE_URL="sqlite:///a-file/relay.db"), "migrate")
    assert not_a_dir.returncode == 1
    assert "a-file is not a directory" in not_a_dir.stderr

    migrated = relay(tmp_path, bare, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["schema_version"] >= 1  # piped: JSON
    for verb, empty in (("jobs", "no jobs yet"), ("deliveries", "no deliveries yet")):
        listed = relay(tmp_path, bare, verb, "--json")
        assert (listed.returncode, listed.stdout, listed.stderr.strip()) == (0, "", empty)
    assert on_a_terminal(tmp_path, bare, "deliveries", "--state", "dead").strip() == (
        "no deliveries match"
    )
    replayed = relay(tmp_path, bare, "replay")
    assert json.loads(replayed.stdout) == {"replayed": 0}
    for result in (refused, unreachable, served, not_a_dir, migrated, replayed):
        assert "Traceback" not in result.stderr
        assert "RELAY_SECRET_KEY" not in result.stderr


async def test_serve_flags_shape_callback_urls_and_logs_are_json(tmp_path: Path) -> None:
    """`relay serve --host 127.0.0.1 --port P` (dev mode, no secrets set) prints the
    token it made and one line saying where it listens and where callbacks point (port
    P), callbacks reach it there, its stderr is JSON lines only (uvicorn's included), a
    second serve on P is one line, and `relay jobs` shows the job as a table."""
    simulators = create_simulator_app()
    port = free_port()
    async with serve_app(simulators) as sim_url:
        (tmp_path / "relay.toml").write_text(
            f'[providers.apiframe]\napi_key = "{default_keys()["apiframe"]}"\n'
            f'base_url = "{sim_url}/apiframe"\n'
        )
        env = base_env(RELAY_ENV="dev")
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "receiver",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        try:
            assert process.stdout is not None
            lines = [await asyncio.to_thread(process.stdout.readline) for _ in range(3)]
            token = re.findall(r"RELAY_API_TOKEN=(\S+)", "".join(lines))[0]
            listening = lines[-1]
            assert listening.startswith(f"relay: listening on http://127.0.0.1:{port};"), lines
            assert f"callbacks to http://127.0.0.1:{port}/callbacks/" in listening
            assert "store sqlite:///./relay.db" in listening
            assert "delivery inprocess" in listening
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(200):
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.05)
                answer = await client.post(
                    "/v1/upscales",
                    json={"provider": "apiframe", "parent_id": "grid", "action": "U1"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status_code == 202, answer.text
                job = answer.json()
                task = simulators.state.providers["apiframe"].state.book.get(
                    job["provider_task_id"]
                )
                assert task.callback_url.startswith(f"http://127.0.0.1:{port}/callbacks/apiframe/")
                for _ in range(200):
                    got = (
                        await client.get(
                            f"/v1/jobs/{job['job_id']}",
                            headers={"Authorization": f"Bearer {token}"},
                        )
                    ).json()
                    if got["status"] == "completed":
                        break
                    await asyncio.sleep(0.05)
                assert got["status"] == "completed"  # the callbacks reached this process
            second = await asyncio.to_thread(
                relay, tmp_path, env, "serve", "--host", "127.0.0.1", "--port", str(port)
            )
            assert second.returncode == 1
            assert f"port {port} is already in use" in second.stderr
            assert len(second.stderr.strip().splitlines()) == 1, second.stderr
            shown = await asyncio.to_thread(on_a_terminal, tmp_path, base_env(), "jobs")
            header, row = shown.strip().splitlines()
            assert re.match(r"job_id +provider +action +status +ref +submitted_at", header)
            assert row.startswith(job["job_id"])
            assert "apiframe" in row
            assert "completed" in row
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 15)
            if process.stdout is not None:
                process.stdout.close()
    logs = log_path.read_text().splitlines()
    assert logs
    parsed = [json.loads(line) for line in logs]  # every line is JSON
    assert any(entry.get("logger") == "uvicorn.error" for entry in parsed)
    assert token not in log_path.read_text()


async def test_simulate_says_where_and_which_keys(tmp_path: Path) -> None:
    """`relay simulate` prints each provider's base URL and the key it accepts; that
    key works there and another is refused; `relay gen-secret` prints a whsec_ secret."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "simulate", "--port", str(port)],
        cwd=tmp_path,
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [await asyncio.to_thread(process.stdout.readline) for _ in range(6)]
        listed = {}
        for line in lines[1:]:
            name, base_url, label, key = line.split()
            assert label == "api_key"
            listed[name] = (base_url, key)
        assert set(listed) == set(default_keys())
        base_url, key = listed["kie"]
        assert base_url == f"http://127.0.0.1:{port}/kie"
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                try:
                    right = await client.get(
                        base_url + "/api/v1/mj/record-info",
                        params={"taskId": "x"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
            wrong = await client.get(
                base_url + "/api/v1/mj/record-info",
                params={"taskId": "x"},
                headers={"Authorization": "Bearer made-up"},
            )
        assert right.json()["code"] != 401
        assert wrong.json()["code"] == 401
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 15)
        if process.stdout is not None:
            process.stdout.close()
    secret = relay(tmp_path, base_env(), "gen-secret").stdout.strip()
    assert secret.startswith("whsec_")
    Webhook(secret)  # a valid Standard Webhooks secret


def test_serve_logs_for_people_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal (RELAY_LOG_FORMAT unset) `relay serve` logs console lines, not
    JSON, uvicorn's own lines included."""
    controller, terminal = pty.openpty()
    env = base_env(RELAY_SECRET_KEY="s", RELAY_API_TOKEN="t")
    args = ["serve", "--host", "127.0.0.1", "--port", str(free_port())]
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", *args],
        cwd=tmp_path,
        env=env,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while b"Application startup complete" not in shown and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                shown += os.read(controller, 65536)
    finally:
        process.terminate()
        process.wait(timeout=15)
        os.close(controller)
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode(errors="replace"))
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("relay: listening on http://127.0.0.1:")
    started = next(line for line in lines if "Application startup complete" in line)
    assert "[info" in started
    assert "uvicorn.error" in started
    assert not any(line.lstrip().startswith("{") for line in lines), text
