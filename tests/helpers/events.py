"""Events as the relay builds them, for sink tests."""

from __future__ import annotations

from datetime import UTC, datetime

from receiver.events import (
    CallbackMode,
    ErrorCode,
    Event,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    build_event,
)

MOMENT = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)


def make_event(
    state: UpdateState = UpdateState.COMPLETED,
    *,
    image_url: str | None = "https://cdn.example.test/images/task-1.png",
    task_id: str = "task-1",
    job_id: str | None = "job_0123456789abcdef01234567",
    ref: str | None = "order-42",
    progress: int | None = None,
    now: datetime = MOMENT,
) -> Event:
    """A normalised event for ``state`` through ``build_event`` (as ingest makes it)."""
    job = None
    if job_id is not None:
        job = Job(
            id=job_id,
            provider="apiframe",
            parent_id="grid-1",
            action="upscale_creative",
            ref=ref,
            status=JobStatus.SUBMITTED,
            callback_mode=CallbackMode.WEBHOOK,
            created_at=now,
            provider_task_id=task_id,
            submitted_at=now,
        )
    update = ProviderUpdate(
        provider_task_id=task_id,
        state=state,
        progress=progress,
        image_url=image_url if state is UpdateState.COMPLETED else None,
        error_code=ErrorCode.MODERATED if state is UpdateState.FAILED else None,
        error_message="Image flagged by moderation" if state is UpdateState.FAILED else None,
    )
    return build_event("apiframe", update, job, now=now)
