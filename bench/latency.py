"""Callback → sink latency and callback throughput, end to end on real sockets.

Runs the relay (SQLite, in-process worker) with one http sink (a local receiver), posts
N signed Apiframe callbacks with C concurrent clients, and prints how long callbacks took
to be acknowledged and how long each event took from acknowledgement to the sink.

    .venv/bin/python bench/latency.py [N] [C]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver.logs import configure_logging
from tests.helpers.recorder import Recorder
from tests.helpers.stack import running_stack


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(total: int, concurrency: int) -> None:
    configure_logging("json", "warning")
    recorder = Recorder()
    route = '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'
    with tempfile.TemporaryDirectory() as tmp:
        async with running_stack(Path(tmp), extra_config=route, recorder=recorder) as stack:
            jobs = []
            for i in range(total):
                job = await stack.submit(
                    provider="apiframe", parent_id=f"b{i}-nocallback", action="U1"
                )
                jobs.append(stack.sim("apiframe").state.book.get(job["provider_task_id"]))
            acked: dict[str, float] = {}
            ack_ms: list[float] = []
            queue: asyncio.Queue[object] = asyncio.Queue()
            for task in jobs:
                queue.put_nowait(task)

            async def client_loop(client: httpx.AsyncClient) -> None:
                while not queue.empty():
                    task = queue.get_nowait()
                    started = time.perf_counter()
                    response = await client.post(
                        task.callback_url,  # type: ignore[attr-defined]
                        json={"task_id": task.id, "image_url": task.image_url},  # type: ignore[attr-defined]
                        headers={"x-webhook-secret": task.extra["webhook_secret"]},  # type: ignore[attr-defined]
                    )
                    assert response.status_code == 200, response.text
                    done = time.perf_counter()
                    ack_ms.append(1000 * (done - started))
                    acked[task.id] = done  # type: ignore[attr-defined]

            arrival: dict[str, float] = {}

            async def watch() -> None:
                seen = 0
                while len(arrival) < total:
                    recorder.arrived.clear()
                    for received in recorder.received[seen:]:
                        task_id = received.json["data"]["provider_task_id"]
                        arrival.setdefault(task_id, time.perf_counter())
                    seen = len(recorder.received)
                    if len(arrival) < total:
                        await recorder.arrived.wait()

            watcher = asyncio.create_task(watch())
            started = time.perf_counter()
            async with httpx.AsyncClient(
                limits=httpx.Limits(max_connections=concurrency)
            ) as client:
                await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
            ingest_s = time.perf_counter() - started
            await asyncio.wait_for(watcher, timeout=60)
            lag_ms = [1000 * max(0.0, arrival[t] - acked[t]) for t in acked]
    print(f"callbacks: {total} with {concurrency} concurrent clients")
    print(f"ingest throughput: {total / ingest_s:.0f} callbacks/s (each fsynced before 200)")
    print(f"ack latency ms: p50 {statistics.median(ack_ms):.1f}  p95 {_pct(ack_ms, 0.95):.1f}")
    print(f"ack → sink ms:  p50 {statistics.median(lag_ms):.1f}  p95 {_pct(lag_ms, 0.95):.1f}")


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 300,
            int(sys.argv[2]) if len(sys.argv) > 2 else 16,
        )
    )
