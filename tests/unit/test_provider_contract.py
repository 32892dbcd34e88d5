"""Cross-provider facts: fixtures match the shared docs' copies, each provider's action
list is pinned, Apiframe's documented request shape, and the poller's back-off."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from handlers.providers import PROVIDERS, ProviderConfig, SubmitSpec
from handlers.providers.actions import ALL_ACTIONS
from receiver.events import CallbackMode, Job, JobStatus, utcnow
from receiver.poller import next_poll_delay_s
from receiver.settings import load_settings
from tests.conftest import SHARED_FIXTURES, load_fixture

DOCS_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
EXPECTED_ACTIONS = {
    "apiframe": (
        "U1", "U2", "U3", "U4", "upscale_subtle", "upscale_creative", "upscale_2x", "upscale_4x",
    ),
    "imaginepro": (
        "U1", "U2", "U3", "U4", "upscale_2x", "upscale_4x", "upscale_subtle",
        "upscale_creative", "redo_upscale_2x", "redo_upscale_4x",
    ),
    "kie": ("U1", "U2", "U3", "U4"),
    "useapi": ALL_ACTIONS,
    "apimart": ALL_ACTIONS,
}  # fmt: skip


def test_fixture_copies_equal_the_documented_payloads() -> None:
    """Every payload in ../shared/fixtures is in tests/fixtures, unchanged."""
    if not DOCS_FIXTURES.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DOCS_FIXTURES} is missing: CI runs with ../shared beside the repo")
        pytest.skip(f"{DOCS_FIXTURES} not found (../shared is not beside this checkout)")
    documented = sorted(DOCS_FIXTURES.glob("*/*.json"))
    assert documented
    for path in documented:
        copy = SHARED_FIXTURES / path.parent.name / path.name
        assert copy.is_file(), f"{copy} is missing"
        assert json.loads(copy.read_text()) == json.loads(path.read_text()), path.name


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_supported_actions_are_pinned(provider: str) -> None:
    """Each provider does exactly the actions its docs allow (a dropped one fails here)."""
    config = ProviderConfig(name=provider, api_key="k", base_url="http://127.0.0.1:1")
    async with httpx.AsyncClient() as client:
        supported = PROVIDERS[provider](config, client).supported_actions()
    assert sorted(supported) == sorted(EXPECTED_ACTIONS[provider])


async def test_apiframe_alt_request_matches_the_docs() -> None:
    """Our /upscale-alt body carries the documented fields with the documented values."""
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"task_id": "t"})

    documented = load_fixture("apiframe", "submit_request_alt")
    config = ProviderConfig(name="apiframe", api_key="k", base_url="https://api.test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        spec = SubmitSpec("j", documented["parent_task_id"], "upscale_creative", None, None)
        await PROVIDERS["apiframe"](config, client).submit(spec)
    assert seen == [documented]


def test_poll_back_off_runs_from_three_to_fifteen_seconds() -> None:
    """A polled job is asked after 3 s at first, backing off to the 15 s interval."""
    now = utcnow()
    job = Job(
        id="job_1",
        provider="apimart",
        parent_id="p",
        action="U1",
        ref=None,
        status=JobStatus.SUBMITTED,
        callback_mode=CallbackMode.POLL,
        created_at=now,
        submitted_at=now,
    )
    assert next_poll_delay_s(job, now + timedelta(seconds=1), 15) == 3
    assert next_poll_delay_s(job, now + timedelta(seconds=40), 15) == 10
    assert next_poll_delay_s(job, now + timedelta(seconds=600), 15) == 15


def test_polling_defaults() -> None:
    """By default a webhook job is polled after 2 min and times out after 30 min; Kie
    confirms by polling and useapi caps at 3 jobs."""
    text = "".join(f'[providers.{name}]\napi_key = "k"\n' for name in PROVIDERS)
    providers = load_settings(
        {"RELAY_SECRET_KEY": "s", "RELAY_API_TOKEN": "t"}, config_text=text
    ).providers
    assert {(p.poll_after_s, p.deadline_s, p.poll_interval_s) for p in providers.values()} == {
        (120, 1800, 15)
    }
    assert providers["kie"].confirm_by_poll
    assert not providers["apiframe"].confirm_by_poll
    assert providers["useapi"].max_jobs == 3
    assert providers["imaginepro"].max_jobs is None
