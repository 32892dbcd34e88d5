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


def test_tokens_expire_after_max_age() -> None:
    """A token is good up to max_age seconds on the tokens' clock, and expired after."""
    clock = [1_700_000_000.0]
    tokens = CallbackTokens(["k"], max_age_s=60, now=lambda: clock[0])
    token = tokens.mint("job_1", "useapi")
    clock[0] += 60
    assert tokens.check(token, "useapi").job_id == "job_1"
    clock[0] += 1
    with pytest.raises(Unauthorized, match="expired"):
        tokens.check(token, "useapi")


def test_a_token_from_the_future_is_refused() -> None:
    """A token stamped after the checker's now (a clock skewed back) is not accepted."""
    clock = [1_700_000_000.0]
    token = CallbackTokens(["k"], max_age_s=60, now=lambda: clock[0] + 10).mint("j", "kie")
    with pytest.raises(Unauthorized):
        CallbackTokens(["k"], max_age_s=60, now=lambda: clock[0]).check(token, "kie")


def test_the_default_clock_is_the_wall_clock() -> None:
    """Without ``now`` tokens are stamped with ``time.time``: a checker an hour ahead of the
    wall clock finds one expired, a checker a minute ahead does not."""
    token = CallbackTokens(["k"], max_age_s=3600).mint("job_1", "apiframe")
    soon = CallbackTokens(["k"], max_age_s=3600, now=lambda: time.time() + 60)
    assert soon.check(token, "apiframe").job_id == "job_1"
    later = CallbackTokens(["k"], max_age_s=3600, now=lambda: time.time() + 3602)
    with pytest.raises(Unauthorized, match="expired"):
        later.check(token, "apiframe")
