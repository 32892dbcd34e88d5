"""Which sinks get which event: a pure function of the routes and the event."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from receiver.events import Event


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[routes]]`` table: events matching every filter go to ``sinks``."""

    sinks: tuple[str, ...]
    events: tuple[str, ...] = ("*",)
    providers: tuple[str, ...] = ("*",)
    ref_prefix: str | None = None

    def matches(self, event: Event) -> bool:
        data = event.data
        if not any(fnmatchcase(event.type.value, pattern) for pattern in self.events):
            return False
        if not any(fnmatchcase(data["provider"], pattern) for pattern in self.providers):
            return False
        if self.ref_prefix is not None:
            ref = data["ref"] or ""
            return ref.startswith(self.ref_prefix)
        return True


def route_event(
    event: Event,
    routes: Sequence[Route],
    all_sinks: Iterable[str],
    job_sinks: Sequence[str] | None = None,
) -> list[str]:
    """The sink names an event goes to, in a stable order, each once.

    A job's own ``sinks`` list (from the submit body) overrides the routes for that
    job's events. With no routes configured at all, every sink gets every event.
    """
    if job_sinks is not None:
        chosen: Iterable[str] = job_sinks
    elif not routes:
        chosen = all_sinks
    else:
        chosen = (sink for route in routes if route.matches(event) for sink in route.sinks)
    return list(dict.fromkeys(chosen))
