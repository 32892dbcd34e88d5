"""The normalised event: contract shape, stable ids, canonical JSON."""

from __future__ import annotations

import re

import pytest

from receiver.events import (
    CallbackMode,
    ErrorCode,
    Event,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    build_event,
    event_id,
    new_id,
    new_ordered_id,
    utcnow,
)

JOB = Job(
    id="job_1",
    provider="apiframe",
    parent_id="parent",
    action="upscale_creative",
    ref="order-42",
    status=JobStatus.SUBMITTED,
    callback_mode=CallbackMode.WEBHOOK,
    created_at=utcnow(),
    submitted_at=utcnow(),
    callback_secret="never-shown",
)


def test_completed_event_has_the_contract_fields() -> None:
    """Every DESIGN §4 field is present with the job's action and the user's ref."""
    event = build_event(
        "apiframe", ProviderUpdate("task", UpdateState.COMPLETED, image_url="https://i/1.png"), JOB
    )
    body = event.as_dict()
    assert set(body) == {"id", "type", "timestamp", "data"}
    assert body["type"] == "upscale.completed"
    assert body["id"].startswith("evt_")
    assert set(body["data"]) == {
        "job_id", "provider", "provider_task_id", "parent_id", "action", "ref", "status",
        "progress", "image_url", "image_urls", "buttons", "error", "submitted_at", "finished_at",
    }  # fmt: skip
    assert body["data"]["image_urls"] == ["https://i/1.png"]
    assert body["data"]["progress"] == 100
    assert "never-shown" not in event.to_json()
    assert "never-shown" not in str(JOB)


def test_ids_are_stable_per_provider_task_and_state() -> None:
    """Same (provider, task, state) → same id; progress ids also key on the percentage."""
    assert event_id("a", "t", UpdateState.COMPLETED, None) == event_id(
        "a", "t", UpdateState.COMPLETED, 5
    )
    assert event_id("a", "t", UpdateState.COMPLETED, None) != event_id(
        "a", "t", UpdateState.FAILED, None
    )
    assert event_id("a", "t", UpdateState.PROGRESS, 40) != event_id(
        "a", "t", UpdateState.PROGRESS, 80
    )
    assert event_id("a", "t", UpdateState.COMPLETED, None) != event_id(
        "b", "t", UpdateState.COMPLETED, None
    )


def test_failed_event_carries_error_and_round_trips() -> None:
    """A failure has error.code/message and no image; JSON round-trips exactly."""
    update = ProviderUpdate(
        "task", UpdateState.FAILED, error_code=ErrorCode.MODERATED, error_message="banned"
    )
    event = build_event("apiframe", update, JOB)
    assert event.data["error"] == {"code": "moderated", "message": "banned"}
    assert event.data["image_url"] is None
    assert Event.from_json(event.to_json()).to_json() == event.to_json()


def test_ordered_ids_sort_by_creation_and_look_like_random_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same shape as ``new_id`` (prefix, 24 hex digits); later ids sort later, ids made
    in the same millisecond differ."""
    import receiver.events as events

    moments = iter([1_700_000_000_000_000_000 + n * 1_000_000 for n in range(200)])
    monkeypatch.setattr(events.time, "time_ns", lambda: next(moments))
    made = [new_ordered_id("dlv") for _ in range(200)]
    assert made == sorted(made)
    shape = re.compile(r"dlv_[0-9a-f]{24}")
    assert shape.fullmatch(new_id("dlv"))
    assert all(shape.fullmatch(i) for i in made)
    monkeypatch.setattr(events.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    same_moment = {new_ordered_id("dlv") for _ in range(1000)}
    assert len(same_moment) == 1000
