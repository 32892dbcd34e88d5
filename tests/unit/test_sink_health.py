"""The shared circuit's transitions (the reference both stores' SQL follows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from receiver.sink_health import HealthChange, HealthState, SinkHealth, apply_change

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def fail(health: SinkHealth, at: datetime = T0, threshold: int = 3) -> SinkHealth:
    return apply_change(health, HealthChange(health.sink, False, "HTTP 503", threshold, at))


def up(health: SinkHealth, error: str | None = None) -> SinkHealth:
    return apply_change(health, HealthChange(health.sink, True, error, 3, T0))


def test_pauses_after_threshold_failures_in_a_row() -> None:
    health = SinkHealth("app")
    health = fail(fail(health))
    assert (health.state, health.failures) == (HealthState.OK, 2)
    health = up(health)
    assert (health.state, health.failures) == (HealthState.OK, 0)
    for _ in range(3):
        health = fail(health)
    assert health.state is HealthState.PAUSED
    assert health.opened_at == T0
    assert health.opened_count == 1
    assert health.last_error == "HTTP 503"
    later = fail(health, T0 + timedelta(seconds=5))
    assert later.opened_at == T0  # a late failure does not push the probe back
    assert later.opened_count == 1


def test_probe_is_due_after_the_interval_and_its_outcome_decides() -> None:
    paused = SinkHealth("app", HealthState.PAUSED, 3, opened_at=T0, opened_count=1)
    assert not paused.probe_due(T0 + timedelta(seconds=29), 30)
    assert paused.probe_due(T0 + timedelta(seconds=30), 30)
    probing = SinkHealth(
        "app", HealthState.PROBING, 3, opened_at=T0, probe_until=T0 + timedelta(seconds=60)
    )
    assert not probing.probe_due(T0 + timedelta(seconds=59), 30)
    assert probing.probe_due(T0 + timedelta(seconds=60), 30)  # the prober died
    again = fail(probing, T0 + timedelta(seconds=40))
    assert again.state is HealthState.PAUSED
    assert again.opened_at == T0 + timedelta(seconds=40)
    assert again.probe_until is None
    closed = up(probing)
    assert closed.state is HealthState.OK
    assert closed.closed_count == 1
    assert not SinkHealth("app").probe_due(T0, 0)


def test_a_permanent_error_means_the_sink_is_up_but_is_kept() -> None:
    health = fail(fail(SinkHealth("app")))
    health = up(health, "HTTP 410: gone")
    assert health.state is HealthState.OK
    assert health.failures == 0
    assert health.last_error == "HTTP 410: gone"
    assert up(health).last_error == "HTTP 410: gone"


def test_threshold_one_pauses_at_the_first_failure() -> None:
    assert fail(SinkHealth("app"), threshold=1).state is HealthState.PAUSED
