"""``relay tail`` lines, the SSE parser and ``submit --wait``'s bookkeeping."""

from __future__ import annotations

from receiver.events import UpdateState
from receiver.feed import FeedItem
from receiver.routes.stream import sse_message
from receiver.tail import JobWatch, parse_sse, render_line
from tests.helpers.events import make_event


def outcome(kind: str, delivery: str, sink: str, **extra: object) -> FeedItem:
    data = {
        "delivery_id": delivery,
        "event_id": "evt_1",
        "job_id": "job_1",
        "sink": sink,
        "attempt": 1,
        "status": 200,
        "error": None,
        "duration_ms": 12.6,
        "next_attempt_at": None,
        "timestamp": "2026-11-23T18:00:05Z",
        **extra,
    }
    return FeedItem("7", kind, data)


def test_event_and_attempt_lines_read_well() -> None:
    event = make_event(UpdateState.PROGRESS, progress=40)
    line = render_line(FeedItem("1", "upscale.progress", event.as_dict()))
    assert line.startswith("18:00:00  upscale.progress")
    assert "job_0123456789abcdef01234567" in line
    assert "apiframe" in line
    assert "ref=order-42" in line
    assert "40%" in line
    done = render_line(FeedItem("2", "upscale.completed", make_event().as_dict()))
    assert "https://cdn.example.test/images/task-1.png" in done
    failed = render_line(FeedItem("3", "upscale.failed", make_event(UpdateState.FAILED).as_dict()))
    assert "moderated: Image flagged by moderation" in failed
    retry = render_line(
        outcome(
            "delivery.retry_scheduled",
            "dlv_1",
            "app",
            status=503,
            error="HTTP 503: down",
            next_attempt_at="2026-11-23T18:00:10Z",
        )
    )
    assert "delivery.retry_scheduled" in retry
    assert "sink=app" in retry
    assert "attempt 1" in retry
    assert "HTTP 503" in retry
    assert "next 18:00:10" in retry
    assert "HTTP 503: down" in retry
    assert "13 ms" in render_line(outcome("delivery.delivered", "dlv_1", "app"))


def test_parse_sse_reads_what_the_route_writes() -> None:
    item = FeedItem("12-34", "delivery.dead", {"sink": "app", "text": "a\nb"})
    lines = sse_message(item).rstrip("\n").split("\n")
    assert lines[0] == "id: 12-34"
    assert lines[1] == "event: delivery.dead"
    assert len(lines) == 3  # one data line: newlines inside JSON strings are escaped
    assert parse_sse(lines) == item
    assert parse_sse([": keep-alive"]) is None
    assert parse_sse(["retry: 2000"]) is None


def test_job_watch_settles_on_the_routed_deliveries() -> None:
    watch = JobWatch("job_1")
    watch.feed(
        FeedItem("1", "upscale.progress", make_event(UpdateState.PROGRESS, progress=50).as_dict())
    )
    assert watch.progress == 50
    assert not watch.terminal
    watch.feed(outcome("delivery.delivered", "dlv_p", "app"))
    watch.feed(FeedItem("2", "upscale.completed", make_event().as_dict()))
    watch.expected = 3
    assert watch.progress == 100
    watch.feed(outcome("delivery.retry_scheduled", "dlv_a", "app", status=503))
    watch.feed(outcome("delivery.delivered", "dlv_b", "slack"))
    assert not watch.settled
    assert "app: retrying HTTP 503 (attempt 1)" in watch.status_line()
    watch.feed(outcome("delivery.delivered", "dlv_a", "app", attempt=2))
    assert watch.settled
    assert watch.ok
    assert "100%" in watch.status_line()


def test_job_watch_fails_on_a_dead_letter_or_a_failed_job() -> None:
    dead = JobWatch("job_1", expected=1)
    dead.feed(FeedItem("2", "upscale.completed", make_event().as_dict()))
    dead.feed(outcome("delivery.dead", "dlv_a", "app", status=410, error="gone"))
    assert dead.settled
    assert not dead.ok
    failed = JobWatch("job_1", expected=0)
    failed.feed(FeedItem("2", "upscale.failed", make_event(UpdateState.FAILED).as_dict()))
    assert failed.settled
    assert not failed.ok
