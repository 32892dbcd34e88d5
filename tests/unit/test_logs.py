"""receiver.logs: one line per request, written by the middleware unless the handler
wrote it through ``request_line``; request ids; redaction on the hot path."""

from __future__ import annotations

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from receiver.logs import RequestLogMiddleware, redact_path, redact_secrets, request_line


async def _plain(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _own_line(request: Request) -> Response:
    structlog.get_logger("t").info("callback.accepted", **request_line(200), event_id="evt_1")
    return PlainTextResponse("ok")


def _app() -> Starlette:
    app = Starlette(routes=[Route("/plain", _plain), Route("/callbacks/p/tok-secret", _own_line)])
    app.add_middleware(RequestLogMiddleware)
    return app


async def test_one_line_per_request_whoever_writes_it() -> None:
    """A plain route gets the middleware's ``http.request``; a handler that writes its own
    line gets no second one, and its line carries method, redacted path, status, duration
    and the request id."""
    transport = httpx.ASGITransport(app=_app())
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            plain = await client.get("/plain", headers={"x-request-id": "abc-1"})
            own = await client.get("/callbacks/p/tok-secret")
    assert [line["event"] for line in logs] == ["http.request", "callback.accepted"]
    first, second = logs
    assert first["request_id"] == "abc-1" == plain.headers["x-request-id"]
    assert (first["method"], first["path"], first["status"]) == ("GET", "/plain", 200)
    assert second["path"] == "/callbacks/p/[redacted]"
    assert second["status"] == 200
    assert second["duration_ms"] >= 0
    assert second["request_id"] == own.headers["x-request-id"]
    assert len(second["request_id"]) >= 16


async def test_request_ids_are_unique_and_insane_ones_replaced() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ids = {(await client.get("/plain")).headers["x-request-id"] for _ in range(50)}
        odd = await client.get("/plain", headers={"x-request-id": "no spaces <allowed>"})
    assert len(ids) == 50
    assert odd.headers["x-request-id"] != "no spaces <allowed>"


def test_request_line_outside_a_request_is_empty() -> None:
    assert request_line(200) == {}


def test_redaction_of_keys_and_callback_paths() -> None:
    fields = redact_secrets(
        None, "info", {"api_key": "k", "webhook_secret": None, "path": "/callbacks/kie/abc", "n": 1}
    )
    assert fields == {
        "api_key": "[redacted]",
        "webhook_secret": None,
        "path": "/callbacks/kie/[redacted]",
        "n": 1,
    }
    assert redact_path("/v1/jobs/job_1") == "/v1/jobs/job_1"


def test_json_lines_render_with_orjson_and_fall_back_to_json() -> None:
    """``dumps_log_line`` renders bytes; what orjson refuses (an integer beyond 64 bits)
    still renders, through ``json``."""
    import json

    from receiver.logs import dumps_log_line

    assert json.loads(dumps_log_line({"event": "x", "n": 1, 2: "non-str key"})) == {
        "event": "x",
        "n": 1,
        "2": "non-str key",
    }
    assert json.loads(dumps_log_line({"big": 2**70})) == {"big": 2**70}


def test_timestamps_are_rfc3339_utc_with_microseconds() -> None:
    import re
    from datetime import UTC, datetime

    from receiver.logs import add_timestamp

    stamp = add_timestamp(None, "info", {})["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 2
