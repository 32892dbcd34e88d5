"""Dashboard sessions: an itsdangerous-signed cookie that expires, and CSRF tokens
bound to it.

Every visitor of ``/ui/login`` gets an anonymous session (so the login form carries a
CSRF token too); a correct ``RELAY_API_TOKEN`` swaps it for a fresh authenticated one
(a new id, so a planted cookie cannot be promoted). The signing salt includes a digest
of the API token: rotating the token logs every dashboard session out. Expiry is
checked on the server from the signature's timestamp, not left to the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.responses import Response

SESSION_COOKIE = "relay_ui"
SESSION_MAX_AGE_S = 12 * 3600
SESSION_SALT = "upscale-relay.ui.session.v1"
CSRF_SALT = "upscale-relay.ui.csrf.v1"


@dataclass(frozen=True, slots=True)
class UiSession:
    """One browser's session: a random id, and whether it has shown the API token."""

    sid: str
    authenticated: bool


class UiSessions:
    """Mint, read and guard dashboard sessions for one relay."""

    def __init__(
        self,
        secret_keys: Sequence[str],
        api_token: str | None,
        *,
        secure: bool,
        max_age_s: int = SESSION_MAX_AGE_S,
    ) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is required")
        self._api_token = api_token or ""
        tag = hashlib.sha256(self._api_token.encode()).hexdigest()
        keys = list(reversed(secret_keys))  # itsdangerous signs with the last key
        self._cookie = URLSafeTimedSerializer(keys, salt=f"{SESSION_SALT}:{tag}")
        self._csrf = URLSafeTimedSerializer(keys, salt=f"{CSRF_SALT}:{tag}")
        self.secure = secure
        self.max_age_s = max_age_s

    @staticmethod
    def new(*, authenticated: bool) -> UiSession:
        return UiSession(sid=secrets.token_urlsafe(18), authenticated=authenticated)

    def load(self, cookie: str | None) -> UiSession | None:
        """The session a cookie carries, or None if absent, forged or expired."""
        if not cookie:
            return None
        try:
            raw = self._cookie.loads(cookie, max_age=self.max_age_s)
        except BadData:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("sid"), str):
            return None
        return UiSession(sid=raw["sid"], authenticated=raw.get("auth") is True)

    def attach(self, response: Response, session: UiSession) -> None:
        """Set the session cookie: HttpOnly, SameSite=Strict, Secure on https."""
        response.set_cookie(
            SESSION_COOKIE,
            str(self._cookie.dumps({"sid": session.sid, "auth": session.authenticated})),
            max_age=self.max_age_s,
            path="/ui",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/ui", secure=self.secure, httponly=True, samesite="strict"
        )

    def csrf_token(self, session: UiSession) -> str:
        """A token for the forms of this session only."""
        return str(self._csrf.dumps(session.sid))

    def check_csrf(self, session: UiSession, token: str | None) -> bool:
        if not token:
            return False
        try:
            sid = self._csrf.loads(token, max_age=self.max_age_s)
        except BadData:
            return False
        return isinstance(sid, str) and hmac.compare_digest(sid, session.sid)

    def check_api_token(self, given: str) -> bool:
        """``given`` is ``RELAY_API_TOKEN``? Constant time (digests of equal length)."""
        if not self._api_token:
            return False
        expected = hashlib.sha256(self._api_token.encode()).digest()
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected)
