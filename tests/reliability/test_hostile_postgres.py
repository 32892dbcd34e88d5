"""The hostile inputs that reach the store, against PostgreSQL: text columns refuse
NUL, so a NUL in a query parameter, a path, an id or a key must be a 400 there too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.postgres import pg_schema
from tests.helpers.stack import running_stack

pytestmark = pytest.mark.postgres


async def test_nul_and_odd_text_never_reach_postgresql(tmp_path: Path) -> None:
    async with (
        pg_schema() as schema,
        running_stack(tmp_path, env={"DATABASE_URL": schema.database_url}) as stack,
    ):
        job = await stack.submit(provider="imaginepro", parent_id="grid_nocallback", action="U1")
        task = stack.sim("imaginepro").state.book.get(job["provider_task_id"])
        statuses: dict[str, int] = {}
        for path in (
            "/v1/jobs?ref=%00",
            "/v1/jobs?provider=a%00b",
            "/v1/jobs/job%00x",
            "/v1/deliveries?job_id=%00",
            "/v1/deliveries?event_id=e%00",
            "/v1/deliveries?sink=%00",
        ):
            statuses[path] = (await stack.api.get(path)).status_code
        retry = await stack.api.post("/v1/deliveries/d%00/retry")
        statuses["retry_one"] = retry.status_code
        upscale = await stack.api.post(
            "/v1/upscales",
            json={"provider": "imaginepro", "parent_id": "p\x00", "action": "U1"},
        )
        statuses["upscale"] = upscale.status_code
        keyed = await stack.api.post(
            "/v1/upscales",
            json={"provider": "imaginepro", "parent_id": "p", "action": "U1"},
            headers={"Idempotency-Key": "k\x01"},
        )
        statuses["idempotency_key"] = keyed.status_code
        for name, body in {
            "nul_task": {"messageId": task.id + "\x00", "status": "DONE", "uri": "https://i/x"},
            "nul_ref": {"messageId": task.id, "status": "QUEUED", "ref": "\x00"},
        }.items():
            answer = await stack.api.post(task.callback_url, content=json.dumps(body))
            statuses[name] = answer.status_code
        events = await schema.fetch("SELECT count(*) AS n FROM events")
    print(f"\nPostgreSQL hostile text: {statuses}")
    # an unreadable ref is no reference (the message still counts): no 5xx either way
    refused = {name: status for name, status in statuses.items() if name != "nul_ref"}
    assert all(400 <= status < 500 for status in refused.values()), statuses
    assert statuses["nul_ref"] == 200
    assert events[0]["n"] == 1  # that QUEUED message alone
