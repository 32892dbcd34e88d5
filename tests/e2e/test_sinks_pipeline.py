"""Slack, S3 and HTTP sinks behind the whole relay: fan-out, pacing, circuit breaking,
dead letters — with real stand-ins (moto's S3 API, a Slack-like webhook) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.recorder import Recorder
from tests.helpers.s3_server import CREDENTIALS, s3_client
from tests.helpers.servers import serve_app
from tests.helpers.slack_standin import SlackStandin
from tests.helpers.stack import Stack, running_stack


def _s3_sink(name: str, endpoint: str, bucket: str, copy_images: bool = True) -> str:
    return f"""
[sinks.{name}]
type = "s3"
bucket = "{bucket}"
prefix = "events/"
region = "us-east-1"
endpoint_url = "{endpoint}"
copy_images = {"true" if copy_images else "false"}
aws_access_key_id = "{CREDENTIALS["aws_access_key_id"]}"
aws_secret_access_key = "{CREDENTIALS["aws_secret_access_key"]}"
retry_schedule_s = [0, 0.05, 0.05]
"""


async def _wait(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def _sinks(stack: Stack) -> dict[str, Any]:
    response = await stack.api.get("/v1/sinks")
    assert response.status_code == 200
    return {sink["name"]: sink for sink in response.json()["sinks"]}


async def test_one_event_reaches_slack_s3_and_http(tmp_path: Path, s3_endpoint: str) -> None:
    """A completed event routed to slack + s3 + http arrives at all three: the S3 object
    is the event JSON and the copied image is byte-for-byte the source with its type."""
    bucket = f"relay-{secrets.token_hex(4)}"
    async with s3_client(s3_endpoint) as s3:
        await s3.create_bucket(Bucket=bucket)
        slack = SlackStandin()
        hook = slack.add_hook(rate_per_s=5, burst=3)
        async with serve_app(slack.app()) as slack_url:
            config = (
                f'[sinks.team]\ntype = "slack"\nurl = "{slack_url}{hook}"\n'
                + _s3_sink("archive", s3_endpoint, bucket)
                + '[[routes]]\nevents = ["upscale.completed"]\n'
                + 'sinks = ["team", "archive", "http"]\n'
            )
            async with running_stack(tmp_path, extra_config=config) as stack:
                job = await stack.submit(provider="apiframe", parent_id="g", action="U2", ref="o-1")
                [received] = await stack.recorder.wait_for(1)
                event = received.json
                await stack.wait_deliveries(3, state="delivered")
                [message] = slack.hooks[hook].messages
                assert "Upscale completed" in str(message["blocks"][0])
                assert any(b["type"] == "image" for b in message["blocks"])
                listed = await s3.list_objects_v2(Bucket=bucket, Prefix="events/")
                keys = sorted(item["Key"] for item in listed["Contents"])
                json_key = next(k for k in keys if k.endswith(f"/{event['id']}.json"))
                assert f"/{job['job_id']}/" in json_key
                stored = await s3.get_object(Bucket=bucket, Key=json_key)
                assert await stored["Body"].read() == received.body
                image_key = next(k for k in keys if not k.endswith(".json"))
                image = await s3.get_object(Bucket=bucket, Key=image_key)
                async with httpx.AsyncClient() as client:
                    source = await client.get(event["data"]["image_url"])
                assert await image["Body"].read() == source.content
                assert image["ContentType"] == "image/png"


async def test_twenty_events_to_one_slack_webhook_are_paced(tmp_path: Path) -> None:
    """20 events to one Slack webhook under Slack's 1 message/s limit (the sink's
    defaults): all arrive, none dropped, and the relay paced itself so the stand-in
    never had to answer 429."""
    slack = SlackStandin()
    hook = slack.add_hook(rate_per_s=1, burst=4)  # the sink bursts 3: one token of slack
    async with serve_app(slack.app()) as slack_url:
        config = (
            f'[sinks.team]\ntype = "slack"\nurl = "{slack_url}{hook}"\n'
            '[[routes]]\nevents = ["upscale.completed"]\nsinks = ["team"]\n'
        )
        async with running_stack(tmp_path, extra_config=config) as stack:
            for index in range(20):
                await stack.submit(provider="apiframe", parent_id=f"g{index}", action="U1")
            await stack.wait_deliveries(20, state="delivered", timeout=60)
            assert await stack.deliveries(state="dead") == []
    accepted = slack.hooks[hook].accepted_at
    assert len(accepted) == 20
    assert slack.hooks[hook].rate_limited == 0
    assert accepted[-1] - accepted[0] >= (20 - 3) * 0.9
    # no window of one second ever held more than the rate plus the burst
    for i, start in enumerate(accepted):
        assert len([t for t in accepted[i:] if t - start < 1.0]) <= 1 + 3


async def test_circuit_opens_while_sink_is_down_and_backlog_drains(tmp_path: Path) -> None:
    """A sink down for the first half pauses (circuit open, backlog waiting); once it is
    back, every event is delivered with the same webhook-id it had before."""
    recorder = Recorder(default=503)
    sink_options = (
        "retry_schedule_s = [0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]\n"
        "circuit_failure_threshold = 3\ncircuit_probe_interval_s = 0.3\n"
    )
    route = '[[routes]]\nevents = ["upscale.completed"]\nsinks = ["http"]\n'
    async with running_stack(
        tmp_path, extra_config=route, recorder=recorder, http_sink_options=sink_options
    ) as stack:
        jobs = [
            await stack.submit(provider="apiframe", parent_id=f"d{i}", action="U1")
            for i in range(8)
        ]

        async def paused() -> bool:
            sink = (await _sinks(stack))["http"]
            return sink["state"] in ("paused", "probing") and sink["backlog"] >= 1

        await _wait(paused)
        sink = (await _sinks(stack))["http"]
        assert sink["last_error"]
        assert sink["circuit_opened"] >= 1
        pending = await stack.deliveries(state="pending")
        assert pending
        assert all(d["attempts"] < 10 for d in pending)
        # every job's event exists (its callback arrived) before the sink comes back
        before = {d["id"]: d["event_id"] for d in await stack.wait_deliveries(len(jobs))}
        recorder.answer([], default=200)
        delivered = await stack.wait_deliveries(8, state="delivered", timeout=20)
        assert {d["id"]: d["event_id"] for d in delivered} == before
        ids = {r.headers["webhook-id"] for r in recorder.received}
        assert ids == set(before.values())
        assert len({r.json["data"]["job_id"] for r in recorder.received}) == len(jobs)
        sink = (await _sinks(stack))["http"]
        assert sink["state"] == "ok"
        assert sink["backlog"] == 0
        assert sink["circuit_closed"] >= 1


async def test_missing_bucket_is_dead_with_the_bucket_named(
    tmp_path: Path, s3_endpoint: str
) -> None:
    """An S3 sink whose bucket does not exist dead-letters at once with a clear error."""
    bucket = f"missing-{secrets.token_hex(4)}"
    config = _s3_sink("archive", s3_endpoint, bucket, copy_images=False) + (
        '[[routes]]\nevents = ["upscale.completed"]\nsinks = ["archive"]\n'
    )
    async with running_stack(tmp_path, extra_config=config) as stack:
        await stack.submit(provider="apiframe", parent_id="g", action="U1")
        [dead] = await stack.wait_deliveries(1, state="dead")
        assert bucket in dead["last_error"]
        assert dead["attempts"] == 1
