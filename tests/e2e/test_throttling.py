"""Throttling is not failure: a destination's 429 + Retry-After reschedules the
delivery at that time without using an attempt, and pauses the destination."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from tests.helpers.servers import serve_app
from tests.helpers.slack_standin import SlackStandin
from tests.helpers.stack import running_stack

EVENTS = 8


async def test_eight_events_to_a_one_per_second_slack_all_arrive_within_15_s(
    tmp_path: Path,
) -> None:
    """The stand-in allows 1 message/s with no burst; the sink (Slack's defaults: rate
    1/s, burst 3) overshoots at first and gets 429s. With the real retry schedule (a
    second try after 5 s, a third after 300 s) a spent attempt would push an event
    minutes out: all eight arrive within 15 s, each on its first counted attempt."""
    slack = SlackStandin()
    hook = slack.add_hook(rate_per_s=1, burst=1)
    async with serve_app(slack.app()) as slack_url:
        config = (
            f'[sinks.team]\ntype = "slack"\nurl = "{slack_url}{hook}"\n'
            "retry_schedule_s = [0, 5, 300, 1800, 7200]\n"
            '[[routes]]\nevents = ["upscale.completed"]\nsinks = ["team"]\n'
        )
        async with running_stack(tmp_path, extra_config=config) as stack:
            started = time.monotonic()
            for index in range(EVENTS):
                await stack.submit(provider="apiframe", parent_id=f"t{index}", action="U1")
            delivered = await stack.wait_deliveries(EVENTS, state="delivered", timeout=15)
            elapsed = time.monotonic() - started
            metrics = (await stack.api.get("/metrics")).text
    received = slack.hooks[hook]
    print(
        f"\nthrottling: {EVENTS} events to a 1 msg/s no-burst webhook in {elapsed:.1f} s,"
        f" {received.rate_limited} answers 429, attempts {[d['attempts'] for d in delivered]}"
    )
    print("accepted at", [round(t - started, 2) for t in received.accepted_at])
    assert elapsed < 15
    assert len(received.messages) == EVENTS
    assert received.rate_limited >= 1  # the stand-in did throttle: this test tested it
    assert all(d["attempts"] == 1 for d in delivered)
    assert 'relay_delivery_attempts_total{outcome="rate_limited",sink="team"}' in metrics
    # paced by the answers: never more than one message in any second after the burst
    accepted = received.accepted_at
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(accepted))
