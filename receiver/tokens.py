"""Signed callback tokens (itsdangerous): one salt per purpose, key rotation, expiry.

A token carries the job id and the provider, so a callback URL is only good for the
job it was minted for. ``RELAY_SECRET_KEY`` is comma-separated: the first key signs,
every key verifies (put the new key first, keep the old one until its tokens expire).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from receiver.errors import Unauthorized

CALLBACK_SALT = "upscale-relay.callback.v1"


@dataclass(frozen=True, slots=True)
class CallbackClaim:
    job_id: str
    provider: str


class _ClockedSigner(TimestampSigner):
    """A ``TimestampSigner`` that reads the time from ``now`` (a test drives it) and
    derives each key once (itsdangerous derives it again for every signature: a third
    of a check)."""

    def __init__(self, *args: Any, now: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now
        self._derived: dict[str | bytes | None, bytes] = {}

    def get_timestamp(self) -> int:
        return int(self._now())

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        derived = self._derived.get(secret_key)
        if derived is None:
            derived = self._derived[secret_key] = super().derive_key(secret_key)
        return derived


class CallbackTokens:
    """Mint and check the ``{token}`` in ``/callbacks/{provider}/{token}``; ``now`` is
    the clock that stamps and ages tokens (``time.time`` unless a test drives it)."""

    def __init__(
        self,
        secret_keys: Sequence[str],
        *,
        max_age_s: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is required")
        # itsdangerous signs with the *last* key and verifies with all of them
        self._serializer = URLSafeTimedSerializer(
            list(reversed(secret_keys)),
            salt=CALLBACK_SALT,
            signer=_ClockedSigner,
            signer_kwargs={"now": now},
        )
        self._max_age_s = max_age_s
        # one signer for every check (the serializer would build one per call)
        self._signer = cast(TimestampSigner, self._serializer.make_signer())

    def mint(self, job_id: str, provider: str) -> str:
        return str(self._serializer.dumps({"j": job_id, "p": provider}))

    def check(self, token: str, provider: str) -> CallbackClaim:
        """The job the token was minted for; ``Unauthorized`` if forged, expired or
        minted for another provider."""
        try:
            payload = self._signer.unsign(token, max_age=self._max_age_s)
            raw = self._serializer.load_payload(payload)
        except SignatureExpired as exc:
            raise Unauthorized("callback token expired") from exc
        except BadData as exc:
            raise Unauthorized("invalid callback token") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("j"), str):
            raise Unauthorized("invalid callback token")
        if raw.get("p") != provider:
            raise Unauthorized("callback token belongs to another provider")
        return CallbackClaim(job_id=raw["j"], provider=provider)


def new_job_secret() -> str:
    """A fresh random per-job secret (Apiframe's ``webhook_secret``)."""
    return secrets.token_urlsafe(32)
