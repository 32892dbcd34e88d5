"""DiscordSink against a Discord-like webhook on 127.0.0.1 that enforces Discord's rules."""

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
from handlers.sinks.discord import DiscordSink, discord_message, embed_size, retry_after
from handlers.sinks.pacing import RateWindow
from receiver.errors import ConfigError, DeliveryFailed
from receiver.events import UpdateState
from receiver.retry import Verdict, classify
from receiver.settings import load_settings
from tests.helpers.discord_standin import DiscordStandin, message_problem
from tests.helpers.events import make_event
from tests.helpers.fake_http import answer


@pytest.fixture
async def discord() -> AsyncIterator[tuple[DiscordStandin, str]]:
    from tests.helpers.servers import serve_app

    standin = DiscordStandin()
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


def discord_sink(
    client: AiohttpClient, url: str, *, timeout_s: float = 5.0, **options: Any
) -> DiscordSink:
    config = SinkConfig(
        name="mj", type="discord", options={"url": url, **options}, timeout_s=timeout_s
    )
    return DiscordSink(config, client)


def test_embed_has_title_colour_fields_image_and_no_mentions() -> None:
    """A completed event: titled, green, fields for provider/action/ref/job/task, the
    image, the event id in the footer, ``allowed_mentions`` empty; Discord would take it."""
    event = make_event()
    body = discord_message(event, "Upscaler", "https://app.test/jobs/1")
    [embed] = body["embeds"]
    assert embed["title"] == "Upscale completed: order-42"
    assert embed["color"] == 0x2ECC71
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [
        ("Provider", "apiframe"),
        ("Action", "upscale_creative"),
        ("Ref", "order-42"),
        ("Job", f"`{event.job_id}`"),
        ("Provider task", "`task-1`"),
    ]
    assert embed["image"] == {"url": event.data["image_url"]}
    assert embed["url"] == "https://app.test/jobs/1"
    assert embed["footer"] == {"text": event.id}
    assert body["allowed_mentions"] == {"parse": []}
    assert body["username"] == "Upscaler"
    assert body["content"] == "Upscale completed: apiframe upscale_creative (ref order-42)"
    assert message_problem(body) is None
    assert SINKS["discord"] is DiscordSink


def test_failed_event_is_red_with_the_error_and_no_image() -> None:
    """A failed event is red, its error in the description, no image."""
    [embed] = discord_message(make_event(UpdateState.FAILED), None, None)["embeds"]
    assert embed["color"] == 0xE74C3C
    assert embed["description"] == "**moderated**: Image flagged by moderation"
    assert "image" not in embed


def test_huge_values_stay_inside_discords_limits() -> None:
    """A 10,000-character ref and error still make a message Discord accepts: title,
    description, field values, content and the 6,000 total all within limits."""
    event = make_event(UpdateState.FAILED, ref="r" * 10_000)
    object.__setattr__(event, "data", {**event.data, "error": {"code": "x", "message": "m" * 9000}})
    body = discord_message(event, None, None)
    [embed] = body["embeds"]
    assert len(embed["title"]) <= 256
    assert len(embed["description"]) <= 4096
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    assert len(body["content"]) <= 2000
    assert embed_size(embed) <= 6000
    assert message_problem(body) is None
    long_url = make_event(image_url="https://cdn.test/" + "x" * 2100)
    [plain] = discord_message(long_url, None, None)["embeds"]
    assert "image" not in plain
    assert "url" not in plain


async def test_delivers_with_wait_and_never_pings(
    discord: tuple[DiscordStandin, str], sink_http: AiohttpClient
) -> None:
    """The sink posts with ``?wait=true`` (the stand-in answers the created message) and
    a ref of ``@everyone`` pings no one."""
    standin, base = discord
    path = standin.add_hook()
    event = make_event(ref="@everyone look")
    sink = discord_sink(sink_http, base + path, username="Upscaler")
    assert await sink.deliver(event) == 200  # ?wait=true: the created message
    [message] = standin.hooks[path].messages
    assert "@everyone" in message["content"]
    assert standin.hooks[path].pings == []
    assert message["username"] == "Upscaler"
    assert message["embeds"][0]["footer"]["text"] == event.id


async def test_standin_enforces_discords_rules(
    discord: tuple[DiscordStandin, str], client: httpx.AsyncClient
) -> None:
    """The stand-in answers 400 (50035) to what Discord refuses, 204 without ``wait``,
    200 with the message with it, and counts the pings of a message without
    ``allowed_mentions``."""
    standin, base = discord
    path = standin.add_hook(limit=50)
    bad = [
        {},
        {"content": "x" * 2001},
        {"embeds": [{"title": "t" * 257}]},
        {"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]},
        {"embeds": [{"description": "d" * 4000}, {"description": "d" * 2001}]},
        {"content": "x", "username": "My Discord bot"},
        {"content": "x", "allowed_mentions": {"parse": ["channels"]}},
    ]
    for body in bad:
        response = await client.post(base + path + "?wait=true", json=body)
        assert (response.status_code, response.json()["code"]) == (400, 50035), body
    plain = await client.post(base + path, json={"content": "@everyone hi"})
    assert plain.status_code == 204
    waited = await client.post(base + path + "?wait=true", json={"content": "ok"})
    assert (waited.status_code, waited.json()["content"]) == (200, "ok")
    assert standin.hooks[path].pings == ["everyone"]


async def test_paces_itself_by_the_rate_limit_headers(
    discord: tuple[DiscordStandin, str], sink_http: AiohttpClient
) -> None:
    """Eight concurrent events to a webhook allowing 5 a second: all arrive, the sink
    waited out ``X-RateLimit-Reset-After`` itself, so Discord never answered 429."""
    standin, base = discord
    path = standin.add_hook(limit=5, window_s=1.0)
    sink = discord_sink(sink_http, base + path)
    await asyncio.gather(*(sink.deliver(make_event(task_id=f"p{i}")) for i in range(8)))
    hook = standin.hooks[path]
    assert len(hook.messages) == 8
    assert hook.rate_limited == 0
    assert hook.accepted_at[-1] - hook.accepted_at[0] >= 0.9


async def test_429_is_waited_out_in_the_same_delivery(
    discord: tuple[DiscordStandin, str], client: httpx.AsyncClient, sink_http: AiohttpClient
) -> None:
    """When someone else used the window, Discord's 429 ``retry_after`` is waited and
    the event sent in the same delivery (no attempt spent)."""
    standin, base = discord
    path = standin.add_hook(limit=1, window_s=0.6)
    assert (await client.post(base + path, json={"content": "other"})).status_code == 204
    started = time.monotonic()
    await discord_sink(sink_http, base + path).deliver(make_event())
    assert time.monotonic() - started >= 0.4
    hook = standin.hooks[path]
    assert (hook.rate_limited, len(hook.messages)) == (1, 2)


async def test_long_429_raises_with_retry_after(
    discord: tuple[DiscordStandin, str], client: httpx.AsyncClient, sink_http: AiohttpClient
) -> None:
    """A 429 asking for longer than the sink's timeout: DeliveryFailed with status 429
    and Discord's ``retry_after``, which the retry policy retries."""
    standin, base = discord
    path = standin.add_hook(limit=1, window_s=30.0)
    await client.post(base + path, json={"content": "other"})
    with pytest.raises(DeliveryFailed) as caught:
        await discord_sink(sink_http, base + path, timeout_s=1.0).deliver(make_event())
    failure = caught.value
    assert failure.status == 429
    assert failure.retry_after_s is not None
    assert 25 < failure.retry_after_s <= 30
    assert classify(failure) is Verdict.RETRY
    assert "You are being rate limited." in failure.message


def test_rate_window_counts_sends_in_flight() -> None:
    """Unknown window: up to the limit in flight, then wait for an answer; an answer's
    ``remaining`` is shared by what is still in flight; at 0 wait for the reset; a 429
    exhausts the window; once the reset passes the window is unknown again."""
    now = [100.0]
    window = RateWindow(default_limit=2, clock=lambda: now[0])
    assert [window.claim(), window.claim()] == [0.0, 0.0]
    assert window.claim() == RateWindow.POLL_S
    window.release(remaining=3, reset_after_s=2.0, limit=5)  # one still in flight
    assert [window.claim(), window.claim()] == [0.0, 0.0]
    assert window.claim() == pytest.approx(2.0)
    now[0] += 2.5
    assert window.claim() == 0.0  # unknown again: 3 in flight < limit 5
    window.exhaust(4.0)
    assert window.claim() == pytest.approx(4.0)


def test_retry_after_falls_back_to_headers() -> None:
    """Without a JSON ``retry_after`` the wait comes from ``Retry-After``, then
    ``X-RateLimit-Reset-After``, else one second."""
    assert retry_after(answer(429, b'{"retry_after": 1.5}')) == 1.5
    assert retry_after(answer(429, retry_after="3")) == 3.0
    assert retry_after(answer(429, x_ratelimit_reset_after="0.25")) == 0.25
    assert retry_after(answer(429, b"slow down")) == 1.0


async def test_deleted_webhook_is_dead_at_once(
    discord: tuple[DiscordStandin, str], sink_http: AiohttpClient
) -> None:
    """404 Unknown Webhook: permanent, Discord's message, no token in the text."""
    standin, base = discord
    path = standin.add_hook()
    standin.delete_hook(path)
    with pytest.raises(DeliveryFailed) as caught:
        await discord_sink(sink_http, base + path).deliver(make_event())
    assert (caught.value.status, caught.value.permanent) == (404, True)
    assert "Unknown Webhook (code 10015)" in caught.value.message
    assert path.rsplit("/", 1)[1] not in caught.value.message


async def test_refused_body_is_permanent(
    discord: tuple[DiscordStandin, str], sink_http: AiohttpClient
) -> None:
    """A message Discord refuses (a username with "discord"): 400, permanent."""
    standin, base = discord
    path = standin.add_hook()
    with pytest.raises(DeliveryFailed) as caught:
        await discord_sink(sink_http, base + path, username="discord fan").deliver(make_event())
    assert (caught.value.status, caught.value.permanent) == (400, True)
    assert "Invalid Form Body" in caught.value.message


async def test_job_url_links_the_embed(
    discord: tuple[DiscordStandin, str], sink_http: AiohttpClient
) -> None:
    """``job_url`` renders the embed's link; a job-less event links its image instead."""
    standin, base = discord
    path = standin.add_hook()
    sink = discord_sink(sink_http, base + path, job_url="https://app.test/jobs/{job_id}")
    event, jobless = make_event(), make_event(job_id=None)
    await sink.deliver(event)
    await sink.deliver(jobless)
    links = [m["embeds"][0]["url"] for m in standin.hooks[path].messages]
    assert links == [f"https://app.test/jobs/{event.job_id}", jobless.data["image_url"]]


def test_check_config_names_problems() -> None:
    """``check-config`` reports a missing or non-HTTP URL, a username Discord refuses and
    an unknown placeholder in ``job_url``."""
    env = {"RELAY_SECRET_KEY": "k", "RELAY_API_TOKEN": "t"}
    bad = (
        '[sinks.a]\ntype = "discord"\nusername = "' + "u" * 81 + '"\n'
        '[sinks.b]\ntype = "discord"\nurl = "ftp://x"\nusername = "Clyde"\njob_url = "{id}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(env, config_text=bad)
    assert caught.value.problems == [
        "sinks.a: 'url' is required",
        "sinks.a: 'username' must be 1 to 80 characters",
        "sinks.b: 'url' must be an http:// or https:// URL",
        "sinks.b: 'username' may not contain 'discord' or 'clyde' (Discord refuses it)",
        "sinks.b: 'job_url' uses unknown placeholder(s) id "
        "(known: {type}, {provider}, {job_id}, {ref})",
    ]
    good = '[sinks.c]\ntype = "discord"\nurl = "https://discord.com/api/webhooks/1/t"\n'
    assert load_settings(env, config_text=good).sinks["c"].type == "discord"
