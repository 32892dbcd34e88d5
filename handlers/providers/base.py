"""The ``Provider`` contract and the small helpers every provider module shares."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from handlers.retry_after import retry_after
from receiver.errors import (
    PayloadError,
    ProviderAuthFailed,
    ProviderError,
    ProviderInsufficientCredits,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from receiver.events import CallbackMode, ErrorCode, ProviderUpdate
from receiver.jsonbody import loads_strict

if TYPE_CHECKING:
    import httpx  # a provider gets the client; importing it costs a cold start


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One ``[providers.NAME]`` table. ``options`` keeps the provider-specific keys
    (``webhook_hmac_key``, ``max_jobs``, ``account_webhook_secret`` …)."""

    name: str
    api_key: str = field(repr=False)
    base_url: str
    confirm_by_poll: bool = False
    poll_after_s: float = 120.0
    poll_interval_s: float = 15.0
    deadline_s: float = 1800.0
    max_jobs: int | None = field(default=None, metadata={"min": 1})
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class SubmitSpec:
    """What to submit: the relay's job id, the parent task, our normalised action name,
    and where (and with which per-job secret) the provider should call back."""

    job_id: str
    parent_id: str
    action: str
    callback_url: str | None
    callback_secret: str | None


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The provider's task id; ``existing`` when the provider pointed us at a task that
    already ran the same action (useapi's 409) instead of starting a new one."""

    provider_task_id: str
    existing: bool = False


class Provider(Protocol):
    """A Midjourney API provider, as the relay drives it.

    A provider module builds the provider's HTTP requests and reads its answers; the
    relay owns everything else (jobs, tokens, storage, retries). An instance is built
    once per process with its config and the shared ``httpx.AsyncClient``::

        provider = ApiframeProvider(config, client)

    ``name``
        The registry key and the ``{provider}`` in callback URLs.
    ``callback_mode``
        ``WEBHOOK`` when the provider calls us back, ``POLL`` when it never does.
    ``default_base_url``
        The production API root, used when the config names no ``base_url``.
    ``confirm_by_poll_default`` / ``max_jobs_default``
        Defaults of the ``confirm_by_poll`` and ``max_jobs`` config keys (Kie confirms
        by polling; useapi caps concurrent jobs at its plan's 3).
    ``options_keys``
        The provider-specific keys its ``[providers.NAME]`` table may hold besides the
        ``ProviderConfig`` fields (Kie's ``webhook_hmac_key``); any other key is a
        config error. They reach the provider in ``config.options``.
    ``mints_job_secret``
        True when the provider echoes a secret we choose per job (Apiframe's
        ``webhook_secret`` → ``x-webhook-secret``); the relay then mints one and hands
        it to ``submit`` and ``verify_callback``.

    ``config_problems(options)``
        What is wrong with those options (an empty HMAC key, a secret too short to be
        a secret …), for ``relay check-config`` and a refused start; never touches the
        network.
    ``supported_actions()``
        Our action names (``U1`` … ``redo_upscale_creative``) this provider can do.
    ``submit(spec)``
        Start the upscale; return the provider's task id. Map failures to the
        ``ProviderError`` subclasses (``raise_for_status`` does the common cases).
    ``verify_callback(headers, body, job_secret)``
        Raise ``Unauthorized`` unless the request carries the provider's secret or
        signature. The signed callback URL has already been checked; a provider that
        documents no authenticity scheme does nothing here. Compare in constant time.
    ``verify_account_callback(headers, body)``
        The same for account-level callbacks (no token in the URL). Providers with no
        account secret raise ``Unauthorized`` always.
    ``parse_callback(payload)`` / ``poll(task_id)``
        Turn a decoded callback body, or the poll endpoint's answer, into one
        ``ProviderUpdate``; raise ``PayloadError`` naming the field that is wrong.
    """

    name: ClassVar[str]
    default_base_url: ClassVar[str]
    callback_mode: ClassVar[CallbackMode]
    mints_job_secret: ClassVar[bool]
    confirm_by_poll_default: ClassVar[bool]
    max_jobs_default: ClassVar[int | None]
    options_keys: ClassVar[frozenset[str]]
    config: ProviderConfig

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None: ...

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]: ...

    def supported_actions(self) -> tuple[str, ...]: ...

    async def submit(self, spec: SubmitSpec) -> SubmitResult: ...

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, job_secret: str | None
    ) -> None: ...

    def verify_account_callback(self, headers: Mapping[str, str], body: bytes) -> None: ...

    def parse_callback(self, payload: Any) -> ProviderUpdate: ...

    async def poll(self, task_id: str) -> ProviderUpdate: ...


async def send(client: httpx.AsyncClient, request: httpx.Request, provider: str) -> httpx.Response:
    """Send a request to a provider; transport failures become ``ProviderUnavailable``."""
    import httpx

    try:
        return await client.send(request)
    except httpx.TimeoutException as exc:
        raise ProviderUnavailable(
            f"{provider} did not answer in time", provider=provider, timeout=True
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(
            f"{provider} could not be reached ({type(exc).__name__})", provider=provider
        ) from exc


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str],
    json: Any = None,
    params: Mapping[str, str] | None = None,
    check: Callable[[httpx.Response], None] | None = None,
) -> dict[str, Any]:
    """Send one request to a provider and return its answer's JSON object.

    Transport failures and error statuses become ``ProviderError``s (``send``,
    ``raise_for_status``), a body that is not a JSON object ``ProviderUnavailable``.
    ``check`` sees every answer first, for providers whose answers say more than their
    status (Kie's body ``code``, ImaginePro's error texts): it raises its own error or
    returns to let the common mapping run.
    """
    request = client.build_request(method, url, json=json, params=params, headers=headers)
    response = await send(client, request, provider)
    if check is not None:
        check(response)
    raise_for_status(response, provider)
    return json_object(response, provider)


def retry_after_s(response: httpx.Response, default: int = 30) -> int:
    """The ``Retry-After`` header in whole seconds (at least 1), or ``default``."""
    seconds = retry_after(response)
    return default if seconds is None else max(1, math.ceil(seconds))


def error_text(response: httpx.Response) -> str:
    """A short human text out of a provider's error body (never echoes headers)."""
    try:
        body = loads_strict(response.content)
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "msg", "message", "fail_reason", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:200]
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("msg", errors[0]))[:200]
    return response.reason_phrase


def raise_for_status(
    response: httpx.Response,
    provider: str,
    *,
    status: int | None = None,
    message: str | None = None,
) -> None:
    """Map a provider's failure answer to our error codes (DESIGN §3).

    ``status`` overrides the HTTP status, for providers that answer 200 with an error
    ``code`` in the body (Kie).
    """
    code = status if status is not None else response.status_code
    if 200 <= code < 300:
        return
    text = message or error_text(response)
    error: ProviderError
    if code in (401, 403):
        error = ProviderAuthFailed(
            f"{provider} refused our credentials: {text}", provider=provider, status=code
        )
    elif code == 402:
        error = ProviderInsufficientCredits(f"{provider}: {text}", provider=provider, status=code)
    elif code == 429:
        error = ProviderRateLimited(
            f"{provider} is rate limiting: {text}",
            provider=provider,
            status=code,
            retry_after_s=retry_after_s(response),
        )
    elif code in (408, 504):
        error = ProviderUnavailable(
            f"{provider} timed out: {text}", provider=provider, status=code, timeout=True
        )
    elif 400 <= code < 500:
        error = ProviderRejected(
            f"{provider} rejected the request: {text}", provider=provider, status=code
        )
    else:
        error = ProviderUnavailable(f"{provider} failed: {text}", provider=provider, status=code)
    raise error


def json_object(response: httpx.Response, provider: str) -> dict[str, Any]:
    """The response body as a JSON object, or ``ProviderUnavailable``."""
    try:
        body = loads_strict(response.content)
    except ValueError as exc:
        raise ProviderUnavailable(
            f"{provider} answered with a body that is not JSON",
            provider=provider,
            status=response.status_code,
        ) from exc
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{provider} answered with JSON that is not an object",
            provider=provider,
            status=response.status_code,
        )
    return body


def json_or_empty(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object, or ``{}`` when it is not one (for reading error bodies)."""
    try:
        body = loads_strict(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def body_error_code(body: Mapping[str, Any]) -> int | None:
    """The body's ``code`` when it is an integer (or digits) outside 2xx: an error in the
    body, possibly inside an HTTP 200 (Kie's and APIMart's envelopes); else None."""
    code = body.get("code")
    if isinstance(code, str) and code.strip().isascii() and code.strip().isdigit():
        code = int(code.strip())  # "402" as well as 402
    if isinstance(code, int) and not isinstance(code, bool) and not 200 <= code < 300:
        return code
    return None


#: longer than any id or URL a provider sends (signed URLs included)
MAX_FIELD_CHARS = 8192


def require_object(payload: Any, field_name: str = "body") -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise PayloadError(field_name, "must be a JSON object")
    return payload


def require_str(obj: Mapping[str, Any], key: str, *, path: str | None = None) -> str:
    """A non-empty string, or an exact integer (stringified), or ``PayloadError``.

    Never a float: ``1e-400`` or ``1.2e29`` would become an id the provider never sent.
    """
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif isinstance(value, float):
        raise PayloadError(path or key, "must be a string or an integer, not a float")
    if not isinstance(value, str) or not value:
        raise PayloadError(path or key)
    if len(value) > MAX_FIELD_CHARS:
        raise PayloadError(path or key, f"is longer than {MAX_FIELD_CHARS} characters")
    if "\x00" in value:  # no store keys by it (PostgreSQL text refuses NUL)
        raise PayloadError(path or key, "holds a NUL character")
    return value


def optional_str(obj: Mapping[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` holding a non-empty string (of a sane length, no NUL)."""
    for key in keys:
        value = obj.get(key)
        if (
            isinstance(value, str)
            and value
            and len(value) <= MAX_FIELD_CHARS
            and "\x00" not in value
        ):
            return value
    return None


_PERCENT_CHARS = 32


def parse_progress(value: Any, field_name: str = "progress") -> int | None:
    """0-100 from ``80``, ``80.0``, ``"80"`` or ``"80%"``; None when absent or blank.
    Anything else (a bool, ``"lots"``, ``-1``, ``101``, a 310-digit integer, a
    non-finite number) is a ``PayloadError``."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(field_name, "must be a number")
    if isinstance(value, int):
        if not 0 <= value <= 100:
            raise PayloadError(field_name, "must be between 0 and 100")
        return value
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        if not text:
            return None
        if len(text) > _PERCENT_CHARS:
            raise PayloadError(field_name, "must be a number or a percentage")
        try:
            number = float(text)
        except ValueError as exc:
            raise PayloadError(field_name, "must be a number or a percentage") from exc
    elif isinstance(value, float):
        number = value
    else:
        raise PayloadError(field_name, "must be a number or a percentage")
    if not math.isfinite(number) or not 0 <= number <= 100:
        raise PayloadError(field_name, "must be between 0 and 100")
    return round(number)


def string_list(value: Any, field_name: str) -> tuple[str, ...]:
    """A list of strings (None → empty); anything else is a ``PayloadError``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PayloadError(field_name, "must be a list of strings")
    return tuple(value)


_MODERATION_WORDS = ("moderat", "banned", "nsfw", "sensitive", "prohibited")


def failure_code(message: str | None, words: tuple[str, ...] = _MODERATION_WORDS) -> ErrorCode:
    """``MODERATED`` when a provider's failure text reads like a content-moderation
    refusal (contains one of ``words``: ``banned prompt``, ``moderation``, ``sensitive``
    …), else ``FAILED``."""
    lowered = (message or "").lower()
    return ErrorCode.MODERATED if any(w in lowered for w in words) else ErrorCode.FAILED
