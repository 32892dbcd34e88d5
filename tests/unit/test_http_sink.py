"""The http sink: Standard Webhooks headers verified with the same package, rotation,
extra headers, and failure classification."""

from __future__ import annotations

import base64

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from handlers.sinks.base import SinkConfig
from handlers.sinks.http import HttpSink
from receiver.errors import DeliveryFailed
from receiver.events import ProviderUpdate, UpdateState, build_event

SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()
EVENT = build_event(
    "apiframe", ProviderUpdate("t", UpdateState.COMPLETED, image_url="https://i"), None
)


def _sink(handler: object, **options: object) -> HttpSink:
    config = SinkConfig(
        name="app", type="http", options={"url": "https://app.test/hook", **options}
    )
    return HttpSink(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)))  # type: ignore[arg-type]


async def test_signature_verifies_for_every_rotated_secret() -> None:
    """With two secrets, both signatures are sent and each verifies; extra headers ride along."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sink = _sink(handler, secrets=[SECRET_A, SECRET_B], headers={"x-team": "42"})
    answer = await sink.deliver(EVENT)
    assert answer.status == 204  # the receiver's real status
    assert answer.body == b""
    [request] = seen
    headers = dict(request.headers)
    assert headers["webhook-id"] == EVENT.id
    assert headers["x-team"] == "42"
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET_A, SECRET_B):
        assert Webhook(secret).verify(request.content, headers)["id"] == EVENT.id


async def test_failures_carry_status_and_retry_after() -> None:
    """A 429 carries its Retry-After; a connection error has no status."""
    sink = _sink(lambda r: httpx.Response(429, headers={"retry-after": "7"}), secret=SECRET_A)
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(EVENT)
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 7

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(DeliveryFailed) as refused:
        await _sink(refuse).deliver(EVENT)
    assert refused.value.status is None
    assert "app.test" not in refused.value.message


def test_config_problems() -> None:
    """Missing url and a malformed secret are named."""
    problems = HttpSink.config_problems({"secret": "not base64!"})
    assert "'url' is required" in problems
    assert any("Standard Webhooks secret" in p for p in problems)
