"""The CLI verbs as real processes: check-config, migrate, the listings, demo and submit."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from simulators import create_simulator_app
from tests.helpers.processes import relay_env
from tests.helpers.servers import free_port, serve_app
from tests.helpers.stack import stack_config


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
    env = relay_env(tmp_path, free_port())
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
    env = relay_env(tmp_path, free_port())
    del env["RELAY_SECRET_KEY"], env["RELAY_API_TOKEN"]
    result = _relay(env, "check-config")
    assert result.returncode == 2
    assert "RELAY_SECRET_KEY is not set" in result.stderr
    assert "RELAY_API_TOKEN is not set" in result.stderr


def test_migrate_and_empty_listings(tmp_path: Path) -> None:
    """`relay migrate` is idempotent and the listing verbs run on a fresh store."""
    (tmp_path / "relay.toml").write_text("")
    env = relay_env(tmp_path, free_port())
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
        env = relay_env(tmp_path, free_port())
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
    result = _relay(relay_env(tmp_path, free_port()), "check-config")
    assert result.returncode == 0, result.stderr
    assert "sink 'b' is not used by any route" in result.stdout
    assert "config ok" in result.stdout
