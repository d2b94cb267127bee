"""Searches take turns (exchange/node/lane.py): at most ``width`` at once, in arrival order,
and a long one gives way between chunks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import pytest

from exchange.config import Limits
from exchange.errors import ConfigError
from exchange.node.lane import Lane

WAIT = 5.0  # seconds: what a test allows a thread to reach a point it must reach


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the expected state was not reached"
        time.sleep(0.001)


def _queued(lane: Lane, names: list[str], order: list[str]) -> list[threading.Thread]:
    """One thread per name, each queued behind the one before: each takes a turn, notes its name."""

    def take(name: str) -> None:
        with lane:
            order.append(name)

    threads = []
    for queued, name in enumerate(names, start=lane.waiting + 1):
        thread = threading.Thread(target=take, args=(name,))
        thread.start()
        _until(partial(_waiting_is, lane, queued))  # queued in this order
        threads.append(thread)
    return threads


def _waiting_is(lane: Lane, count: int) -> bool:
    return lane.waiting == count


def test_turns_are_taken_one_at_a_time_in_arrival_order() -> None:
    lane = Lane(1)
    order: list[str] = []
    lane.acquire()  # the test holds the only turn while the others queue
    assert lane.busy
    threads = _queued(lane, ["a", "b", "c", "d"], order)
    assert order == []  # nobody ran beside the holder
    lane.release()
    for thread in threads:
        thread.join(WAIT)
    assert order == ["a", "b", "c", "d"]
    assert lane.waiting == 0 and not lane.busy
    lane.acquire()  # every turn came back: the lane is free again
    lane.release()


def test_a_wider_lane_runs_that_many_at_once_and_no_more() -> None:
    lane = Lane(2)
    inside, most = [0], [0]
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        with lane:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(WAIT)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(5)]
    for thread in threads:
        thread.start()
    _until(lambda: inside[0] == 2 and lane.waiting == 3)
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert most[0] == 2
    assert inside[0] == 0 and lane.waiting == 0


def test_giving_way_lets_the_waiting_go_first_then_resumes() -> None:
    lane = Lane(1)
    order: list[str] = []
    lane.acquire()
    threads = _queued(lane, ["b", "c"], order)
    lane.give_way()  # the long search steps aside between two chunks...
    order.append("a, resumed")
    lane.release()
    for thread in threads:
        thread.join(WAIT)
    assert order == ["b", "c", "a, resumed"]  # ...behind everyone who was waiting


def test_giving_way_with_nobody_waiting_keeps_the_turn() -> None:
    lane = Lane(1)
    with lane:
        lane.give_way()
        assert lane.waiting == 0
        def take_a_turn() -> None:
            with lane:
                pass

        other = threading.Thread(target=take_a_turn)
        other.start()
        _until(lambda: lane.waiting == 1)  # the turn was kept: the newcomer waits
    other.join(WAIT)
    assert not other.is_alive()


def test_a_turn_is_handed_on_when_the_holder_fails() -> None:
    lane = Lane(1)
    order: list[str] = []
    lane.acquire()
    threads = _queued(lane, ["next"], order)
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("the search failed")
        finally:
            lane.release()
    threads[0].join(WAIT)
    assert order == ["next"]


def test_a_lane_of_no_width_is_refused() -> None:
    with pytest.raises(ValueError):
        Lane(0)
    with pytest.raises(ConfigError, match="search_lanes"):
        Limits(search_lanes=0).check()
