"""Callback guards end to end: the body limit holds for chunked bodies and each job has
its own webhook secret."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.helpers.stack
from tests.helpers.stack import Stack, running_stack

HTTP_COMPLETED = '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'


def _task(stack: Stack, job: dict[str, Any]) -> Any:
    return stack.sim("apiframe").state.book.get(job["provider_task_id"])


async def test_chunked_body_over_the_limit_is_413_and_the_limit_is_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body without Content-Length (chunked) is cut off at the configured limit: 413."""
    load = tests.helpers.stack.load_settings
    monkeypatch.setattr(
        tests.helpers.stack,
        "load_settings",
        lambda *args, **kwargs: dataclasses.replace(load(*args, **kwargs), max_body_bytes=4096),
    )
    async with running_stack(tmp_path, extra_config=HTTP_COMPLETED) as stack:
        assert stack.settings.max_body_bytes == 4096
        job = await stack.submit(provider="apiframe", parent_id="c-nocallback", action="U1")
        task = _task(stack, job)
        headers = {"x-webhook-secret": task.extra["webhook_secret"]}

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 1024

        async with httpx.AsyncClient() as client:
            answer = await client.post(task.callback_url, content=chunks(), headers=headers)
            assert answer.status_code == 413, answer.text
            fits = await client.post(
                task.callback_url,
                json={"task_id": task.id, "image_url": task.image_url, "pad": "x" * 3000},
                headers=headers,
            )
            assert fits.status_code == 200, fits.text


async def test_a_secret_is_minted_per_job(tmp_path: Path) -> None:
    """Each job gets its own webhook secret: job B's secret on job A's URL is 401."""
    async with running_stack(tmp_path, extra_config=HTTP_COMPLETED) as stack:
        a = _task(
            stack, await stack.submit(provider="apiframe", parent_id="a-nocallback", action="U1")
        )
        b = _task(
            stack, await stack.submit(provider="apiframe", parent_id="b-nocallback", action="U1")
        )
        assert a.extra["webhook_secret"] != b.extra["webhook_secret"]
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                a.callback_url,
                json={"task_id": a.id, "image_url": a.image_url},
                headers={"x-webhook-secret": b.extra["webhook_secret"]},
            )
        assert answer.status_code == 401
