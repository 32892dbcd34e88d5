"""The relay as real processes: ``python -m receiver serve`` and ``… worker``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.helpers.stack import API_TOKEN, SECRET_KEY


def relay_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a relay process on ``port`` with its store and config in ``tmp_path``."""
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
        "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RELAY_SECRET_KEY": SECRET_KEY,
        "RELAY_API_TOKEN": API_TOKEN,
        "RELAY_CONFIG": str(tmp_path / "relay.toml"),
        "RELAY_LOG_FORMAT": "json",
        **extra,
    }


def _stderr_of(process: subprocess.Popen[bytes], log_path: Path | None) -> str:
    if log_path is not None:
        return log_path.read_text(errors="replace")
    return process.stderr.read().decode(errors="replace") if process.stderr else ""


async def _wait_ready(
    base_url: str, process: subprocess.Popen[bytes], log_path: Path | None = None
) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            assert process.poll() is None, _stderr_of(process, log_path)
            try:
                if (await client.get(base_url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("relay did not become ready")


def _spawn(
    args: list[str], env: dict[str, str], log_path: Path | None
) -> tuple[subprocess.Popen[bytes], IO[bytes] | None]:
    """Start ``python -m receiver *args``; stderr goes to ``log_path`` when given (a
    busy process fills a pipe nobody reads, and blocks), else to a pipe."""
    log_file = log_path.open("wb") if log_path is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file if log_file is not None else subprocess.PIPE,
    )
    return process, log_file


def _stop(process: subprocess.Popen[bytes], log_file: IO[bytes] | None) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=15)
    if process.stderr:
        process.stderr.close()
    if log_file is not None:
        log_file.close()


@asynccontextmanager
async def relay_process(
    env: dict[str, str], port: int, *, log_path: Path | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``relay serve`` on 127.0.0.1:``port``, ready (``/readyz`` 200) when yielded."""
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    process, log_file = _spawn(args, env, log_path)
    try:
        await _wait_ready(f"http://127.0.0.1:{port}", process, log_path)
        yield process
    finally:
        _stop(process, log_file)


@asynccontextmanager
async def worker_process(
    env: dict[str, str], log_path: Path, *, ready: Callable[[str], bool] | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``relay worker``, yielded once its log shows ``worker.started`` (or ``ready``)."""
    process, log_file = _spawn(["worker"], env, log_path)
    check = ready or (lambda logs: '"worker.started"' in logs)
    try:
        for _ in range(300):
            assert process.poll() is None, _stderr_of(process, log_path)
            if check(log_path.read_text(errors="replace")):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("worker did not start")
        yield process
    finally:
        _stop(process, log_file)
