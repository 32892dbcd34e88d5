"""One exception tree, mapped to HTTP in one place (``http_status`` / ``body``).

    RelayError
    ├── ConfigError                 bad settings: every problem listed at once
    ├── ClientError                 anything a caller sent us (4xx)
    │   ├── BadRequest              400 malformed JSON or fields
    │   │   └── PayloadError        400 a provider body without a field we need
    │   ├── Unauthorized            401 bad/missing token, secret or signature
    │   ├── NotFound                404 unknown job, delivery, callback URL's job
    │   │   └── UnknownProvider     404 no provider of that name is configured
    │   ├── Conflict                409 a valid token whose body names another job's task
    │   ├── PayloadTooLarge         413 body over the limit
    │   ├── IdempotencyMismatch     422 same Idempotency-Key, another body
    │   ├── UnknownSink             422 a submission names a sink that is not configured
    │   └── UnsupportedAction       422 the provider cannot do this action
    ├── ProviderError               a provider refused or failed a request we made
    │   ├── ProviderRejected        422
    │   ├── ProviderAuthFailed      502
    │   ├── ProviderInsufficientCredits 402
    │   ├── ProviderRateLimited     429 + Retry-After
    │   │   └── ProviderAtCapacity  429 the account's concurrent-job limit is full
    │   └── ProviderUnavailable     502 / 504
    └── DeliveryFailed              a sink did not take an event (never reaches HTTP)

Messages never contain secrets or tokens: they name the field, not its value.
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""

    http_status = 500
    code = "internal_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error", "message", ...context}``."""
        return {"error": self.code, "message": self.message, **self.context}

    def headers(self) -> dict[str, str]:
        return {}


class ConfigError(RelayError):
    """The configuration has problems; ``problems`` lists every one."""

    code = "config_error"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))
        self.problems = problems


class ClientError(RelayError):
    http_status = 400
    code = "bad_request"


class BadRequest(ClientError):
    http_status = 400
    code = "bad_request"


class PayloadError(BadRequest):
    """A provider payload lacks a field we need, or has it in a shape we cannot read."""

    code = "invalid_payload"

    def __init__(self, field: str, problem: str = "is missing or invalid") -> None:
        super().__init__(f"field {field!r} {problem}", field=field)
        self.field = field


class Unauthorized(ClientError):
    http_status = 401
    code = "unauthorized"


class NotFound(ClientError):
    http_status = 404
    code = "not_found"


class UnknownProvider(NotFound):
    """No provider of that name is configured (submit and callbacks alike)."""

    code = "unknown_provider"

    def __init__(self, provider: str, **context: Any) -> None:
        super().__init__(f"provider {provider!r} is not configured", provider=provider, **context)


class Conflict(ClientError):
    http_status = 409
    code = "conflict"


class PayloadTooLarge(ClientError):
    http_status = 413
    code = "payload_too_large"


class IdempotencyMismatch(ClientError):
    http_status = 422
    code = "idempotency_key_reused"


class UnknownSink(ClientError):
    http_status = 422
    code = "unknown_sink"


class UnsupportedAction(ClientError):
    http_status = 422
    code = "unsupported_action"

    def __init__(self, provider: str, action: str, supported: list[str]) -> None:
        super().__init__(f"{provider} cannot do {action!r}", provider=provider, supported=supported)


class ProviderError(RelayError):
    """A provider refused or failed a request we made to it."""

    http_status = 502
    code = "provider_error"

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        super().__init__(message, provider=provider, provider_status=status)
        self.provider = provider
        self.status = status


class ProviderRejected(ProviderError):
    http_status = 422
    code = "provider_rejected"


class ProviderAuthFailed(ProviderError):
    http_status = 502
    code = "provider_auth_failed"


class ProviderInsufficientCredits(ProviderError):
    http_status = 402
    code = "provider_insufficient_credits"


class ProviderRateLimited(ProviderError):
    http_status = 429
    code = "provider_rate_limited"

    def __init__(
        self, message: str, *, provider: str, status: int | None = None, retry_after_s: int = 30
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after_s = retry_after_s
        self.context["retry_after_s"] = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ProviderAtCapacity(ProviderRateLimited):
    """The provider refused because the account's concurrent-job limit is reached
    (useapi's "Maximum of N jobs executing"): the job can wait in our queue."""


class ProviderUnavailable(ProviderError):
    http_status = 502
    code = "provider_unavailable"

    def __init__(
        self, message: str, *, provider: str, status: int | None = None, timeout: bool = False
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        if timeout:
            self.http_status = 504


class DeliveryFailed(RelayError):
    """A sink did not accept an event.

    ``status`` is the sink's HTTP status (None for a connection error or timeout);
    ``permanent`` forces dead-lettering (True) or retrying (False); None lets the
    retry policy classify by status. ``retry_after_s`` honours the sink's wish.
    ``throttled`` means the sink held the event back itself (local pacing) and sent
    nothing: the delivery goes back to the queue without using up an attempt.
    ``response_body``: the start of the destination's answer (kept redacted).
    """

    code = "delivery_failed"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        permanent: bool | None = None,
        retry_after_s: float | None = None,
        throttled: bool = False,
        response_body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after_s = retry_after_s
        self.throttled = throttled
        self.response_body = response_body
