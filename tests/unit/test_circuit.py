"""The per-sink circuit breaker's state machine, driven by an injected monotonic clock."""

from __future__ import annotations

from receiver.circuit import Circuit, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def paused_circuit(clock: Clock) -> Circuit:
    circuit = Circuit(threshold=3, probe_interval_s=30.0, clock=clock)
    for _ in range(3):
        circuit.failure("HTTP 503")
    assert circuit.state is CircuitState.PAUSED
    return circuit


def test_pauses_after_threshold_consecutive_failures() -> None:
    circuit = Circuit(threshold=3, probe_interval_s=30.0, clock=Clock())
    circuit.failure("HTTP 503")
    circuit.failure("HTTP 503")
    assert circuit.state is CircuitState.OK
    circuit.failure("timed out")
    assert (circuit.state, circuit.opened_count, circuit.last_error) == (
        CircuitState.PAUSED,
        1,
        "timed out",
    )


def test_a_success_resets_the_failure_count() -> None:
    circuit = Circuit(threshold=3, probe_interval_s=30.0, clock=Clock())
    circuit.failure("x")
    circuit.failure("x")
    circuit.success()
    circuit.failure("x")
    circuit.failure("x")
    assert circuit.state is CircuitState.OK
    assert circuit.closed_count == 0  # it never opened


def test_paused_becomes_probing_once_the_interval_has_passed() -> None:
    clock = Clock()
    circuit = paused_circuit(clock)
    clock.now += 29.9
    circuit.refresh()
    assert circuit.state is CircuitState.PAUSED
    clock.now += 0.1
    circuit.refresh()
    assert circuit.state is CircuitState.PROBING


def test_probe_success_closes_the_circuit() -> None:
    clock = Clock()
    circuit = paused_circuit(clock)
    clock.now += 30
    circuit.refresh()
    circuit.probe_in_flight = True
    circuit.success()
    assert (circuit.state, circuit.failures, circuit.probe_in_flight) == (
        CircuitState.OK,
        0,
        False,
    )
    assert (circuit.opened_count, circuit.closed_count) == (1, 1)


def test_probe_failure_pauses_again_for_another_interval() -> None:
    clock = Clock()
    circuit = paused_circuit(clock)
    clock.now += 30
    circuit.refresh()
    circuit.probe_in_flight = True
    circuit.failure("HTTP 502")
    assert (circuit.state, circuit.probe_in_flight) == (CircuitState.PAUSED, False)
    assert circuit.opened_count == 1  # the same opening, not a new one
    clock.now += 29
    circuit.refresh()
    assert circuit.state is CircuitState.PAUSED  # the interval restarts at the failed probe
    clock.now += 1
    circuit.refresh()
    assert circuit.state is CircuitState.PROBING


def test_a_permanent_error_counts_as_up_and_keeps_the_error() -> None:
    clock = Clock()
    circuit = paused_circuit(clock)
    clock.now += 30
    circuit.refresh()
    circuit.success(error="HTTP 410: gone")
    assert (circuit.state, circuit.last_error) == (CircuitState.OK, "HTTP 410: gone")
    for _ in range(2):
        circuit.failure("x")
    circuit.success(error="HTTP 400")
    circuit.failure("x")
    assert circuit.state is CircuitState.OK  # the count restarted at the permanent error
