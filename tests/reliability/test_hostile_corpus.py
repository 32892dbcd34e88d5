"""A seeded corpus of hostile requests against a real ``relay serve``: every callback
route (per job and account level, each provider) and ``/v1``. Nothing a client sends
may produce a 5xx, an event, or any change to the store; no request may leave a
traceback or a secret in the log; a client that goes away is one info line."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.processes import relay_process
from tests.reliability.harness import (
    ACCOUNT_SECRET,
    WEBHOOK_PROVIDERS,
    Harness,
    Job,
    harness,
    kie_signature,
)

SEED = 8
ROUNDS = 10  # corpus passes; each pass draws fresh mutations from the seeded generator

ID_FIELD = {"apiframe": "task_id", "imaginepro": "messageId", "kie": "taskId", "useapi": "jobid"}
LITERALS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E999", "-0.1e99999"]
FLOAT_IDS = [1e-400, 1.2345678901234568e29, 3.0, 0.5, -2.5e-7]
BAD_PROGRESS: list[Any] = [10**309, "250%", -1, 101, "1e400", "-0.5%", "lots", True, [50]]
DEEP = "[" * 10_000 + "]" * 10_000


def _with(body: dict[str, Any], key: str, value: Any, provider: str) -> dict[str, Any]:
    """``body`` with ``key`` set (inside ``data`` for Kie's task fields)."""
    changed = json.loads(json.dumps(body))
    target = changed["data"] if provider == "kie" and key != "code" else changed
    target[key] = value
    return changed


def _inject_literal(text: str, rng: random.Random) -> str:
    """A JSON text with one value (or a new member) replaced by a non-JSON number."""
    literal = rng.choice(LITERALS)
    if rng.random() < 0.5:
        return text[:-1] + f', "task_type": {literal}}}'
    value = json.loads(text)
    key = rng.choice(sorted(value))
    value[key] = "\x00MARK"
    return json.dumps(value).replace('"\\u0000MARK"', literal)


def refused_bodies(job: Job, rng: random.Random) -> list[tuple[str, bytes, str | None]]:
    """(kind, body, task id for Kie's signature) that the relay must all refuse."""
    base = job.completed_body()
    text = json.dumps(base)
    id_key = ID_FIELD[job.provider]
    cases: list[tuple[str, Any]] = [
        ("literal", _inject_literal(text, rng)),
        ("float_id", _with(base, id_key, rng.choice(FLOAT_IDS), job.provider)),
        ("deep_value", text[:-1] + f', "extra": {DEEP}}}'),
        ("truncated", text[: rng.randrange(1, len(text) - 1)]),
        ("bad_utf8", text.replace('"', '"\xff', 1).encode("latin-1")),
        ("surrogate", text[:-1] + ', "x": "\\ud800"}'),
        ("huge_int", text[:-1] + f', "n": {"7" * 4400}}}'),
        ("not_object", rng.choice(["[]", '"done"', "5", "null", "[" + text + "]"])),
        ("wrong_type", _with(base, id_key, rng.choice([[], {}, True, "", None]), job.provider)),
        ("nul_id", _with(base, id_key, job.task_id + "\x00", job.provider)),
        ("empty", b""),
    ]
    if job.provider in ("apiframe", "imaginepro"):
        key = "percentage" if job.provider == "apiframe" else "progress"
        cases.append(("bad_progress", _with(base, key, rng.choice(BAD_PROGRESS), job.provider)))
    if job.provider == "kie":
        prompt = rng.choice([DEEP, '{"a":' * 5_000, "[" * 20 + "]" * 20, "x" * 70_000])
        cases.append(("deep_prompt_json", _with(base, "promptJson", prompt, "kie")))
        cases.append(("code_overflow", _with(base, "code", 10**309, "kie")))
    if job.provider in ("apiframe", "useapi"):
        cases.append(("bad_status", _with(base, "status", rng.choice([5, [], {}]), job.provider)))
    out: list[tuple[str, bytes, str | None]] = []
    for kind, body in cases:
        raw = (
            body
            if isinstance(body, bytes)
            else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        )
        out.append((kind, raw, job.task_id))
    return out


class Corpus:
    """Requests as (kind, method, url, headers, body)."""

    def __init__(self, h: Harness, rng: random.Random) -> None:
        self.h = h
        self.rng = rng
        self.items: list[tuple[str, str, str, dict[str, Any], bytes]] = []

    def add(
        self, kind: str, method: str, path: str, headers: dict[str, Any], body: bytes = b""
    ) -> None:
        self.items.append((kind, method, self.h.base_url + path, headers, body))

    def callbacks(self, job: Job) -> None:
        path = job.callback_url.removeprefix(self.h.base_url)
        token = path.rsplit("/", 1)[1]
        for kind, body, task_id in refused_bodies(job, self.rng):
            self.add(f"{job.provider}:{kind}", "POST", path, job.auth_headers(task_id), body)
        good = json.dumps(job.completed_body()).encode()
        auth = job.auth_headers()
        rng = self.rng
        forged = token[:-4] + "".join(rng.choice("abcdXYZ_-") for _ in range(4))
        other = next(p for p in WEBHOOK_PROVIDERS if p != job.provider)
        odd = {**auth, "x-webhook-secret": rng.choice(["\xff\xfe", "é" * 300, "a\tb"])}
        if job.provider == "kie":
            odd["x-webhook-timestamp"] = rng.choice(["9" * 40, "-1", "\uff11\uff12\uff13", "1e9"])
        # providers without header credentials (the URL token is all): a body that must
        # be refused keeps these from being valid callbacks
        refused = json.dumps(_with(job.completed_body(), ID_FIELD[job.provider], 0.5, job.provider))
        for kind, where, headers, body in [
            ("forged_token", f"/callbacks/{job.provider}/{forged}", auth, good),
            ("deeper_token", f"/callbacks/{job.provider}/a/b/{token}", auth, good),
            ("token_after_slash", f"/callbacks/{job.provider}/{token}/", auth, good),
            ("other_provider", f"/callbacks/{other}/{token}", auth, good),
            ("unknown_provider", f"/callbacks/nope/{token}", auth, good),
            ("odd_headers", path, odd, refused.encode()),
            ("no_credentials", path, {}, refused.encode()),
            ("query_token", f"/callbacks/{job.provider}?token={token}", {}, good),
        ]:
            self.add(f"{job.provider}:{kind}", "POST", where, headers, body)
        self.add(f"{job.provider}:too_large", "POST", path, auth, b" " * (1024 * 1024 + 10))

    def account_callbacks(self) -> None:
        apiframe = next(j for j in self.h.jobs if j.provider == "apiframe")
        kie = next(j for j in self.h.jobs if j.provider == "kie")
        secret = {"x-webhook-secret": ACCOUNT_SECRET}
        for kind, body, _ in refused_bodies(apiframe, self.rng):
            self.add(f"apiframe-account:{kind}", "POST", "/callbacks/apiframe", secret, body)
        for kind, body, task_id in refused_bodies(kie, self.rng):
            self.add(
                f"kie-account:{kind}", "POST", "/callbacks/kie", kie.auth_headers(task_id), body
            )
        for provider in ("imaginepro", "useapi", "apimart", "nope"):
            self.add(f"{provider}-account:any", "POST", f"/callbacks/{provider}", {}, b"{}")
        stale = int(time.time()) - 3600
        stale_headers = {
            "x-webhook-timestamp": str(stale),
            "x-webhook-signature": kie_signature(kie.task_id, stale),
        }
        body = json.dumps(kie.completed_body()).encode()
        self.add("kie-account:stale_signature", "POST", "/callbacks/kie", stale_headers, body)

    def api(self) -> None:
        auth = self.h.api_headers
        huge = "9" * 4301
        for path in (
            f"/v1/jobs?limit={huge}",
            f"/v1/deliveries?limit={huge}",
            "/v1/jobs?limit=-1",
            "/v1/jobs?limit=0",
            "/v1/jobs?limit=99999999999",
            "/v1/jobs?limit=1e3",
            "/v1/deliveries?limit=%C2%B2",
            "/v1/jobs?status=nope",
            "/v1/jobs?status=" + "x" * 5000,
            "/v1/jobs?ref=%00",
            "/v1/deliveries?state=bogus",
            "/v1/deliveries?sink=%00&limit=5",
            "/v1/deliveries?job_id=" + "j" * 3000,
            "/v1/jobs/%00",
            "/v1/jobs/" + "x" * 3000,
        ):
            self.add("api:query", "GET", path, auth)
            self.add("api:no_auth", "GET", path, {"Authorization": "Bearer \xff"})
        # odd bytes in a text filter are just a filter that matches nothing
        self.add("api:read", "GET", "/v1/jobs?provider=%FF%FE&ref=%C3%28", auth)
        for body in (
            b'{"provider": "apiframe", "parent_id": NaN, "action": "U1"}',
            b'{"provider": "apiframe", "parent_id": "p\\u0000", "action": "U1"}',
            b'{"provider": "apiframe", "parent_id": "p", "action": "U1", "ref": "\\u0001"}',
            b'{"provider": 5}',
            b"[" * 10_000 + b"]" * 10_000,
            b'{"provider": "apiframe", "parent_id": "p", "action": "U1", "x": 1e400}',
            b"\xff",
        ):
            self.add("api:upscale", "POST", "/v1/upscales", auth, body)
        self.add(
            "api:upscale_key", "POST", "/v1/upscales", {**auth, "idempotency-key": "a\x01"}, b"{}"
        )
        for body in (b'{"state": NaN}', b'{"sink": "\\u0000"}', b"[]", b'{"state": "nope"}'):
            self.add("api:retry", "POST", "/v1/deliveries/retry", auth, body)
        self.add("api:retry_one", "POST", "/v1/deliveries/%00/retry", auth)
        self.add("api:retry_one", "POST", "/v1/deliveries/" + "d" * 3000 + "/retry", auth)


def _raw(value: str) -> bytes:
    """A header value as bytes: latin-1 where it fits (so "\xff" is the byte 0xff),
    else UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


async def _send(
    client: httpx.AsyncClient, item: tuple[str, str, str, dict[str, Any], bytes]
) -> tuple[str, int]:
    kind, method, url, headers, body = item
    raw_headers = [(k.encode("latin-1"), _raw(v)) for k, v in headers.items()]
    if body:
        raw_headers.append((b"content-type", b"application/json"))
    request = client.build_request(method, url, content=body or None, headers=raw_headers)
    response = await client.send(request)
    return kind, response.status_code


def _disconnect(port: int) -> None:
    """Content-Length 100, 10 bytes, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /callbacks/apiframe/whatever HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"task_id"'
        )
    time.sleep(0.05)


async def test_hostile_corpus_no_5xx_no_event_no_store_change(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    async with harness(tmp_path) as h:
        async with (
            relay_process(h.env, h.port, log_path=h.log_path),
            # idle connections expire well before uvicorn's 5 s keep-alive timeout, so a
            # loaded machine cannot make the client reuse one the server is closing
            httpx.AsyncClient(timeout=30, limits=httpx.Limits(keepalive_expiry=1.0)) as client,
        ):
            for provider in WEBHOOK_PROVIDERS:
                await h.submit(client, provider, "grid_nocallback")
            corpus = Corpus(h, rng)
            for _ in range(ROUNDS):
                for job in h.jobs:
                    corpus.callbacks(job)
                corpus.account_callbacks()
            corpus.api()
            rng.shuffle(corpus.items)
            before_rows, before_counts = h.snapshot(), h.counts()
            started = time.perf_counter()
            semaphore = asyncio.Semaphore(16)

            async def one(item: Any) -> tuple[str, int]:
                async with semaphore:
                    return await _send(client, item)

            results = await asyncio.gather(*(one(item) for item in corpus.items))
            disconnects = 5
            for _ in range(disconnects):
                await asyncio.to_thread(_disconnect, h.port)
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0.3)  # let a stray delivery (there must be none) show
            after_rows, after_counts = h.snapshot(), h.counts()
            delivered = len(h.recorder.received)
            # control: the routes were live, a valid callback still makes an event
            job = h.jobs[0]
            good = await client.post(
                job.callback_url, json=job.completed_body(), headers=job.auth_headers()
            )
            assert good.status_code == 200, good.text
        records = h.log_records()

    by_status = collections.Counter(status for _, status in results)
    server_errors = [(kind, status) for kind, status in results if status >= 500]
    accepted = [
        (kind, status) for kind, status in results if 200 <= status < 300 and kind != "api:read"
    ]
    print(
        f"\nhostile corpus (seed {SEED}): {len(results)} requests + {disconnects} disconnects"
        f" in {elapsed:.1f} s; statuses {dict(sorted(by_status.items()))};"
        f" 5xx: {len(server_errors)}; accepted: {len(accepted)};"
        f" store rows before {before_counts} after {after_counts}"
    )
    assert server_errors == []
    assert accepted == [], sorted(set(accepted))
    assert after_rows == before_rows
    assert delivered == 0

    errors = [r for r in records if r.get("level") in ("error", "critical")]
    assert errors == [], errors[:3]
    assert not any("exception" in r or "Traceback" in json.dumps(r) for r in records)
    requests = [r for r in records if r.get("event") == "http.request"]
    assert not any(r["status"] >= 500 for r in requests)
    gone = [r for r in requests if r["status"] == 499]
    assert len(gone) == disconnects
    assert all(r["level"] == "info" for r in gone)
    uvicorn = sum(1 for r in records if str(r.get("logger", "")).startswith("uvicorn"))
    text = "\n".join(h.log_lines())
    leaked = [s for s in h.secrets() if s in text]
    print(
        f"log: {len(records)} lines, all JSON ({uvicorn} from uvicorn), {len(gone)} client"
        " disconnects,"
        f" secrets leaked: {len(leaked)}"
    )
    assert leaked == []
