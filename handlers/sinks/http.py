"""``type = "http"``: POST the event JSON to a URL, signed per Standard Webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from standardwebhooks.webhooks import Webhook

from handlers.retry_after import retry_after
from handlers.sinks.base import (
    ANSWER_BYTES,
    SinkAnswer,
    SinkConfig,
    http_client_error,
    required_options,
)
from receiver.errors import DeliveryFailed
from receiver.events import Event, utcnow


def _secrets(options: Mapping[str, Any]) -> list[str]:
    value = options.get("secrets", options.get("secret"))
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


class HttpSink:
    """Deliver to a downstream URL with ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature`` headers (one ``v1,…`` signature per configured secret, so a
    receiver can rotate). Options: ``url``, ``secret`` or ``secrets``, ``headers``."""

    type: ClassVar[str] = "http"
    options_keys: ClassVar[frozenset[str]] = frozenset({"url", "secret", "secrets", "headers"})

    def __init__(self, config: SinkConfig, client: httpx.AsyncClient) -> None:
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
            response = await self._client.post(
                self._url,
                content=body.encode(),
                headers=self.signed_headers(event, body),
                timeout=self.config.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(http_client_error(exc)) from exc
        answer = response.content[:ANSWER_BYTES]
        if 200 <= response.status_code < 300:
            return SinkAnswer(response.status_code, answer)
        raise DeliveryFailed(
            f"HTTP {response.status_code}: {response.text[:200]}",
            status=response.status_code,
            retry_after_s=retry_after(response),
            response_body=answer,
        )

    async def aclose(self) -> None:
        return None
