"""``tuned_gc``: start-up frozen and young collections rarer while the app runs;
both undone when it stops."""

from __future__ import annotations

import gc

from receiver.gc_tuning import THRESHOLDS, tuned_gc


def test_tuned_gc_freezes_and_restores() -> None:
    saved = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    marker = [object()]
    with tuned_gc():
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > frozen_before
        assert not any(marker is obj for obj in gc.get_objects())  # frozen: out of sight
    assert gc.get_threshold() == saved
    assert gc.get_freeze_count() == 0
    assert any(marker is obj for obj in gc.get_objects())


def test_a_cycle_made_while_tuned_is_still_collected() -> None:
    class Node:
        other: object = None

    with tuned_gc():
        first, second = Node(), Node()
        first.other, second.other = second, first
        del first, second
        assert gc.collect() >= 2


def test_overlapping_apps_restore_once_the_last_stops() -> None:
    saved = gc.get_threshold()
    first, second = tuned_gc(), tuned_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold() == THRESHOLDS  # the second app still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == saved
