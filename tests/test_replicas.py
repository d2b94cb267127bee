"""Several replicas of one agency's node on one database.

All of them serve; exactly one runs the pull schedule, elected with a database session
lock (PostgreSQL advisory lock, or an exclusive lock on a file beside a SQLite
database); when it dies another takes over, and nothing is applied twice or lost.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exchange.node.server import Node
from exchange.store import audit
from exchange.store.current import current_record
from exchange.store.log import log_entries
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft, free_port
from tests.fill import fill

RELEASED = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER")
INTERVAL = 0.3  # seconds between scheduled pulls


# Every port this module hands out, so two replicas never get the same one.
_PORTS: set[int] = set()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Replica:
    """One `exchange node serve` process of USA-DTSF, on its own ports, on the shared database."""

    def __init__(self, federation: Federation, tmp_path: Path, name: str, data_dir: Path) -> None:
        self.port, self.metrics_port = free_port(_PORTS), free_port(_PORTS)
        self.config = tmp_path / f"{name}.toml"
        self.config.write_text(
            f'agency = "USA-DTSF"\nlisten = "127.0.0.1:{self.port}"\npki_dir = "{federation.pki_dir}"\n'
            f'data_dir = "{data_dir}"\nmetrics_listen = "127.0.0.1:{self.metrics_port}"\n'
            f"{federation.backend.config_line(data_dir)}\n"
            f'[[peers]]\nagency = "JPN-NPA"\ninterval_seconds = {INTERVAL}\n\n'
            '[[users]]\nhandle = "rchen"\nrole = "liaison"\nclearance = "SECRET"\n',
            encoding="utf-8",
        )
        self.log = tmp_path / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "exchange.cli.main", "node", "serve", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=log,
            )

    def leading(self) -> bool | None:
        """The replica's exchange_schedule_leader gauge (None while it cannot be scraped)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
                body = response.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(body):
            if family.name == "exchange_schedule_leader":
                return family.samples[0].value == 1.0
        return None

    def search(self, federation: Federation, text: str) -> list[str]:
        """The payload types of the records a search returns (one per record)."""
        key, cert = federation.user_files("USA-DTSF", "rchen")
        channel = federation.channel(self.port, server_agency="USA-DTSF", key=key, cert=cert)
        try:
            reply = UserClient.of(channel).query.Search(query_pb2.SearchRequest(text=text), timeout=10)
            return [r.envelope.payload_type for r in reply.records]
        finally:
            channel.close()

    def pulls(self) -> int:
        """Pulls this replica made, from its log (a JSON line per pull)."""
        return sum('"msg": "pull from JPN-NPA:' in line for line in self.log.read_text().splitlines())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def replicas(federation: Federation, tmp_path: Path) -> Iterator[list[Replica]]:
    data_dir = tmp_path / "usa"
    federation.backend.migrated(data_dir)
    started = [Replica(federation, tmp_path, name, data_dir) for name in ("usa-a", "usa-b")]
    yield started
    for replica in started:
        replica.stop()


@pytest.mark.slow
def test_one_replica_pulls_and_another_takes_over_when_it_dies(
    federation: Federation, tmp_path: Path, replicas: list[Replica]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    first = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 300, marking=RELEASED)
    usa = tmp_path / "usa"

    def held() -> set[str]:
        return {r for (r,) in federation.backend.rows(usa, "SELECT record_id FROM records")}

    wait_for(lambda: all(r.leading() is not None for r in replicas), "both replicas serving")
    wait_for(lambda: held() == {r.record_id for r in first}, "the first records pulled")
    states = [r.leading() for r in replicas]
    assert None not in states and sorted(s is True for s in states) == [False, True], states  # exactly one leads
    leader, standby = (replicas[0], replicas[1]) if states[0] else (replicas[1], replicas[0])
    # Several scheduled pulls, each a line in the leader's log once it is written: all of them the leader's.
    wait_for(lambda: leader.pulls() >= 3, "three scheduled pulls logged by the leader")
    assert standby.pulls() == 0, standby.pulls()

    # Both serve queries from the one database.
    for replica in replicas:
        assert len(replica.search(federation, "迂回調達")) > 0

    # The leader dies without a chance to clean up; the standby takes over within a few intervals.
    leader.process.send_signal(signal.SIGKILL)
    leader.process.wait()
    killed_at = time.monotonic()
    later = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 200, marking=RELEASED)
    wait_for(lambda: standby.leading() is True, "the standby to take over", timeout=20)
    took_over = time.monotonic() - killed_at
    wait_for(lambda: len(held()) == 500, "the records added after the kill", timeout=30)
    assert took_over < 10 * INTERVAL + 5, took_over
    wait_for(lambda: standby.pulls() > 0, "the new leader's pull logged")

    assert held() == {r.record_id for r in first + later}  # nothing lost
    duplicates = federation.backend.rows(
        usa, "SELECT originator, record_id, version, count(*) FROM log GROUP BY 1, 2, 3 HAVING count(*) > 1")
    assert duplicates == []  # nothing applied twice
    assert federation.backend.rows(usa, "SELECT count(*) FROM log") == [(500,)]
    assert federation.backend.integrity_problems(usa) == []


def test_concurrent_revisions_through_two_replicas_never_mint_one_version_twice(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    config = dataclasses.replace(jpn.config, listen=f"127.0.0.1:{free_port(_PORTS)}")
    second = Node(config, manifest=federation.manifest, schedule=False)  # another replica, same database
    second.start()
    federation.nodes.append(second)
    clients = [UserClient.of(federation.user_channel(node, "JPN-NPA", handle))
               for node in (jpn, second) for handle in ("sato", "kato")]
    receipt = clients[0].submission.Submit(submission_pb2.SubmitRequest(draft=draft())).receipt

    def revise(client: UserClient, base: int, barrier: threading.Barrier, outcomes: list[str]) -> None:
        barrier.wait()
        try:
            client.submission.Revise(submission_pb2.ReviseRequest(
                ref=receipt.ref, base_version=base, draft=draft(title=f"改訂 {base}")), timeout=10)
            outcomes.append("ok")
        except grpc.RpcError as error:
            outcomes.append(error.code().name)

    for base in (1, 2, 3):  # three rounds of eight revisions of the same base, through both replicas
        barrier = threading.Barrier(8)
        outcomes: list[str] = []
        threads = [threading.Thread(target=revise, args=(clients[i % 4], base, barrier, outcomes)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["ABORTED"] * 7 + ["ok"], (base, outcomes)

    versions = [row.version for row in log_entries(jpn.store, "JPN-NPA", receipt.ref.record_id)]
    assert versions == [1, 2, 3, 4]
    for node in (jpn, second):
        current = current_record(node.store, "JPN-NPA", receipt.ref.record_id)
        assert current is not None and current.version == 4
    assert audit.verify_store(jpn.store) == []  # one chain, however the replicas' writes interleaved
