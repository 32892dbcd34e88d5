"""Dashboard sessions: signed, expiring, bound to the API token; CSRF bound to them."""

from __future__ import annotations

import hashlib
import time

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.responses import Response

from receiver.routes.ui import safe_next
from receiver.ui.session import SESSION_MAX_AGE_S, SESSION_SALT, UiSessions

KEYS = ("new-key", "old-key")


def _cookie_of(response: Response) -> str:
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


def test_a_session_round_trips_and_forgeries_do_not() -> None:
    """What ``attach`` sets, ``load`` reads back; a tampered or foreign cookie is None."""
    sessions = UiSessions(KEYS, "tok", secure=False)
    session = sessions.new(authenticated=True)
    response = Response()
    sessions.attach(response, session)
    cookie = _cookie_of(response)
    assert sessions.load(cookie) == session
    assert sessions.load(cookie[:-2] + "xx") is None
    assert sessions.load("") is None
    assert UiSessions(("other-key",), "tok", secure=False).load(cookie) is None


def test_rotating_the_api_token_or_dropping_a_key_logs_sessions_out() -> None:
    """The salt carries a digest of the API token; the old key still verifies."""
    sessions = UiSessions(KEYS, "tok", secure=False)
    response = Response()
    sessions.attach(response, sessions.new(authenticated=True))
    cookie = _cookie_of(response)
    assert UiSessions(KEYS, "tok-2", secure=False).load(cookie) is None
    assert UiSessions(("newer-key", *KEYS), "tok", secure=False).load(cookie) is not None


def test_an_expired_session_is_refused_by_the_server() -> None:
    """Expiry is the signature's max_age, whatever the browser keeps."""
    token = "tok"
    sessions = UiSessions(KEYS, token, secure=False)

    class LongAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - SESSION_MAX_AGE_S - 5

    salt = f"{SESSION_SALT}:{hashlib.sha256(token.encode()).hexdigest()}"
    old = URLSafeTimedSerializer(list(reversed(KEYS)), salt=salt, signer=LongAgo)
    cookie = str(old.dumps({"sid": "s", "auth": True}))
    assert sessions.load(cookie) is None
    fresh = URLSafeTimedSerializer(list(reversed(KEYS)), salt=salt)
    assert sessions.load(str(fresh.dumps({"sid": "s", "auth": True}))) is not None


def test_cookie_flags() -> None:
    """HttpOnly, SameSite=Strict, scoped to /ui, expiring; Secure on an https site."""
    for secure in (False, True):
        response = Response()
        sessions = UiSessions(KEYS, "tok", secure=secure)
        sessions.attach(response, sessions.new(authenticated=False))
        flags = response.headers["set-cookie"].lower()
        assert "httponly" in flags
        assert "samesite=strict" in flags
        assert "path=/ui" in flags
        assert f"max-age={SESSION_MAX_AGE_S}" in flags
        assert ("secure" in flags.replace("samesite", "")) is secure


def test_csrf_tokens_belong_to_one_session() -> None:
    sessions = UiSessions(KEYS, "tok", secure=False)
    mine, theirs = sessions.new(authenticated=True), sessions.new(authenticated=True)
    token = sessions.csrf_token(mine)
    assert sessions.check_csrf(mine, token)
    assert not sessions.check_csrf(theirs, token)
    assert not sessions.check_csrf(mine, None)
    assert not sessions.check_csrf(mine, token + "x")
    assert not UiSessions(KEYS, "tok-2", secure=False).check_csrf(mine, token)


def test_the_api_token_check() -> None:
    sessions = UiSessions(KEYS, "s3cret", secure=False)
    assert sessions.check_api_token("s3cret")
    assert not sessions.check_api_token("s3cre")
    assert not sessions.check_api_token("")
    assert not UiSessions(KEYS, None, secure=False).check_api_token("")


def test_safe_next_keeps_redirects_on_the_dashboard() -> None:
    assert safe_next("/ui/deliveries?state=dead") == "/ui/deliveries?state=dead"
    assert safe_next("/ui") == "/ui"
    for bad in (
        None,
        "",
        "https://evil.example/ui/jobs",
        "//evil.example/ui",
        "/\\evil.example",
        "/v1/jobs",
        "/uix",
        "javascript:alert(1)",
        "/ui/\njobs",
    ):
        assert safe_next(bad) == "/ui/jobs", bad
