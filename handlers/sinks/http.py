"""``type = "http"``: POST the event JSON to a URL, signed per Standard Webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from standardwebhooks.webhooks import Webhook

from handlers.retry_after import parse_retry_after, retry_after
from handlers.sinks.base import ANSWER_BYTES, SinkAnswer, SinkConfig, required_options
from handlers.sinks.client import Answer, HttpClient, TransportError
from receiver.errors import DeliveryFailed
from receiver.events import Event, utcnow
from receiver.jsonbody import loads_strict


def _secrets(options: Mapping[str, Any]) -> list[str]:
    value = options.get("secrets", options.get("secret"))
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def rate_limit_wait_s(response: Answer) -> float | None:
    """How long the destination asked us to wait: ``Retry-After``, else (on a 429)
    Discord's ``X-RateLimit-Reset-After`` header or ``retry_after`` body field."""
    wait = retry_after(response)
    if wait is not None or response.status != 429:
        return wait
    wait = parse_retry_after(response.headers.get("x-ratelimit-reset-after"))
    if wait is not None:
        return wait
    try:
        body = loads_strict(response.body) if len(response.body) <= 4096 else None
    except ValueError:
        return None
    value = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_retry_after(str(value))
    return None


class HttpSink:
    """Deliver to a downstream URL with ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature`` headers (one ``v1,…`` signature per configured secret, so a
    receiver can rotate). Options: ``url``, ``secret`` or ``secrets``, ``headers``."""

    type: ClassVar[str] = "http"
    options_keys: ClassVar[frozenset[str]] = frozenset({"url", "secret", "secrets", "headers"})

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        self._client = client
        self._url = str(config.options["url"])
        self._signers = [Webhook(secret) for secret in _secrets(config.options)]
        extra = config.options.get("headers") or {}
        self._headers = {str(k): str(v) for k, v in dict(extra).items()}

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "url")
        url = options.get("url")
        if isinstance(url, str) and url and not url.startswith(("http://", "https://")):
            problems.append("'url' must be an http:// or https:// URL")
        for secret in _secrets(options):
            try:
                Webhook(secret)
            except Exception:
                problems.append("'secret' must be a Standard Webhooks secret (whsec_ + base64)")
        headers = options.get("headers")
        if headers is not None and not isinstance(headers, dict):
            problems.append("'headers' must be a table")
        return problems

    def signed_headers(self, event: Event, body: str) -> dict[str, str]:
        """The Standard Webhooks headers for ``body`` (exposed for tests and tools)."""
        timestamp = utcnow()
        headers = {
            **self._headers,
            "content-type": "application/json",
            "user-agent": "upscale-relay",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
        }
        if self._signers:
            headers["webhook-signature"] = " ".join(
                signer.sign(event.id, timestamp, body) for signer in self._signers
            )
        return headers

    async def deliver(self, event: Event) -> SinkAnswer:
        body = event.to_json()
        try:
            answer = await self._client.post(
                self._url, body.encode(), self.signed_headers(event, body), self.config.timeout_s
            )
        except TransportError as exc:
            raise DeliveryFailed(exc.message) from exc
        excerpt = answer.body[:ANSWER_BYTES]
        if answer.ok:
            return SinkAnswer(answer.status, excerpt)
        raise DeliveryFailed(
            f"HTTP {answer.status}: {answer.text[:200]}",
            status=answer.status,
            retry_after_s=rate_limit_wait_s(answer),
            response_body=excerpt,
        )

    async def aclose(self) -> None:
        return None
