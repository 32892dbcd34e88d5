"""Signed callback tokens: bound to job and provider, rotating keys, expiry."""

from __future__ import annotations

import time

import pytest

from receiver.errors import Unauthorized
from receiver.tokens import CallbackTokens


def test_round_trip_carries_job_id() -> None:
    """A minted token checks out to the job it was made for."""
    tokens = CallbackTokens(["k"], max_age_s=60)
    assert tokens.check(tokens.mint("job_1", "apiframe"), "apiframe").job_id == "job_1"


def test_tampered_or_foreign_tokens_are_refused() -> None:
    """A changed character, another key, or another provider → Unauthorized."""
    tokens = CallbackTokens(["k"], max_age_s=60)
    token = tokens.mint("job_1", "apiframe")
    with pytest.raises(Unauthorized):
        tokens.check(token[:-2] + ("xx" if token[-2:] != "xx" else "yy"), "apiframe")
    with pytest.raises(Unauthorized):
        CallbackTokens(["other"], max_age_s=60).check(token, "apiframe")
    with pytest.raises(Unauthorized, match="another provider"):
        tokens.check(token, "kie")


def test_rotation_verifies_old_tokens_and_signs_with_first_key() -> None:
    """With "new,old", tokens made with old still verify; new tokens fail with old alone."""
    old = CallbackTokens(["old"], max_age_s=60).mint("job_1", "kie")
    rotated = CallbackTokens(["new", "old"], max_age_s=60)
    assert rotated.check(old, "kie").job_id == "job_1"
    fresh = rotated.mint("job_2", "kie")
    assert CallbackTokens(["new"], max_age_s=60).check(fresh, "kie").job_id == "job_2"
    with pytest.raises(Unauthorized):
        CallbackTokens(["old"], max_age_s=60).check(fresh, "kie")


def test_tokens_expire() -> None:
    """A token older than max_age is refused as expired."""
    tokens = CallbackTokens(["k"], max_age_s=0)
    token = tokens.mint("job_1", "useapi")
    time.sleep(1.1)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.check(token, "useapi")
