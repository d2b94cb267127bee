"""The node's collector settings: collect less often, never more often than asked."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from exchange import runtime


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_generation_0_is_collected_less_often_and_the_older_generations_keep_theirs() -> None:
    gc.set_threshold(700, 7, 9)
    runtime.tune_collector()
    assert gc.get_threshold() == (runtime.GEN0_THRESHOLD, 7, 9)
    assert gc.get_freeze_count() > 0  # what existed is out of later collections


def test_a_higher_threshold_or_a_disabled_collector_is_left_as_it_is() -> None:
    gc.set_threshold(runtime.GEN0_THRESHOLD * 5, 10, 10)
    runtime.tune_collector()
    assert gc.get_threshold() == (runtime.GEN0_THRESHOLD * 5, 10, 10)
    gc.set_threshold(0, 10, 10)  # 0: automatic collection is off, and stays off
    runtime.tune_collector()
    assert gc.get_threshold() == (0, 10, 10)


def test_a_periodic_thread_ticks_until_stopped_then_not_again_and_can_start_again() -> None:
    import threading
    import time

    ticks: list[int] = []

    def wait_for(count: int) -> bool:
        deadline = time.monotonic() + 30
        while len(ticks) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return len(ticks) >= count

    periodic = runtime.Periodic("test-periodic", 0.01, lambda: ticks.append(1), at_start=True)
    periodic.start()
    periodic.start()  # already running: still one thread
    assert sum(t.name == "test-periodic" for t in threading.enumerate()) == 1
    assert wait_for(3)
    periodic.stop()
    assert periodic.stopping
    assert not any(t.name == "test-periodic" for t in threading.enumerate())
    count = len(ticks)
    time.sleep(0.1)
    assert len(ticks) == count  # no tick once stop has returned
    periodic.start()
    assert not periodic.stopping
    assert wait_for(count + 1)
    periodic.stop()


def test_a_periodic_thread_waits_its_interval_before_the_first_tick_unless_told() -> None:
    ticks: list[int] = []
    periodic = runtime.Periodic("test-periodic-late", 3600.0, lambda: ticks.append(1))
    periodic.start()
    periodic.stop()  # returns at once: the thread was waiting, not ticking
    assert ticks == []
