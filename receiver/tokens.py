"""Signed callback tokens (itsdangerous): one salt per purpose, key rotation, expiry.

A token carries the job id and the provider, so a callback URL is only good for the
job it was minted for. ``RELAY_SECRET_KEY`` is comma-separated: the first key signs,
every key verifies (put the new key first, keep the old one until its tokens expire).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from receiver.errors import Unauthorized

CALLBACK_SALT = "upscale-relay.callback.v1"


@dataclass(frozen=True, slots=True)
class CallbackClaim:
    job_id: str
    provider: str


class CallbackTokens:
    """Mint and check the ``{token}`` in ``/callbacks/{provider}/{token}``."""

    def __init__(self, secret_keys: Sequence[str], *, max_age_s: int) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is required")
        # itsdangerous signs with the *last* key and verifies with all of them
        self._serializer = URLSafeTimedSerializer(list(reversed(secret_keys)), salt=CALLBACK_SALT)
        self._max_age_s = max_age_s

    def mint(self, job_id: str, provider: str) -> str:
        return str(self._serializer.dumps({"j": job_id, "p": provider}))

    def check(self, token: str, provider: str) -> CallbackClaim:
        """The job the token was minted for; ``Unauthorized`` if forged, expired or
        minted for another provider."""
        try:
            raw = self._serializer.loads(token, max_age=self._max_age_s)
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
