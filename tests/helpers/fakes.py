"""In-memory stand-ins for a sink and a provider, for unit tests of one collaborator
(``DeliveryWorker``, ``Ingestor``, ``Submitter``, ``Poller``) over a real store."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from handlers.providers import ProviderConfig, SubmitResult, SubmitSpec
from handlers.sinks.base import DeliveryNote, SinkAnswer, SinkConfig
from receiver.errors import DeliveryFailed, Unauthorized
from receiver.events import CallbackMode, Event, ProviderUpdate, UpdateState


class ScriptedSink:
    """A sink answering from a script: an ``int`` (or a ``SinkAnswer``) is a success
    with that status (None for a sink without one), a ``DeliveryNote`` a success with a
    note, a ``DeliveryFailed`` is raised. The last answer repeats."""

    type: ClassVar[str] = "scripted"

    def __init__(
        self,
        name: str = "hook",
        *answers: int | SinkAnswer | DeliveryNote | DeliveryFailed | None,
        **config: Any,
    ):
        self.config = SinkConfig(name, self.type, **config)
        self.answers: list[int | SinkAnswer | DeliveryNote | DeliveryFailed | None] = list(
            answers
        ) or [None]
        self.sent: Counter[str] = Counter()

    async def deliver(self, event: Event) -> SinkAnswer | DeliveryNote | int | None:
        self.sent[event.id] += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, DeliveryFailed):
            raise answer
        return answer

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


class FakeProvider:
    """A webhook provider: ``submit`` hands out task ids ``task-1`` …; a callback body
    is ``{"task": id, "state": "completed"|"failed"|"progress"}`` and is authentic when
    ``x-secret`` matches the job's secret; ``poll`` answers from ``polls`` by task id."""

    name: ClassVar[str] = "fake"
    default_base_url: ClassVar[str] = "http://127.0.0.1:9"
    callback_mode: ClassVar[CallbackMode] = CallbackMode.WEBHOOK
    mints_job_secret: ClassVar[bool] = True
    confirm_by_poll_default: ClassVar[bool] = False
    max_jobs_default: ClassVar[int | None] = None

    def __init__(self, **config: Any) -> None:
        self.config = ProviderConfig(self.name, "key", self.default_base_url, **config)
        self.submitted: list[SubmitSpec] = []
        self.polls: dict[str, ProviderUpdate] = {}
        self.polled: list[str] = []

    def supported_actions(self) -> tuple[str, ...]:
        return ("U1", "U2", "U3", "U4")

    async def submit(self, spec: SubmitSpec) -> SubmitResult:
        self.submitted.append(spec)
        return SubmitResult(provider_task_id=f"task-{len(self.submitted)}")

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, job_secret: str | None
    ) -> None:
        if headers.get("x-secret") != job_secret:
            raise Unauthorized("bad secret")

    def verify_account_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        raise Unauthorized("no account callbacks")

    def parse_callback(self, payload: Any) -> ProviderUpdate:
        state = UpdateState(payload["state"])
        image = "https://img.example/1.png" if state is UpdateState.COMPLETED else None
        return ProviderUpdate(payload["task"], state, image_url=image)

    async def poll(self, task_id: str) -> ProviderUpdate:
        self.polled.append(task_id)
        return self.polls.get(task_id, ProviderUpdate(task_id, UpdateState.PROGRESS))


def body(task: str, state: str = "completed") -> bytes:
    return json.dumps({"task": task, "state": state}).encode()
