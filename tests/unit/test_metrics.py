"""``/metrics``: the gauges people alert on, read from the store, and exposition text
that passes the checks ``promtool check metrics`` makes (parsed with
prometheus_client's own parser)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from receiver.events import utcnow
from receiver.metrics import Metrics
from receiver.store import DeliveryFilter
from receiver.store.sqlite import SqliteStore
from tests.store.factories import make_ingest

_UNIT_ABBREVIATIONS = re.compile(
    r"_(ms|us|ns|sec|secs|mins|hrs|milliseconds|microseconds|nanoseconds|minutes|hours|days"
    r"|kb|mb|gb|kib|mib|percent)(_|$)"
)


def promtool_problems(text: str) -> list[str]:
    """promtool's lint rules (util/promlint) over exposition ``text``."""
    problems: list[str] = []
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for family in text_string_to_metric_families(text):
        name = family.name
        declared = name + "_total" if family.type == "counter" else name
        if declared not in helps and name not in helps:
            problems.append(f"{name}: no help text")
        if declared not in types and name not in types:
            problems.append(f"{name}: no TYPE line")
        if re.search(r"[A-Z]", name) or ":" in name:
            problems.append(f"{name}: not snake_case")
        if _UNIT_ABBREVIATIONS.search(name):
            problems.append(f"{name}: use base units (seconds, bytes) spelled out")
        if re.search(r"_(gauge|counter|histogram|summary)(_|$)", name):
            problems.append(f"{name}: the type in the name")
        for sample in family.samples:
            if family.type == "counter":
                if not sample.name.endswith(("_total", "_created")):
                    problems.append(f"{sample.name}: a counter without _total")
            elif sample.name.endswith("_total"):
                problems.append(f"{sample.name}: _total on a {family.type}")
            if family.type not in ("histogram", "summary") and sample.name.endswith(
                ("_count", "_sum", "_bucket")
            ):
                problems.append(f"{sample.name}: histogram suffix on a {family.type}")
            if family.type != "histogram" and "le" in sample.labels:
                problems.append(f"{sample.name}: reserved label le")
    return problems


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_store_gauges_and_histograms_render_clean(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.db")
    try:
        await store.migrate()
        for n in range(3):
            await store.ingest(make_ingest(None, task=f"t{n}", sinks=("team", "archive")))
        archive = await store.list_deliveries(DeliveryFilter(sink="archive"))
        await store.mark_dead(archive[0].id, status=410, error="gone", now=utcnow())
        metrics = Metrics()
        metrics.callbacks.labels("apiframe", "accepted").inc()
        metrics.callback_seconds.labels("apiframe").observe(0.004)
        now = utcnow()
        metrics.observe_job("apiframe", "completed", now - timedelta(seconds=42), now)
        await metrics.refresh(store, ["team", "archive", "idle"], now)
        body, _ = metrics.render()
        text = body.decode()
    finally:
        await store.close()
    assert promtool_problems(text) == []
    found = samples(text)
    assert found[("relay_sink_backlog", (("sink", "team"),))] == 3
    assert found[("relay_sink_backlog", (("sink", "archive"),))] == 2
    assert found[("relay_sink_backlog", (("sink", "idle"),))] == 0
    assert found[("relay_sink_dead_letters", (("sink", "archive"),))] == 1
    assert found[("relay_sink_dead_letters", (("sink", "team"),))] == 0
    age = found[("relay_sink_oldest_pending_age_seconds", (("sink", "team"),))]
    assert age > 60  # the factory's events are old
    assert found[("relay_sink_oldest_pending_age_seconds", (("sink", "idle"),))] == 0
    assert found[("relay_sink_circuit", (("sink", "team"), ("state", "ok")))] == 1
    assert found[("relay_sink_circuit", (("sink", "team"), ("state", "paused")))] == 0
    job = (("provider", "apiframe"), ("status", "completed"))
    assert found[("relay_job_duration_seconds_count", job)] == 1
    assert found[("relay_job_duration_seconds_sum", job)] == 42
    assert found[("relay_callback_duration_seconds_count", (("provider", "apiframe"),))] == 1


def test_the_lint_catches_what_promtool_would() -> None:
    bad = (
        "# HELP jobs_ms Job time\n# TYPE jobs_ms gauge\njobs_ms 3\n"
        "# TYPE no_help gauge\nno_help 1\n"
        "# HELP hits_total Hits\n# TYPE hits_total gauge\nhits_total 1\n"
    )
    problems = promtool_problems(bad)
    assert any("base units" in p for p in problems)
    assert any("no help" in p for p in problems)
    assert any("_total on a gauge" in p for p in problems)
