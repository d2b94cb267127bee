"""Filling and rendering a search's page: in the node's process, taking turns, or in search processes.

A search is mostly Python (SQLAlchemy, the seal checks, the decision) around short steps
of the database, so in one process searches take turns (exchange/node/lane.py) and use one
core at most, however many wait. With ``search_processes`` > 0 (node.toml ``[limits]``),
each search's page is filled in one of that many spawned processes, each with its own
connections to the same database and its own copy of the node's integrity key; the node's
process keeps gRPC, the audit entry of what was shown and the page token. A page comes
back rendered (the answer's records serialised, with what the audit entry names), so the
node's process neither rebuilds records nor serialises them. Searches only read:
a search process never writes, except the security event of a row whose seal fails, as the
node's process would.

Every call carries what the decision depends on at that moment (the caller, the criteria,
the agencies of the manifest trusted now, the key ids it marks compromised), so a search
process decides exactly as the node's process would. Processes are spawned, not forked (a
fork of a process running gRPC's threads is unsafe); until one is up, and for good should
one die, pages are filled in the node's process. So is a search that is the only one in
progress: a round trip to another process would only add to its time (about a millisecond
of a 5 ms lookup at 1,000,000 records), and nothing waits for the node's process meanwhile.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from exchange import runtime
from exchange.core.identity import Principal
from exchange.node.lane import Lane
from exchange.node.reads import Agencies, fill_page, held_records_wire
from exchange.store import SearchFilter, Store, integrity
from exchange.store.search import search

log = logging.getLogger("exchange.node")

_store: Store | None = None  # in a search process: its own, opened once


@dataclass(frozen=True)
class Page:
    """A page of search results as the answer needs it."""

    shown: tuple[tuple[str, str, int], ...]  # (originator, record_id, version) of each record shown
    records: bytes  # a SearchResponse holding those records alone, serialised
    last: tuple[int, int] | None  # the position of the last record shown (where a next page starts)
    more: bool  # whether a record after it matches too (the caller may see it)


def answer_page(store: Store, criteria: SearchFilter, after: tuple[int, int] | None, size: int,
                caller: Principal, known: Agencies, pause: Callable[[], None] | None = None) -> Page:
    """The first ``size`` records matching ``criteria`` after ``after`` that ``caller`` may see
    (``reads.fill_page``), rendered as held (with sighting counts on the own agency's)."""
    candidates = search(store, criteria, after=after, first_chunk=size + 1, pause=pause)
    page, more = fill_page(candidates, store.agency, known, caller, size)
    records = held_records_wire(store, store.agency, page)
    return Page(tuple((r.originator, r.record_id, r.version) for r in page), records,
                page[-1].position if page else None, more)


@dataclass(frozen=True)
class _Known:
    """The agencies of the manifest trusted now, as the decision reads them (``Agencies``)."""

    agencies: frozenset[str]


def _start(database_url: str, pki_dir: Path, agency: str, parent: int) -> None:
    global _store
    _store = Store.open(database_url, agency=agency, seal=integrity.for_node(pki_dir, agency, database_url))
    runtime.tune_collector()
    threading.Thread(target=runtime.exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _page(criteria: SearchFilter, after: tuple[int, int] | None, size: int, caller: Principal,
          agencies: frozenset[str], distrusted: frozenset[str]) -> Page:
    store = _store
    if store is None:  # _start runs first in every process of the pool
        raise RuntimeError("search process started without its store")
    if store.distrusted_keys != distrusted:
        store.distrust(distrusted)  # the node adopted a manifest marking keys compromised
    return answer_page(store, criteria, after, size, caller, _Known(agencies))


class Searches:
    """Fills pages of search results for the node's users (``page``)."""

    def __init__(self, store: Store, *, lanes: int, processes: int, database_url: str, pki_dir: Path) -> None:
        self.store = store
        self.lane = Lane(lanes)  # searches in the node's process take turns in it
        self._processes = processes
        self._database_url, self._pki_dir = database_url, pki_dir
        self._pool: ProcessPoolExecutor | None = None
        self._started: list[Future[int]] = []  # one per process: done once it can search
        self._lock = threading.Lock()
        self.pages_in_processes = 0  # how many pages search processes filled (the rest: this process)
        self._in_flight = 0  # searches being answered now, here or in search processes

    def start(self) -> None:
        """Spawn the search processes (if any are configured); pages are filled here until one is up."""
        if self._processes <= 0:
            return
        with self._lock:
            if self._pool is not None:
                return
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start, initargs=(self._database_url, self._pki_dir, self.store.agency, os.getpid()),
            )
            self._started = [self._pool.submit(os.getpid) for _ in range(self._processes)]

    @property
    def in_processes(self) -> bool:
        """Whether pages are filled in search processes now (one is up, and none has died)."""
        return self._pool is not None and any(f.done() and f.exception() is None for f in self._started)

    def process_ids(self) -> list[int]:
        """The pids of the search processes running now."""
        with self._lock:
            pool = self._pool
        return [process.pid for process in runtime.pool_processes(pool) if process.pid is not None] if pool else []

    def page(self, criteria: SearchFilter, after: tuple[int, int] | None, size: int, caller: Principal,
             known: Agencies) -> Page:
        """``answer_page``: here when it is the only search in progress (a round trip to a search
        process would only add to its time) or no search process is up; else in a search process."""
        with self._lock:
            alone = self._in_flight == 0 and not self.lane.busy
            self._in_flight += 1
        try:
            pool = self._pool
            if not alone and pool is not None and self.in_processes:
                try:
                    filled = pool.submit(_page, criteria, after, size, caller, known.agencies,
                                         self.store.distrusted_keys).result()
                    with self._lock:
                        self.pages_in_processes += 1
                    return filled
                except BrokenProcessPool as error:  # a search process died: fill pages here from now on
                    self._give_up(pool, error)
            with self.lane:  # searches here take turns, and a long one gives way between chunks
                return answer_page(self.store, criteria, after, size, caller, known, pause=self.lane.give_way)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _give_up(self, pool: ProcessPoolExecutor, error: BaseException) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        log.warning("a search process died (%s); searches run in the node's process from now on",
                    type(error).__name__)
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the search processes (the node's calls have ended: nothing is waiting on them)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            processes = runtime.pool_processes(pool)  # shutdown forgets them
            pool.shutdown(wait=False, cancel_futures=True)
            runtime.end_processes(processes)
