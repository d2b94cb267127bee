"""Checking received entries in other processes, so a pull uses every core.

The signature itself lets other threads run (libsodium, exchange/records/envelope.py), but the
Python of the checks around it (parsing, validation, normalisation, decisions, index terms) is
most of a check and holds the GIL: on threads, checking a batch and writing the one before it
would take turns on one core. Here each check process holds its own
``Verifier``; the pulling process sends a batch's envelopes as the bytes it received, a
process verifies each signature over those bytes and runs every check, and answers per entry
a ``Refusal`` or what the write needs (content hash, audience, index terms). The pulling
process then parses the payload it holds itself (the very bytes verified), so it stores only
what a check accepted, and nothing it did not receive.

Processes are spawned, not forked: a fork of a process running gRPC's threads is unsafe.
They start with the first large batch and live as long as the puller, or until the node adopts
another manifest: each process checks against the manifest it was started with, so a new one
replaces the pool (batches are checked here until the new processes are up). Should one die (or
answer wrongly), the batch is checked on the pulling process itself and the pool is not used again.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.process import BaseProcess

from exchange import runtime
from exchange.config import Limits
from exchange.core.manifest import Manifest
from exchange.core.trust import Trust
from exchange.store.received import Incoming
from exchange.store.refusals import Refusal
from exchange.store.rows import RecordIndex
from exchange.sync.verifier import Verifier
from exchange.v1 import records_pb2

log = logging.getLogger("exchange.sync")

# A smaller batch is checked in the pulling process: a round trip to another process costs
# more than checking a few entries, and most pulls (incremental ones) are small.
POOL_MIN_ENTRIES = 64

# What a check process answers for an accepted entry: (withdrawal?, content hash, audience,
# index terms of a record). Small and picklable, unlike the parsed messages.
Accepted = tuple[bool, bytes, frozenset[str], RecordIndex | None]

_verifier: Verifier | None = None  # in a check process: its own, made once


def _start(agency: str, manifest: Manifest, limits: Limits, parent: int) -> None:
    global _verifier
    _verifier = Verifier(agency, Trust(manifest), limits)
    runtime.tune_collector()
    threading.Thread(target=runtime.exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _check(envelopes: list[bytes], served_by: str) -> list[Accepted | Refusal]:
    verifier = _verifier
    if verifier is None:  # _start runs first in every process of the pool
        raise RuntimeError("check process started without its verifier")
    answers: list[Accepted | Refusal] = []
    for data in envelopes:
        checked = verifier.check(records_pb2.Envelope.FromString(data), served_by)
        if isinstance(checked, Refusal):
            answers.append(checked)
        else:
            answers.append((checked.withdrawal is not None, checked.content_hash, checked.audience, checked.index))
    return answers


class CheckPool:
    """Checks a pull's batches, in ``processes`` check processes when a batch is large."""

    def __init__(self, verifier: Verifier, agency: str, trust: Trust, limits: Limits) -> None:
        self.verifier = verifier  # the pulling process's own: small batches, and the fallback
        self._agency, self._trust, self._limits = agency, trust, limits
        self._processes = limits.check_processes
        self._pool: ProcessPoolExecutor | None = None
        self._pool_manifest: Manifest | None = None  # what the pool's processes check against
        self._started: list[Future[int]] = []  # one per process: done once it can check
        self._broken = False
        self._closed = False
        self._ended: list[BaseProcess] = []  # processes of the closed pool, not yet stopped
        self._lock = threading.Lock()

    @property
    def in_processes(self) -> bool:
        """Whether large batches go to check processes now (one is up, and none has died)."""
        return self._pool is not None and any(f.done() for f in self._started)

    def process_ids(self) -> list[int]:
        """The pids of the check processes running now (none before the first large batch)."""
        with self._lock:
            pool = self._pool
        return [process.pid for process in runtime.pool_processes(pool) if process.pid is not None] if pool else []

    def ready(self, timeout: float) -> bool:
        """Start the check processes if need be; whether one is up within ``timeout`` seconds."""
        self._pool_for(POOL_MIN_ENTRIES)
        for future in list(self._started):
            try:
                future.result(timeout=timeout)
            except Exception:  # not up (yet): the answer is False below
                continue
        return self.in_processes

    def check(self, entries: list[records_pb2.Envelope], served_by: str) -> list[Incoming | Refusal]:
        # Read once per batch, as the in-process Verifier does: a batch is checked against one manifest.
        pool = self._pool_for(len(entries))
        # Until a process is up (spawning one imports the checks: seconds on a busy machine),
        # batches are checked here, so a pull makes progress from its first batch.
        if pool is not None and self.in_processes:
            try:
                return self._in_pool(pool, entries, served_by)
            except Exception as error:  # a dead process, or one that answered wrongly
                self._give_up(pool, error)
        return [self.verifier.check(envelope, served_by) for envelope in entries]

    def _pool_for(self, count: int) -> ProcessPoolExecutor | None:
        if count < POOL_MIN_ENTRIES:
            return None
        stale: ProcessPoolExecutor | None = None
        with self._lock:
            if self._broken or self._closed:
                return None
            manifest = self._trust.manifest
            if self._pool is not None and self._pool_manifest is not manifest:
                stale, self._pool = self._pool, None  # the node adopted another manifest
            if self._pool is None:
                # The manifest travels with its partners as a plain dict (its own mapping may be
                # a read-only view, which does not pickle).
                portable = dataclasses.replace(manifest, partners=dict(manifest.partners))
                self._pool_manifest = manifest
                self._pool = ProcessPoolExecutor(
                    max_workers=self._processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start, initargs=(self._agency, portable, self._limits, os.getpid()),
                )
                self._started = [self._pool.submit(os.getpid) for _ in range(self._processes)]
            pool = self._pool
        if stale is not None:
            stale.shutdown(wait=False, cancel_futures=True)
        return pool

    def _in_pool(
        self, pool: ProcessPoolExecutor, entries: list[records_pb2.Envelope], served_by: str
    ) -> list[Incoming | Refusal]:
        size = -(-len(entries) // self._processes)
        chunks = [entries[i:i + size] for i in range(0, len(entries), size)]
        futures: list[Future[list[Accepted | Refusal]]] = [
            pool.submit(_check, [e.SerializeToString() for e in chunk], served_by) for chunk in chunks
        ]
        checked: list[Incoming | Refusal] = []
        for chunk, future in zip(chunks, futures, strict=True):
            answers = future.result()
            if len(answers) != len(chunk):
                raise RuntimeError("a check process answered for another number of entries")
            checked += [_incoming(e, a) for e, a in zip(chunk, answers, strict=True)]
        return checked

    def _give_up(self, pool: ProcessPoolExecutor, error: BaseException) -> None:
        with self._lock:
            self._broken = True
            self._pool = None
        log.warning("check processes failed (%s); checking received entries in the pulling process",
                    type(error).__name__)
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """No more batches go to the check processes; those in flight finish (``end`` stops them)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            if pool is not None:
                self._ended += runtime.pool_processes(pool)  # shutdown forgets them
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def end(self) -> None:
        """Once no pull is in flight (the node has stopped its schedule): stop the check processes."""
        self.close()
        with self._lock:
            processes, self._ended = self._ended, []
        runtime.end_processes(processes)


def _incoming(envelope: records_pb2.Envelope, answer: Accepted | Refusal) -> Incoming | Refusal:
    """The entry a check process accepted, with its payload parsed here from the bytes held."""
    if isinstance(answer, Refusal):
        return answer
    is_withdrawal, digest, audience, index = answer
    if is_withdrawal:
        return Incoming(envelope, digest, audience, withdrawal=records_pb2.Withdrawal.FromString(envelope.payload))
    return Incoming(envelope, digest, audience, record=records_pb2.Record.FromString(envelope.payload), index=index)
