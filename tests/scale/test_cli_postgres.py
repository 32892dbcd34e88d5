"""The CLI on PostgreSQL: concurrent ``relay migrate`` runs, and ``relay worker --once``
delivering what an external-mode web process committed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from receiver.settings import load_settings
from receiver.store.postgres_schema import MIGRATIONS
from simulators import create_simulator_app
from tests.helpers.postgres import PgSchema, pg_schema
from tests.helpers.recorder import Recorder
from tests.helpers.servers import reserve_socket, serve_app, socket_port
from tests.helpers.stack import API_TOKEN, SECRET_KEY, stack_config

pytestmark = pytest.mark.postgres

# sessions queued on the advisory lock this session holds (other tests may use others)
WAITING_FOR_MY_LOCK = """
SELECT count(*) FROM pg_locks AS waiting JOIN pg_locks AS mine
  ON mine.locktype = 'advisory' AND mine.granted AND mine.pid = pg_backend_pid()
  AND (waiting.classid, waiting.objid, waiting.objsubid)
    = (mine.classid, mine.objid, mine.objsubid)
WHERE waiting.locktype = 'advisory' AND NOT waiting.granted
"""


def relay_env(pg: PgSchema, config_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": pg.database_url,
        "RELAY_SECRET_KEY": SECRET_KEY,
        "RELAY_API_TOKEN": API_TOKEN,
        "RELAY_CONFIG": str(config_path),
        "RELAY_LOG_FORMAT": "json",
        **extra,
    }


async def relay(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``python -m receiver *args`` without blocking the loop (servers run on it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "receiver",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_two_concurrent_migrations_on_a_fresh_schema(tmp_path: Path) -> None:
    """Two ``relay migrate`` processes started together on a schema that does not exist
    yet both succeed, report the same version and leave one row per migration: the
    advisory lock makes the second wait, then find nothing to do."""
    (tmp_path / "relay.toml").write_text("")
    latest = MIGRATIONS[-1][0]
    async with pg_schema() as pg, pg.connect() as db:
        env = relay_env(pg, tmp_path / "relay.toml")
        # hold the migration lock so that both processes are queued on it at once
        lock_key = f"upscale-relay:{pg.schema}"
        await db.execute("SELECT pg_advisory_lock(hashtext($1))", lock_key)
        runs = [asyncio.create_task(relay(env, "migrate")) for _ in range(2)]
        try:
            async with asyncio.timeout(30):
                while await db.fetchval(WAITING_FOR_MY_LOCK) < 2:
                    assert not any(run.done() for run in runs), "migrate ran past the lock"
                    await asyncio.sleep(0.02)
        finally:
            await db.execute("SELECT pg_advisory_unlock(hashtext($1))", lock_key)
        results = await asyncio.gather(*runs)
        for code, out, err in results:
            assert code == 0, err
            assert json.loads(out) == {"schema_version": latest}
        versions = await db.fetch(f"SELECT version FROM {pg.schema}.schema_version")
        assert sorted(row["version"] for row in versions) == [v for v, _ in MIGRATIONS]
        tables = await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            pg.schema,
        )
        names = {row["table_name"] for row in tables}
        assert names >= {"jobs", "events", "deliveries", "idempotency_keys", "schema_version"}


async def test_worker_once_delivers_what_an_external_web_committed(tmp_path: Path) -> None:
    """A web in external mode commits a callback's event and delivers nothing; ``relay
    worker --once`` on the same schema then delivers it and exits 0."""
    recorder = Recorder()
    simulators = create_simulator_app()
    async with pg_schema() as pg, AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        config = tmp_path / "relay.toml"
        config.write_text(
            stack_config(sim_url, sink_url + "/hooks", tmp_path / "events.jsonl")
            + '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'
        )
        sock = reserve_socket()
        env = relay_env(pg, config, RELAY_PUBLIC_URL=f"http://127.0.0.1:{socket_port(sock)}")
        settings = load_settings({**env, "RELAY_DELIVERY_MODE": "external"})
        base_url = await stack.enter_async_context(serve_app(create_app(settings), sock=sock))
        api = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {API_TOKEN}"})
        )
        submitted = await api.post(
            "/v1/upscales",
            json={"provider": "apiframe", "parent_id": "p-nocallback", "action": "U2"},
        )
        assert submitted.status_code == 202, submitted.text
        task = simulators.state.providers["apiframe"].state.book.get(
            submitted.json()["provider_task_id"]
        )
        answer = await api.post(
            task.callback_url,
            json={"task_id": task.id, "image_url": task.image_url},
            headers={"x-webhook-secret": task.extra["webhook_secret"]},
        )
        assert answer.status_code == 200, answer.text
        event_id = answer.json()["event_id"]
        # nothing is sent now, and `worker --once` below finds the delivery still to do
        # (an in-process worker would have sent it while that process started)
        assert recorder.received == []
        [pending] = (await api.get("/v1/deliveries", params={"state": "pending"})).json()[
            "deliveries"
        ]
        assert pending["event_id"] == event_id

        code, out, err = await relay(env, "worker", "--once")
        assert code == 0, err
        assert json.loads(out) == {"attempted": 1}
        [received] = recorder.received
        assert received.headers["webhook-id"] == event_id
        assert received.json["type"] == "upscale.completed"
        delivered = (await api.get("/v1/deliveries", params={"state": "delivered"})).json()
        assert [d["id"] for d in delivered["deliveries"]] == [pending["id"]]
