"""The repair bomb: a partner forces a repair and answers its digests with invented claims.

A red-team partner answered Pull with FAILED_PRECONDITION (a stale cursor, so the
puller repairs by digest), then answered Digest naming invented originators and
listing huge buckets: the victim grew from 94 MB to 1.4 GB per repair cycle.

Here the victim is a real ``exchange node serve`` process (so its memory is its own,
read from /proc), pulling on its schedule from a hostile "KOR-KNPA" that speaks the
real protocol over mutual TLS with KOR-KNPA's legitimately issued node certificate.
The hostile server makes its answers up call by call, so the test process never
holds the million ids it lists. The bound is stated below: the node's peak RSS
(VmHWM) stays within ``RSS_BOUND_BYTES`` of its resident size before the bomb, and it
still answers its liaison officer afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from exchange.v1 import query_pb2, query_pb2_grpc, sync_pb2
from tests.federation import Federation
from tests.hostile import Abort, HostilePartner
from tests.processes import memory, stop

KOR = "KOR-KNPA"
RSS_BOUND_BYTES = 100 * 1024 * 1024  # the node's peak may exceed its resident size before the bomb by this much
LISTED = 1_000_000  # record ids the hostile partner lists, in all
INVENTED = 1_000  # originators it invents in its top digest
PER_LISTING = 2_000  # entries per listing: the victim's default max_digest_entries
BOMB_CURSOR = b"bomb-cursor"
DEADLINE = 300.0  # seconds for the whole repair on a loaded machine



class Bomb:
    """Digest answers made up per call: invented originators at the top, then a bisection
    that ends in listings of ``PER_LISTING`` fresh ids each until ``LISTED`` are out."""

    def __init__(self) -> None:
        self.listed = 0

    def __call__(self, request: sync_pb2.DigestRequest) -> sync_pb2.DigestResponse:
        if not request.originator:
            invented = [f"X{i:04d}-BOMB" for i in range(INVENTED)]
            return sync_pb2.DigestResponse(cursor=BOMB_CURSOR, summaries=[
                sync_pb2.DigestSummary(originator=o, count=10**9, hash=os.urandom(32)) for o in [*invented, KOR]])
        prefix = request.bucket_prefix
        if request.list_entries:
            count = min(PER_LISTING, LISTED - self.listed)
            first, self.listed = self.listed, self.listed + count
            return sync_pb2.DigestResponse(entries=[
                sync_pb2.DigestEntry(originator=KOR, record_id=_record_id(prefix, n), version=1,
                                     content_hash=n.to_bytes(32, "big"))
                for n in range(first, first + count)])
        # Big buckets down to depth 2 under "0" and "1", depth 1 elsewhere; then leaves (count <= 256).
        big = prefix == "" or (len(prefix) == 1 and prefix in "01")
        return sync_pb2.DigestResponse(summaries=[
            sync_pb2.DigestSummary(originator=KOR, bucket_prefix=prefix + c, count=10**6 if big else 100,
                                   hash=os.urandom(32))
            for c in "0123456789abcdef"])


def _record_id(prefix: str, n: int) -> str:
    return str(uuid.UUID(hex=prefix + f"{n:0{32 - len(prefix)}x}"))


def _write_config(federation: Federation, path: Path, data_dir: Path) -> Path:
    path.write_text(
        f'agency = "JPN-NPA"\nlisten = "{federation.manifest.partner("JPN-NPA").address}"\n'
        f'pki_dir = "{federation.pki_dir}"\ndata_dir = "{data_dir}"\nmetrics_listen = ""\n'
        f'{federation.backend.config_line(data_dir)}'
        '[[users]]\nhandle = "suzuki"\nrole = "liaison"\nclearance = "SECRET"\n'
        f'[[peers]]\nagency = "{KOR}"\ninterval_seconds = 0.3\n',
        encoding="utf-8",
    )
    return path


def _wait(condition: Callable[[], bool], what: str, seconds: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"the node exited ({proc.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _search(federation: Federation, timeout: float) -> query_pb2.SearchResponse:
    key, cert = federation.user_files("JPN-NPA", "suzuki")
    port = int(federation.manifest.partner("JPN-NPA").address.rsplit(":", 1)[1])
    channel = federation.channel(port, server_agency="JPN-NPA", key=key, cert=cert)
    try:
        stub = query_pb2_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
        response: query_pb2.SearchResponse = stub.Search(query_pb2.SearchRequest(page_size=10), timeout=timeout)
        return response
    finally:
        channel.close()


def _serving(federation: Federation) -> bool:
    try:
        _search(federation, 2)
    except grpc.RpcError:
        return False
    return True


@pytest.mark.slow
def test_a_repair_bomb_leaves_the_nodes_memory_bounded_and_the_node_serving(
    federation: Federation, tmp_path: Path
) -> None:
    hostile = HostilePartner(federation, KOR).start()
    data_dir = tmp_path / "jpn"
    federation.backend.migrated(data_dir)
    config = _write_config(federation, tmp_path / "jpn.toml", data_dir)
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "exchange.cli.main", "node", "serve", str(config)],
                                stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _serving(federation), "the node to serve", 60, proc)
        _wait(lambda: len(hostile.calls) >= 3, "the schedule to pull KOR-KNPA (nothing yet)", 30, proc)
        before = memory(proc.pid, "VmRSS")

        bomb = Bomb()
        hostile.digest = bomb
        hostile.play([Abort(grpc.StatusCode.FAILED_PRECONDITION, "your cursor is stale")])

        def repaired() -> bool:
            return any(c.request.cursor == BOMB_CURSOR for c in list(hostile.calls))

        _wait(repaired, "the repair to end and pulls to resume from the digest's cursor", DEADLINE, proc)
        peak = memory(proc.pid, "VmHWM")
        asked = sum(len(c.request.only) for c in hostile.calls)
        print(f"\nnode RSS before the bomb {before / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB; "
              f"{bomb.listed:,} ids listed, {asked:,} asked for")
        assert bomb.listed == LISTED and asked == LISTED  # every listed id was taken in, and pulled
        assert peak <= before + RSS_BOUND_BYTES, (
            f"peak RSS {peak / 2**20:.0f} MiB, over {before / 2**20:.0f} MiB + {RSS_BOUND_BYTES / 2**20:.0f} MiB")
        # Nothing invented was followed: the digest calls name KOR-KNPA only.
        assert {d.originator for d in hostile.digests} == {"", KOR}

        started = time.monotonic()
        _search(federation, 10)
        assert time.monotonic() - started < 1.0  # still serving, promptly
    finally:
        stop(proc)
        hostile.stop()
    rows = federation.backend.rows(data_dir, "SELECT kind, peer, detail FROM security_events WHERE kind = :k",
                                   k="digest-refused")
    [(_, peer, detail)] = rows
    assert peer == KOR and json.loads(detail)["count"] == INVENTED
