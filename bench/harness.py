"""What the benchmarks share: processes on 127.0.0.1, a fresh store per run (a SQLite file or
a PostgreSQL schema), seeded jobs and events, load generators, and figures.

Every process is a real one (``python -m receiver serve|worker``, ``bench/servers.py``), logs
at the default level into a file, and is reaped with ``wait4`` so its CPU time and peak RSS
can be printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET_KEY = "bench-secret-key"
API_TOKEN = "bench-api-token"
ACCOUNT_SECRET = "bench-account-secret"
SINK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SINK_CONCURRENCY = 8  # the http sink's max_concurrency (its default)


@dataclass(frozen=True)
class Callback:
    """One provider callback to send: path, the Apiframe secret header, body."""

    path: str
    secret: str
    body: bytes


@dataclass
class Usage:
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    usage: Usage = field(default_factory=Usage)

    def peak_rss_mb(self) -> float:
        """``VmHWM``: the peak RSS of the program itself. (``wait4``'s ``ru_maxrss`` is
        no good here: it keeps the high-water mark of the forked parent's memory from
        before ``exec``, i.e. of the benchmark process.)"""
        try:
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def stop(self) -> Usage:
        """SIGTERM, then reap with ``wait4`` for CPU time; peak RSS from ``VmHWM``."""
        if self.popen.returncode is None:
            peak_mb = self.peak_rss_mb()
            self.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while True:
                pid, status, rusage = os.wait4(self.popen.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    self.popen.kill()
                time.sleep(0.05)
            self.popen.returncode = status
            self.usage = Usage(rusage.ru_utime + rusage.ru_stime, peak_mb)
        return self.usage

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: Sequence[str], env: dict[str, str], log_path: Path) -> Proc:
    switch = os.environ.get("BENCH_SWITCH_INTERVAL")
    if switch and args[0] == "-m":  # an experiment: the relay with another GIL switch interval
        code = f"import runpy, sys; sys.setswitchinterval({float(switch)}); "
        code += f"sys.argv = ['relay', *{list(args[2:])!r}]; runpy.run_module('{args[1]}', "
        code += "run_name='__main__', alter_sys=True)"
        args = ["-c", code]
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT
        )
    profile_dir = os.environ.get("BENCH_PYSPY")
    if profile_dir and args[0] in ("-m", "-c"):
        # a py-spy profile of each relay process (collapsed stacks), written when it exits;
        # BENCH_PYSPY_NATIVE=1 adds C frames (SQLite, libc), pausing the process per sample
        out = Path(profile_dir) / f"{log_path.stem}.txt"
        subprocess.Popen(
            [
                *("py-spy", "record", "--pid", str(popen.pid), "--format", "raw"),
                *("--rate", "250", "--threads", "--output", str(out)),
                *(["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else ["--nonblocking"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return Proc(popen, log_path)


async def wait_ready(url: str, proc: Proc, timeout_s: float = 30.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.popen.args} exited:\n{proc.log()[-3000:]}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not ready:\n{proc.log()[-3000:]}")


@asynccontextmanager
async def served(kind: str, workdir: Path, *extra: str) -> AsyncIterator[tuple[Proc, str]]:
    """``bench/servers.py kind`` on a free port: (process, base URL)."""
    port = free_port()
    proc = spawn(
        [str(ROOT / "bench" / "servers.py"), kind, str(port), *extra],
        dict(os.environ),
        workdir / f"{kind}-{port}.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base + ("/stats" if kind == "sink" else "/readyz"), proc)
        yield proc, base
    finally:
        proc.stop()


def write_config(
    workdir: Path, sink_url: str, concurrency: int = SINK_CONCURRENCY, name: str = "relay"
) -> Path:
    """One Apiframe provider (per-job secrets, account-level callbacks) and one http sink
    with ``concurrency`` deliveries in flight per process."""
    path = workdir / f"{name}.toml"
    path.write_text(
        f"""
[providers.apiframe]
api_key = "bench-key"
base_url = "http://127.0.0.1:9/apiframe"
account_webhook_secret = "{ACCOUNT_SECRET}"

[sinks.hook]
type = "http"
url = "{sink_url}/hooks"
secret = "{SINK_SECRET}"
max_concurrency = {concurrency}
"""
    )
    return path


def relay_env(database_url: str, config: Path, mode: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "RELAY_CONFIG": str(config),
        "RELAY_SECRET_KEY": SECRET_KEY,
        "RELAY_API_TOKEN": API_TOKEN,
        "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RELAY_DELIVERY_MODE": mode,
    }


@asynccontextmanager
async def relay_serve(
    database_url: str, config: Path, mode: str, workdir: Path
) -> AsyncIterator[tuple[Proc, str]]:
    """``relay serve`` (in ``mode``): (process, base URL), ready."""
    port = free_port()
    proc = spawn(
        ["-m", "receiver", "serve", "--host", "127.0.0.1", "--port", str(port)],
        relay_env(database_url, config, mode, port),
        workdir / f"serve-{mode}-{port}.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base + "/readyz", proc)
        yield proc, base
    finally:
        proc.stop()


def relay_worker(database_url: str, config: Path, workdir: Path) -> Proc:
    """``relay worker`` (it starts delivering as soon as it is up)."""
    env = relay_env(database_url, config, "external", free_port())
    return spawn(["-m", "receiver", "worker"], env, workdir / f"worker-{time.time_ns()}.log")


async def wait_ready_worker(proc: Proc, timeout_s: float = 30.0) -> None:
    """Until ``relay worker`` logged ``worker.started``."""
    deadline = time.monotonic() + timeout_s
    while "worker.started" not in proc.log():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"relay worker did not start:\n{proc.log()[-3000:]}")
        await asyncio.sleep(0.05)


# -- stores -------------------------------------------------------------------------------


def backends() -> list[str]:
    """``sqlite``, plus ``postgres`` when ``RELAY_TEST_PG`` is set."""
    return ["sqlite", "postgres"] if os.environ.get("RELAY_TEST_PG") else ["sqlite"]


@asynccontextmanager
async def fresh_database(backend: str, workdir: Path) -> AsyncIterator[str]:
    """A ``DATABASE_URL`` nobody used yet: a new SQLite file or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / ('relay-' + secrets.token_hex(4) + '.db')}"
        return
    import asyncpg

    dsn = os.environ["RELAY_TEST_PG"]
    schema = "relay_bench_" + secrets.token_hex(4)
    joiner = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{joiner}schema={schema}"
    finally:
        connection = await asyncpg.connect(dsn)
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await connection.close()


async def store_counts(database_url: str) -> tuple[int, dict[str, int]]:
    """(events, deliveries per state) of a store."""
    events_sql = "SELECT count(*) FROM events"
    states_sql = "SELECT state, count(*) FROM deliveries GROUP BY state"
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            events = connection.execute(events_sql).fetchone()[0]
            states = dict(connection.execute(states_sql).fetchall())
        finally:
            connection.close()
        return int(events), {str(k): int(v) for k, v in states.items()}
    import asyncpg

    from receiver.store import split_schema

    dsn, schema = split_schema(database_url)
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        events = await connection.fetchval(events_sql)
        states = {row[0]: row[1] for row in await connection.fetch(states_sql)}
    finally:
        await connection.close()
    return int(events), states


async def _gather_limited(coroutines: Any, limit: int = 64) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))


async def seed_jobs(database_url: str, count: int) -> list[Callback]:
    """``count`` submitted Apiframe jobs (each with its task id and secret) in the store,
    and the signed per-job callback that completes each."""
    from receiver.events import CallbackMode, Job, JobStatus, new_ordered_id, utcnow
    from receiver.store import open_store
    from receiver.tokens import CallbackTokens, new_job_secret

    tokens = CallbackTokens([SECRET_KEY], max_age_s=86400)
    store = open_store(database_url)
    now = utcnow()
    run = secrets.token_hex(3)
    jobs = [
        Job(
            id=new_ordered_id("job"),
            provider="apiframe",
            parent_id=f"parent-{run}-{n}",
            action="U1",
            ref=None,
            status=JobStatus.PROCESSING,
            callback_mode=CallbackMode.WEBHOOK,
            created_at=now,
            provider_task_id=f"task-{run}-{n}",
            callback_secret=new_job_secret(),
            submitted_at=now,
            next_poll_at=now + timedelta(hours=1),  # the poller leaves them alone
            deadline_at=now + timedelta(hours=2),
        )
        for n in range(count)
    ]
    try:
        await store.migrate()
        await _gather_limited(store.create_job(job) for job in jobs)
    finally:
        await store.close()
    return [
        Callback(
            f"/callbacks/apiframe/{tokens.mint(job.id, 'apiframe')}",
            job.callback_secret or "",
            _completed_body(job.provider_task_id or ""),
        )
        for job in jobs
    ]


def account_callbacks(count: int) -> list[Callback]:
    """``count`` account-level Apiframe callbacks, each for a task of its own."""
    run = secrets.token_hex(3)
    return [
        Callback("/callbacks/apiframe", ACCOUNT_SECRET, _completed_body(f"acct-{run}-{n}"))
        for n in range(count)
    ]


def _completed_body(task_id: str) -> bytes:
    return json.dumps(
        {
            "task_id": task_id,
            "task_type": "upscale#1",
            "image_url": f"https://cdn.example.net/{task_id}.png",
        }
    ).encode()


async def seed_events(database_url: str, count: int, sinks: Sequence[str]) -> None:
    """``count`` committed events, each with one pending delivery per sink in ``sinks``."""
    from receiver.events import ProviderUpdate, UpdateState, build_event, utcnow
    from receiver.store import Ingest, open_store

    store = open_store(database_url)
    run = secrets.token_hex(3)
    now = utcnow()

    def record(n: int) -> Ingest:
        update = ProviderUpdate(
            f"seed-{run}-{n}", UpdateState.COMPLETED, image_url=f"https://cdn.example.net/{n}.png"
        )
        event = build_event("apiframe", update, None, now)
        return Ingest(event=event, job_id=None, job_status=None, sinks=list(sinks), now=now)

    try:
        await store.migrate()
        await _gather_limited(store.ingest(record(n)) for n in range(count))
    finally:
        await store.close()


# -- the sink -----------------------------------------------------------------------------


async def sink_get(sink_url: str, what: str) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{sink_url}/{what}") as response:
        return await response.json()


async def sink_reset(sink_url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(f"{sink_url}/reset") as response:
        await response.read()


async def wait_sink(sink_url: str, count: int, timeout_s: float, proc: Proc | None = None) -> Any:
    """Sink stats once ``count`` distinct events arrived, or when nothing new came for
    ``timeout_s`` (then fewer: the caller reports it)."""
    last_change, seen = time.monotonic(), -1
    while True:
        stats = await sink_get(sink_url, "stats")
        if stats["distinct"] >= count:
            return stats
        if stats["distinct"] != seen:
            seen, last_change = stats["distinct"], time.monotonic()
        if time.monotonic() - last_change > timeout_s:
            return stats
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.popen.args} exited:\n{proc.log()[-3000:]}")
        await asyncio.sleep(0.05)


# -- load generators ----------------------------------------------------------------------


@dataclass
class Load:
    """What a load run measured (latencies in ms)."""

    tool: str
    requests: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


_WRK_SCRIPT = """
local requests, n, i = {}, 0, 0
function init(args)
  for line in io.lines(args[1]) do
    local path, secret, body = line:match("^([^\\t]*)\\t([^\\t]*)\\t(.*)$")
    n = n + 1
    requests[n] = wrk.format("POST", path,
      {["content-type"] = "application/json", ["x-webhook-secret"] = secret}, body)
  end
end
function request()
  i = i + 1
  if i > n then i = 1 end
  return requests[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK %d %d %d %.3f %.3f\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1e3) .. string.format("WRKP99 %.3f\\n", latency:percentile(99) / 1e3))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


async def run_load(
    base_url: str, callbacks: Sequence[Callback], connections: int, duration_s: float
) -> Load:
    """``wrk -t1 -cN -dDs`` when installed, else the built-in generator."""
    if wrk_available():
        return await _run_wrk(base_url, callbacks, connections, duration_s)
    return await run_builtin(base_url, callbacks, connections, duration_s)


async def _run_wrk(
    base_url: str, callbacks: Sequence[Callback], connections: int, duration_s: float
) -> Load:
    with tempfile.TemporaryDirectory() as tmp:
        script, data = Path(tmp) / "callbacks.lua", Path(tmp) / "callbacks.tsv"
        script.write_text(_WRK_SCRIPT)
        data.write_bytes(
            b"".join(f"{c.path}\t{c.secret}\t".encode() + c.body + b"\n" for c in callbacks)
        )
        process = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(duration_s)}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base_url,
            "--",
            str(data),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
    text = out.decode()
    fields = next(line for line in text.splitlines() if line.startswith("WRK ")).split()
    p99 = next(line for line in text.splitlines() if line.startswith("WRKP99")).split()[1]
    requests, bad_status, errors = int(fields[1]), int(fields[2]), int(fields[3])
    return Load(
        "wrk",
        requests,
        requests - bad_status,
        float(fields[4]),
        float(fields[5]),
        float(p99),
        errors + bad_status,
    )


async def run_builtin(
    base_url: str,
    callbacks: Sequence[Callback],
    connections: int,
    duration_s: float,
    acked: list[str] | None = None,
) -> Load:
    """``connections`` keep-alive loops (aiohttp) sending ``callbacks`` in order for
    ``duration_s``; event ids of the 2xx answers go to ``acked``."""
    import aiohttp

    latencies: list[float] = []
    counts = {"sent": 0, "ok": 0, "errors": 0}
    started = time.monotonic()
    deadline = started + duration_s
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base_url, connector=connector) as session:

        async def loop() -> None:
            while time.monotonic() < deadline:
                index = counts["sent"] % len(callbacks)
                counts["sent"] += 1
                callback = callbacks[index]
                sent = time.monotonic()
                headers = {"content-type": "application/json", "x-webhook-secret": callback.secret}
                try:
                    async with session.post(
                        callback.path, data=callback.body, headers=headers
                    ) as response:
                        answer = await response.read()
                        status = response.status
                except aiohttp.ClientError:
                    counts["errors"] += 1
                    continue
                latencies.append(1000 * (time.monotonic() - sent))
                if 200 <= status < 300:
                    counts["ok"] += 1
                    if acked is not None:
                        acked.append(json.loads(answer)["event_id"])
                else:
                    counts["errors"] += 1

        await asyncio.gather(*(loop() for _ in range(connections)))
    seconds = time.monotonic() - started
    return Load(
        "built-in",
        counts["sent"],
        counts["ok"],
        seconds,
        pct(latencies, 0.50),
        pct(latencies, 0.99),
        counts["errors"],
    )


async def run_paced(
    base_url: str, callbacks: Sequence[Callback], rate_per_s: float
) -> tuple[dict[str, float], int]:
    """Send every callback on a fixed schedule (``rate_per_s``, open loop). Returns the
    acknowledged event ids with their *scheduled* send times (so a slow answer cannot hide
    queueing), and how many were not acknowledged."""
    import aiohttp

    sent: dict[str, float] = {}
    failures = [0]
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base_url, connector=connector) as session:

        async def one(callback: Callback, at: float) -> None:
            headers = {"content-type": "application/json", "x-webhook-secret": callback.secret}
            try:
                async with session.post(callback.path, data=callback.body, headers=headers) as r:
                    answer = await r.read()
                    if r.status == 200:
                        sent[json.loads(answer)["event_id"]] = at
                        return
            except aiohttp.ClientError:
                pass
            failures[0] += 1

        tasks = []
        start = time.monotonic() + 0.05
        for n, callback in enumerate(callbacks):
            at = start + n / rate_per_s
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(callback, at)))
        await asyncio.gather(*tasks)
    return sent, failures[0]


# -- figures ------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, "
        f"load average {load:.1f} at start"
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (so a run pastes straight into the README)."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    sys.stdout.flush()


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="relay-bench-")
