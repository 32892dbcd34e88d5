"""The http sink: Standard Webhooks headers verified with the same package, rotation,
extra headers, and failure classification."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook

from handlers.sinks.base import SinkConfig
from handlers.sinks.client import Answer
from handlers.sinks.http import HttpSink
from receiver.errors import DeliveryFailed
from receiver.events import ProviderUpdate, UpdateState, build_event
from tests.helpers.fake_http import FakeHttp, Handler, Sent, answer, refuse

SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()
EVENT = build_event(
    "apiframe", ProviderUpdate("t", UpdateState.COMPLETED, image_url="https://i"), None
)


def _sink(handler: Handler, **options: object) -> HttpSink:
    config = SinkConfig(
        name="app", type="http", options={"url": "https://app.test/hook", **options}
    )
    return HttpSink(config, FakeHttp(handler))


async def test_signature_verifies_for_every_rotated_secret() -> None:
    """With two secrets, both signatures are sent and each verifies; extra headers ride along."""
    seen: list[Sent] = []

    def handler(request: Sent) -> Answer:
        seen.append(request)
        return answer(204)

    sink = _sink(handler, secrets=[SECRET_A, SECRET_B], headers={"x-team": "42"})
    answered = await sink.deliver(EVENT)
    assert answered.status == 204  # the receiver's real status
    assert answered.body == b""
    [request] = seen
    headers = dict(request.headers)
    assert headers["webhook-id"] == EVENT.id
    assert headers["x-team"] == "42"
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET_A, SECRET_B):
        assert Webhook(secret).verify(request.body, headers)["id"] == EVENT.id


async def test_failures_carry_status_and_retry_after() -> None:
    """A 429 carries its Retry-After; a connection error has no status."""
    sink = _sink(lambda r: answer(429, b"slow down", retry_after="7"), secret=SECRET_A)
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(EVENT)
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 7

    with pytest.raises(DeliveryFailed) as refused:
        await _sink(refuse).deliver(EVENT)
    assert refused.value.status is None
    assert "app.test" not in refused.value.message


def test_config_problems() -> None:
    """Missing url and a malformed secret are named."""
    problems = HttpSink.config_problems({"secret": "not base64!"})
    assert "'url' is required" in problems
    assert any("Standard Webhooks secret" in p for p in problems)


@pytest.mark.parametrize(
    ("reply", "wait_s"),
    [
        (Answer(429, {}, b'{"message": "You are being rate limited.", "retry_after": 1.5}'), 1.5),
        (Answer(429, {"x-ratelimit-reset-after": "0.75"}), 0.75),
        (Answer(429, {}, b'{"retry_after": "soon"}'), None),
        (Answer(429, {}, b'{"retry_after": NaN}'), None),
        (Answer(503, {}, b'{"retry_after": 3}'), None),
    ],
)
async def test_discord_style_rate_limit_answers_name_their_wait(
    reply: Answer, wait_s: float | None
) -> None:
    """Without ``Retry-After``, a 429 may say when in Discord's header or body."""
    with pytest.raises(DeliveryFailed) as caught:
        await _sink(lambda r: reply).deliver(EVENT)
    assert caught.value.retry_after_s == wait_s
