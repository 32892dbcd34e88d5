"""``type = "file"``: append each event as one JSON line (local use, the demo)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from handlers.sinks.base import SinkAnswer, SinkConfig, required_options
from handlers.sinks.client import HttpClient
from receiver.errors import DeliveryFailed
from receiver.events import Event


class FileSink:
    """Append ``event.to_json()`` plus a newline to ``path`` and fsync it. A redelivery
    appends again: readers deduplicate on ``id`` as with any at-least-once sink."""

    type: ClassVar[str] = "file"
    options_keys: ClassVar[frozenset[str]] = frozenset({"path"})

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        self._path = Path(str(config.options["path"]))
        self._lock = asyncio.Lock()

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        return required_options(options, "path")

    def _append(self, line: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def deliver(self, event: Event) -> SinkAnswer:
        line = (event.to_json() + "\n").encode()
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                raise DeliveryFailed(f"cannot write {self._path}: {exc.strerror}") from exc
        return SinkAnswer(None, f"appended {len(line)} bytes to {self._path.name}".encode())

    async def aclose(self) -> None:
        return None
