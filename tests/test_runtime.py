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
