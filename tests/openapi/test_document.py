"""``/openapi.json`` covers every API route the app serves, its schemas accept what the
code produces, and ``/docs`` serves Swagger UI from the package's own assets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from starlette.routing import Route

from receiver.app import create_app
from receiver.events import CallbackMode as Mode
from receiver.events import (
    ErrorCode,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    build_event,
    utcnow,
)
from receiver.openapi import build_openapi
from receiver.settings import Settings
from tests.helpers.stack import running_stack


def _validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return Draft202012Validator(root)


def test_every_api_route_is_described_with_its_methods() -> None:
    """The /v1, callback and health routes of the app, and nothing it does not serve."""
    app = create_app(Settings(secret_keys=("k",), api_token="t"))
    served = {
        route.path: {m.lower() for m in route.methods or ()} - {"head"}
        for route in app.routes
        if isinstance(route, Route)
        and route.path.startswith(("/v1/", "/callbacks/", "/healthz", "/readyz", "/metrics"))
    }
    document = build_openapi(Settings(secret_keys=("k",), api_token="t"))
    described = {path: set(item) for path, item in document["paths"].items()}
    assert described == served
    assert document["openapi"] == "3.1.0"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearer": []}], (method, path)
                assert "401" in operation["responses"]


def test_the_event_schema_accepts_real_events() -> None:
    """Completed, progress and failed events — with and without a job of ours."""
    document = build_openapi(Settings(secret_keys=("k",), api_token="t"))
    events = _validator(document, "Event")
    job = Job(
        id="job_1",
        provider="apiframe",
        parent_id="p",
        action="U1",
        ref=None,
        status=JobStatus.SUBMITTED,
        callback_mode=Mode.WEBHOOK,
        created_at=utcnow(),
        submitted_at=utcnow(),
    )
    updates = [
        ProviderUpdate("t", UpdateState.COMPLETED, image_url="https://x/y.png", buttons=("V1",)),
        ProviderUpdate("t", UpdateState.PROGRESS, progress=40),
        ProviderUpdate("t", UpdateState.FAILED, error_code=ErrorCode.MODERATED),
    ]
    for update in updates:
        for owner in (job, None):
            events.validate(build_event("apiframe", update, owner).as_dict())
    assert not events.is_valid({"id": "evt_1", "type": "upscale.other", "timestamp": "x"})


async def test_the_api_answers_match_the_schemas(tmp_path: Path) -> None:
    """A real job, its deliveries and the sinks validate against their schemas."""
    async with running_stack(tmp_path) as stack:
        document = (await stack.api.get("/openapi.json")).json()
        assert document["servers"] == [{"url": stack.base_url}]
        job = await stack.submit(provider="apiframe", parent_id="g", action="U4", ref="r")
        _validator(document, "UpscaleAccepted").validate(job)
        await stack.wait_job(job["job_id"], "completed")
        _validator(document, "JobWithEvents").validate(await stack.job(job["job_id"]))
        for delivery in await stack.wait_deliveries(2, job_id=job["job_id"]):
            _validator(document, "Delivery").validate(delivery)
        for sink in (await stack.api.get("/v1/sinks")).json()["sinks"]:
            _validator(document, "Sink").validate(sink)
        missing = await stack.api.get("/v1/jobs/job_none")
        _validator(document, "Error").validate(missing.json())


async def test_docs_are_served_from_the_package(tmp_path: Path) -> None:
    """/docs loads Swagger UI's bundle from /docs/assets, pointed at /openapi.json."""
    async with running_stack(tmp_path) as stack, httpx.AsyncClient(base_url=stack.base_url) as c:
        page = await c.get("/docs")
        assert page.status_code == 200
        assert '"/openapi.json"' in page.text
        assert "http" not in page.text.replace("http-equiv", "").split("<body>")[1]
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            answer = await c.get(f"/docs/assets/{asset}")
            assert answer.status_code == 200
            assert len(answer.content) > 10_000
