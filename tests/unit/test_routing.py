"""Routing: globs on event type and provider, ref prefix, per-job override."""

from __future__ import annotations

from receiver.events import (
    CallbackMode,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    build_event,
    utcnow,
)
from receiver.routing import Route, route_event


def _event(state: UpdateState, provider: str = "kie", ref: str | None = "order-1") -> object:
    job = Job(
        id="job_1",
        provider=provider,
        parent_id="p",
        action="U1",
        ref=ref,
        status=JobStatus.SUBMITTED,
        callback_mode=CallbackMode.WEBHOOK,
        created_at=utcnow(),
    )
    return build_event(provider, ProviderUpdate("t1", state, image_url="https://i"), job)


def test_globs_providers_and_ref_prefix() -> None:
    """Each route applies only where every filter matches; sinks come once, in order."""
    routes = [
        Route(sinks=("slack",), events=("upscale.completed", "upscale.failed")),
        Route(sinks=("archive", "slack"), events=("upscale.*",), providers=("kie",)),
        Route(sinks=("orders",), ref_prefix="order-"),
    ]
    completed = _event(UpdateState.COMPLETED)
    assert route_event(completed, routes, []) == ["slack", "archive", "orders"]  # type: ignore[arg-type]
    progress = _event(UpdateState.PROGRESS, provider="useapi", ref="other")
    assert route_event(progress, routes, []) == []  # type: ignore[arg-type]


def test_job_sinks_override_routes_and_no_routes_means_all() -> None:
    """A job's own sinks list wins; with no routes at all every sink gets the event."""
    event = _event(UpdateState.COMPLETED)
    routes = [Route(sinks=("slack",))]
    assert route_event(event, routes, ["slack", "s3"], job_sinks=["s3"]) == ["s3"]  # type: ignore[arg-type]
    assert route_event(event, [], ["slack", "s3"]) == ["slack", "s3"]  # type: ignore[arg-type]
