"""The timeline and delivery templates render a delivery's attempt rows when the API's
``attempts`` is a list of them (and a plain count when it is a number)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from receiver.events import Delivery, DeliveryState
from receiver.routes.ui import _templates
from receiver.ui.views import delivery_row

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ATTEMPTS = [
    {
        "n": 1,
        "started_at": "2026-12-01T12:00:00Z",
        "duration_ms": 31,
        "status": 503,
        "error": "HTTP 503",
        "host": "hooks.example.com",
        "response_excerpt": "<b>down</b>",
    },
    {
        "n": 2,
        "started_at": "2026-12-01T12:00:05Z",
        "duration_ms": None,
        "status": None,
        "error": "connection failed (ConnectError)",
        "host": "hooks.example.com",
        "response_excerpt": None,
    },
]


def _delivery(attempts: int = 2) -> Delivery:
    return Delivery(
        id="dlv_1",
        event_id="evt_1",
        job_id="job_1",
        sink="app",
        state=DeliveryState.DEAD,
        attempts=attempts,
        next_attempt_at=None,
        last_status=None,
        last_error="connection failed (ConnectError)",
        created_at=NOW,
        updated_at=NOW,
    )


def _page(template: str, **context: Any) -> str:
    page = _templates().get_template(template)
    return page.render(
        request_path="/ui/x", csrf="c", authenticated=True, nonce="n", refresh_s=5, **context
    )


def _with_attempt_rows() -> dict[str, Any]:
    row = delivery_row(_delivery())
    row.update(attempts=ATTEMPTS, attempt_list=ATTEMPTS, attempt_count=len(ATTEMPTS))
    return row


def test_delivery_page_lists_each_attempt_escaped() -> None:
    html = _page(
        "delivery.html", title="Delivery", delivery=_with_attempt_rows(), event=None, replayed=None
    )
    assert html.count("<tr>") == 3  # header + two attempts
    assert "hooks.example.com" in html
    assert "31 ms" in html
    assert "&lt;b&gt;down&lt;/b&gt;" in html
    assert "connection failed (ConnectError)" in html


def test_a_plain_attempt_count_renders_without_a_table() -> None:
    row = delivery_row(_delivery(attempts=3))
    assert row["attempt_count"] == 3
    assert row["attempt_list"] == []
    html = _page("delivery.html", title="Delivery", delivery=row, event=None, replayed=None)
    assert 'class="attempts"' not in html
    assert "<dd>3</dd>" in html


def test_the_timeline_shows_attempt_rows_under_their_delivery() -> None:
    job = {
        "job_id": "job_1",
        "provider": "apiframe",
        "provider_task_id": "t",
        "parent_id": "p",
        "action": "U1",
        "ref": None,
        "status": "completed",
        "callback": "webhook",
    }
    event = {
        "id": "evt_1",
        "type": "upscale.completed",
        "timestamp": "2026-12-01T12:00:00Z",
        "data": {"progress": 100, "error": None, "image_url": "javascript:alert(1)"},
    }
    entries = [{"kind": "event", "at": "…", "event": event, "deliveries": [_with_attempt_rows()]}]
    html = _page("job.html", title="Job", job=job, entries=entries, replayed=None)
    assert "2 attempts" in html
    assert html.count('<table class="attempts">') == 1
    assert "javascript:" not in html  # only http(s) images are shown
