"""schemathesis against the live relay over real sockets: for every operation in
``/openapi.json``, generated requests (valid and invalid) never get a 5xx, and every
response — status code, content type, headers, body — matches the document.

The callback routes get a real job's token and secret (and Apiframe's account secret),
so generated bodies get past verification into the parsers."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.stack import API_TOKEN, Stack, running_stack

MAX_EXAMPLES = int(os.environ.get("RELAY_SCHEMATHESIS_EXAMPLES", "20"))  # more: a deeper run
ACCOUNT_SECRET = "account-secret-for-schemathesis"
# every check but negative_data_rejection / positive_data_acceptance: the API is more
# lenient than its document on purpose (action aliases in any case, surrounding blanks,
# an empty filter meaning "any"), and a callback body is the provider's own JSON, so a
# schema-valid random object is rightly a 400
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
]


async def _config(stack: Stack, path: Path) -> Path:
    """A schemathesis.toml: bearer token, bounded examples, and real
    credentials for the callback operations."""
    job = await stack.submit(provider="apiframe", parent_id="st-nocallback", action="U1")
    task = stack.sim("apiframe").state.book.get(job["provider_task_id"])
    token = task.callback_url.rsplit("/", 1)[1]
    secret = task.extra["webhook_secret"]
    path.write_text(
        f"""
headers = {{ Authorization = "Bearer {API_TOKEN}" }}
request-timeout = 10
generation.max-examples = {MAX_EXAMPLES}

[[operations]]
include-operation-id = "jobCallback"
parameters = {{ provider = "apiframe", token = "{token}", x-webhook-secret = "{secret}" }}

[[operations]]
include-operation-id = "accountCallback"
parameters = {{ provider = "apiframe", x-webhook-secret = "{ACCOUNT_SECRET}" }}
"""
    )
    return path


# CPU-bound (44 s alone); beside three other xdist workers on 2 cores it needs more than 120 s
@pytest.mark.timeout(360)
async def test_the_live_api_matches_its_openapi_document(tmp_path: Path) -> None:
    """No 5xx and no response outside the schema, ``MAX_EXAMPLES`` cases per operation
    and phase (examples, coverage, fuzzing, stateful via the document's links)."""
    options = {"apiframe": f'account_webhook_secret = "{ACCOUNT_SECRET}"'}
    async with running_stack(tmp_path, provider_options=options) as stack:
        config = await _config(stack, tmp_path / "schemathesis.toml")
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(config),
            "run",
            f"{stack.base_url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--seed",
            "1",
            # an endless event stream: tests/e2e/test_stream.py covers it
            "--exclude-operation-id",
            "stream",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )
        output, _ = await process.communicate()
        report = output.decode(errors="replace")
        print(f"schemathesis took {time.monotonic() - started:.1f} s\n{report}")
        assert process.returncode == 0, report
        assert "13 tested" in report.lower() or "Tested: 13" in report, report
