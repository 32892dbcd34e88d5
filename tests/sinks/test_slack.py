"""SlackSink against a Slack stand-in on 127.0.0.1, plus its message and pacing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from handlers.sinks import SINKS
from handlers.sinks.base import SinkConfig
from handlers.sinks.client import AiohttpClient
from handlers.sinks.pacing import TokenBucket
from handlers.sinks.s3 import S3Sink
from handlers.sinks.slack import SlackSink, slack_message
from receiver.errors import DeliveryFailed
from receiver.events import Event, UpdateState
from tests.helpers.events import make_event
from tests.helpers.servers import free_port, serve_app
from tests.helpers.slack_standin import SlackStandin, block_kit_problem


@pytest.fixture
async def slack() -> AsyncIterator[tuple[SlackStandin, str]]:
    standin = SlackStandin()
    async with serve_app(standin.app()) as url:
        yield standin, url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """For talking to the stand-in directly."""
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
async def sink_http() -> AsyncIterator[AiohttpClient]:
    """The sinks' shared client, as the relay builds it."""
    async with AiohttpClient() as http:
        yield http


def slack_sink(
    client: AiohttpClient, url: str, *, timeout_s: float = 5.0, **options: Any
) -> SlackSink:
    config = SinkConfig(name="team", type="slack", options={"url": url, **options})
    return SlackSink(
        SinkConfig(name=config.name, type=config.type, options=config.options, timeout_s=timeout_s),
        client,
    )


def _fields(message: dict[str, Any]) -> list[str]:
    [section] = [b for b in message["blocks"] if b["type"] == "section" and "fields" in b]
    return [f["text"] for f in section["fields"]]


def test_registry_knows_slack_and_s3() -> None:
    """The registry maps ``slack`` and ``s3`` to their sinks."""
    assert SINKS["slack"] is SlackSink
    assert SINKS["s3"] is S3Sink


def test_completed_message_has_header_fields_image_and_fallback() -> None:
    """A completed event becomes a header, facts as mrkdwn fields, an image block and a
    plain-text fallback, and passes Block Kit validation."""
    event = make_event()
    message = slack_message(event)
    blocks = message["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Upscale completed"},
    }
    assert _fields(message) == [
        "*Provider*\napiframe",
        "*Action*\nupscale_creative",
        "*Ref*\norder-42",
        f"*Job*\n`{event.job_id}`",
        "*Provider task*\n`task-1`",
    ]
    [image] = [b for b in blocks if b["type"] == "image"]
    assert image["image_url"] == event.data["image_url"]
    assert image["alt_text"] == "Upscaled image for order-42"
    assert message["text"].startswith("Upscale completed: apiframe upscale_creative (ref order-42)")
    assert event.data["image_url"] in message["text"]
    assert event.id in str(blocks[-1])
    assert block_kit_problem(message) is None


def test_failed_message_carries_the_error_and_no_image() -> None:
    """A failed event shows the error code and message, in the blocks and the fallback."""
    message = slack_message(make_event(UpdateState.FAILED))
    assert message["blocks"][0]["text"]["text"] == "Upscale failed"
    texts = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b]
    assert texts == ["*Error* `moderated`: Image flagged by moderation"]
    assert not [b for b in message["blocks"] if b["type"] == "image"]
    assert "moderated: Image flagged by moderation" in message["text"]
    assert block_kit_problem(message) is None


def test_progress_message_and_escaping() -> None:
    """A progress event shows its percentage; Slack control characters are escaped and a
    job-less event still names its task."""
    message = slack_message(make_event(UpdateState.PROGRESS, progress=40, ref="<!channel> & co"))
    assert message["blocks"][0]["text"]["text"] == "Upscale progress"
    fields = _fields(message)
    assert "*Progress*\n40%" in fields
    assert "*Ref*\n&lt;!channel&gt; &amp; co" in fields
    assert "<!channel>" not in str(message)
    assert "&lt;!channel&gt; &amp; co" in message["text"]
    assert block_kit_problem(message) is None
    jobless = slack_message(make_event(UpdateState.PROGRESS, progress=40, job_id=None))
    assert _fields(jobless) == [
        "*Provider*\napiframe",
        "*Job*\n`none`",
        "*Provider task*\n`task-1`",
        "*Progress*\n40%",
    ]


async def test_standin_refuses_invalid_block_kit(
    slack: tuple[SlackStandin, str], client: httpx.AsyncClient
) -> None:
    """The stand-in answers 400 ``invalid_payload`` to messages Slack would refuse."""
    standin, base = slack
    path = standin.add_hook(rate_per_s=100, burst=100)
    field = {"type": "mrkdwn", "text": "x"}
    bad = [
        {},
        {"blocks": []},
        {"blocks": [{"type": "video"}]},
        {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
        {"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]},
        {"blocks": [{"type": "section", "fields": [field] * 11}]},
        {"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}]},
        {"blocks": [{"type": "image", "image_url": "https://x.test/a.png"}]},
    ]
    for body in bad:
        response = await client.post(base + path, json=body)
        assert (response.status_code, response.text) == (400, "invalid_payload"), body
    response = await client.post(base + path, json={"text": "hello"})
    assert (response.status_code, response.text) == (200, "ok")
    assert len(standin.hooks[path].refused) == len(bad)


async def test_standin_rate_limits_per_webhook(
    slack: tuple[SlackStandin, str], client: httpx.AsyncClient
) -> None:
    """Past its burst the stand-in answers 429 ``rate_limited`` with ``Retry-After: 1``,
    per webhook; unknown webhooks get 404 ``no_service``."""
    standin, base = slack
    first, second = standin.add_hook(burst=2), standin.add_hook(burst=2)
    answers = [await client.post(base + first, json={"text": str(i)}) for i in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 429, 429]
    assert answers[2].text == "rate_limited"
    assert answers[2].headers["retry-after"] == "1"
    assert (await client.post(base + second, json={"text": "x"})).status_code == 200
    assert standin.hooks[first].rate_limited == 2
    missing = await client.post(base + "/services/T0/B0/nope", json={"text": "x"})
    assert (missing.status_code, missing.text) == (404, "no_service")


async def test_completed_event_reaches_the_standin(
    slack: tuple[SlackStandin, str], client: httpx.AsyncClient, sink_http: AiohttpClient
) -> None:
    """A delivered completed event is accepted by the stand-in's validation as-is."""
    standin, base = slack
    path = standin.add_hook()
    event = make_event()
    sink = slack_sink(sink_http, base + path)
    answer = await sink.deliver(event)
    assert answer.status == 200  # the status Slack answered, recorded as such
    assert answer.body == b"ok"
    await sink.aclose()
    assert standin.hooks[path].messages == [slack_message(event)]
    assert not sink_http.closed  # the shared client is not the sink's to close


async def _deliver_like_the_worker(sink: SlackSink, event: Event) -> int:
    """Deliver, waiting out retryable failures as the worker would; returns retries."""
    for retries in range(10):
        try:
            await sink.deliver(event)
            return retries
        except DeliveryFailed as exc:
            if exc.permanent:
                raise
            await asyncio.sleep(exc.retry_after_s or 0.1)
    raise AssertionError("not delivered after 10 attempts")


async def test_twenty_events_are_paced_under_the_limit(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient
) -> None:
    """Twenty back-to-back events all arrive, in order, without one 429: the sink paces
    itself to the webhook's rate."""
    standin, base = slack
    path = standin.add_hook(rate_per_s=5, burst=3)
    sink = slack_sink(sink_http, base + path, rate_per_s=5, burst=2)
    events = [make_event(UpdateState.PROGRESS, progress=i) for i in range(20)]
    started = time.monotonic()
    retries = [await _deliver_like_the_worker(sink, event) for event in events]
    elapsed = time.monotonic() - started
    hook = standin.hooks[path]
    assert hook.messages == [slack_message(event) for event in events]
    assert hook.rate_limited == 0
    assert sum(retries) == 0
    assert elapsed >= 18 / 5 * 0.95  # burst of 2, then 5 per second
    for i in range(len(hook.accepted_at)):  # never more than burst + rate * window
        for j in range(i + 1, len(hook.accepted_at)):
            window = hook.accepted_at[j] - hook.accepted_at[i]
            assert j - i + 1 <= 3 + 5 * window + 1e-6


async def test_unpaced_sends_would_be_rate_limited(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient
) -> None:
    """Control for the pacing test: a sink paced far above the webhook's limit meets
    429s, and re-delivering after ``retry_after_s`` still gets every event through. The
    webhook's bucket refills only when the test moves its clock, so the third send meets
    the 429 however slowly this machine sends."""
    standin, base = slack
    clock = [0.0]
    path = standin.add_hook(rate_per_s=10, burst=2, clock=lambda: clock[0])
    sink = slack_sink(sink_http, base + path, rate_per_s=1000, burst=100)
    events = [make_event(UpdateState.PROGRESS, progress=i) for i in range(3)]
    for event in events[:2]:
        await sink.deliver(event)
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(events[2])
    assert caught.value.status == 429
    clock[0] += caught.value.retry_after_s or 1.0  # the webhook's wait passes
    assert await _deliver_like_the_worker(sink, events[2]) == 0
    hook = standin.hooks[path]
    assert hook.messages == [slack_message(event) for event in events]
    assert hook.rate_limited == 1


async def test_429_raises_with_retry_after_and_pauses_the_webhook(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient
) -> None:
    """A 429 becomes a retryable DeliveryFailed with Slack's Retry-After, and the next
    send to that webhook waits that long instead of meeting another 429."""
    standin, base = slack
    path = standin.add_hook(rate_per_s=1, burst=1)
    sink = slack_sink(sink_http, base + path, rate_per_s=50, burst=5)
    await sink.deliver(make_event(UpdateState.PROGRESS, progress=1))
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(make_event(UpdateState.PROGRESS, progress=2))
    limited_at = time.monotonic()
    assert (caught.value.status, caught.value.retry_after_s) == (429, 1.0)
    assert caught.value.permanent is None
    assert "rate_limited" in caught.value.message
    await sink.deliver(make_event(UpdateState.PROGRESS, progress=2))
    assert time.monotonic() - limited_at >= 0.95
    assert standin.hooks[path].rate_limited == 1
    assert len(standin.hooks[path].messages) == 2


async def test_pacing_wait_is_bounded_by_the_sink_timeout(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient
) -> None:
    """When the next slot is further away than the sink timeout, deliver fails fast and
    retryably with a retry hint, without sending."""
    standin, base = slack
    path = standin.add_hook()
    sink = slack_sink(sink_http, base + path, timeout_s=0.3, rate_per_s=0.5, burst=1)
    await sink.deliver(make_event(UpdateState.PROGRESS, progress=1))
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(make_event(UpdateState.PROGRESS, progress=2))
    assert time.monotonic() - started < 1.0  # failed fast: the slot was ~2 s away
    assert caught.value.permanent is False
    assert caught.value.status is None
    assert caught.value.retry_after_s is not None
    assert 1.5 < caught.value.retry_after_s <= 2.0
    assert len(standin.hooks[path].messages) == 1


async def test_sinks_on_one_webhook_share_its_pace(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient
) -> None:
    """Two SlackSinks posting to the same webhook draw from one bucket; a sink on
    another webhook is not slowed by them."""
    standin, base = slack
    shared, other = standin.add_hook(rate_per_s=5, burst=2), standin.add_hook(rate_per_s=5)
    first = slack_sink(sink_http, base + shared, rate_per_s=5, burst=1)
    second = slack_sink(sink_http, base + shared, rate_per_s=5, burst=1)
    events = [make_event(UpdateState.PROGRESS, progress=i) for i in range(4)]
    started = time.monotonic()
    await asyncio.gather(*(s.deliver(e) for s, e in zip([first, second] * 2, events, strict=True)))
    assert time.monotonic() - started >= 3 / 5 * 0.95
    assert standin.hooks[shared].rate_limited == 0
    assert len(standin.hooks[shared].messages) == 4
    other_sink = slack_sink(sink_http, base + other, rate_per_s=5, burst=1)
    assert other_sink._bucket is not first._bucket
    assert first._bucket is second._bucket
    assert other_sink._bucket.next_slot_s() == 0  # a fresh bucket: no wait for this one
    await other_sink.deliver(events[0])
    assert len(standin.hooks[other].messages) == 1


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (400, "invalid_payload"),
        (400, "no_service"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (403, "action_prohibited"),
        (403, "posting_to_general_channel_denied"),
        (403, "invalid_token"),
        (404, "something_new"),
        (410, "gone"),
    ],
)
async def test_permanent_slack_errors(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient, status: int, answer: str
) -> None:
    """Slack's permanent answers (and any 404/410) fail permanently, quoting Slack's
    text and never the webhook URL or its token."""
    standin, base = slack
    path = standin.add_hook(fail_with=(status, answer))
    with pytest.raises(DeliveryFailed) as caught:
        await slack_sink(sink_http, base + path).deliver(make_event())
    failure = caught.value
    assert (failure.permanent, failure.status) == (True, status)
    assert answer in failure.message
    assert path.rsplit("/", 1)[1] not in str(failure)
    assert base not in str(failure)


async def test_unknown_webhook_is_permanent(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient
) -> None:
    """A webhook Slack does not know (404 ``no_service``) is dead, not retried."""
    _, base = slack
    with pytest.raises(DeliveryFailed) as caught:
        await slack_sink(sink_http, base + "/services/T0/B0/secret-token").deliver(make_event())
    assert (caught.value.permanent, caught.value.status) == (True, 404)
    assert "no_service" in caught.value.message
    assert "secret-token" not in str(caught.value)


async def test_server_errors_are_left_to_the_retry_policy(
    slack: tuple[SlackStandin, str], sink_http: AiohttpClient
) -> None:
    """A 5xx keeps its status and no permanence verdict, so the policy retries it."""
    standin, base = slack
    path = standin.add_hook(fail_with=(500, "rollup_error"))
    with pytest.raises(DeliveryFailed) as caught:
        await slack_sink(sink_http, base + path).deliver(make_event())
    assert (caught.value.status, caught.value.permanent) == (500, None)
    assert "rollup_error" in caught.value.message


async def test_connection_failure_hides_the_url(sink_http: AiohttpClient) -> None:
    """A refused connection is retryable (no status) and its message has no URL."""
    url = f"http://127.0.0.1:{free_port()}/services/T0/B0/very-secret-token"
    with pytest.raises(DeliveryFailed) as caught:
        await slack_sink(sink_http, url).deliver(make_event())
    assert (caught.value.status, caught.value.permanent) == (None, None)
    assert "very-secret-token" not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


def test_config_problems() -> None:
    """``url`` is required and must be http(s); pacing options must be positive."""
    assert SlackSink.config_problems({"url": "https://hooks.slack.com/services/T/B/x"}) == []
    assert SlackSink.config_problems({}) == ["'url' is required"]
    assert SlackSink.config_problems({"url": "ftp://x"}) == [
        "'url' must be an http:// or https:// URL"
    ]
    assert SlackSink.config_problems({"url": "http://x", "rate_per_s": 0, "burst": True}) == [
        "'rate_per_s' must be a positive number",
        "'burst' must be a positive number",
    ]


def test_token_bucket_burst_rate_pause_and_bound() -> None:
    """The bucket allows ``burst`` sends at once, then one per interval; a pause delays
    the next send and removes the burst; a slot beyond ``max_wait_s`` is not claimed."""
    now = [100.0]
    bucket = TokenBucket(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [bucket.reserve(10) for _ in range(5)] == [0, 0, 0, 0.5, 1.0]
    assert bucket.reserve(max_wait_s=1.4) is None
    assert bucket.next_slot_s() == 1.5
    now[0] += 10  # idle: the burst is back
    assert [bucket.reserve(10) for _ in range(3)] == [0, 0, 0]
    now[0] += 10
    generation = bucket.generation
    bucket.pause(2.0)
    assert bucket.generation == generation + 1  # slots reserved before are void
    # after a 429: no burst, and 5 % more room per slot (the destination's real limit)
    assert [round(bucket.reserve(10) or 0, 6) for _ in range(2)] == [2.0, 2.525]
    bucket.pause(0.1)  # a shorter pause asked later does not end the first one early
    assert bucket.next_slot_s() == 2.0
    for _ in range(10):
        bucket.pause(0)
    assert bucket.interval_s == pytest.approx(0.5 * 1.25)  # the slowdown is bounded
