"""A node's files are its own, and what a caller sends is never echoed back at length.

The database holds every record and the key that seals page tokens and cursors: its
folder is 0700 and its files (with SQLite's -wal and -shm) 0600 after ``db upgrade``
and ``node serve`` (the demo: tests/test_demo.py), through the real command, and a node
refuses to start on files others can read. Status messages quote a client's values by a
short prefix only.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.node.server import Node
from exchange.v1 import query_pb2, records_pb2
from tests.federation import Federation, UserClient

COMMAND = [sys.executable, "-m", "exchange.cli.main"]
HUGE = "X" * 100_000


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def config(pki: Federation, tmp_path: Path) -> Path:
    """A SQLite node's node.toml; its data folder does not exist yet."""
    path = tmp_path / "node.toml"
    path.write_text(
        f'agency = "JPN-NPA"\nlisten = "{pki.manifest.partner("JPN-NPA").address}"\npki_dir = "{pki.pki_dir}"\n'
        f'data_dir = "{tmp_path / "data"}"\nmetrics_listen = ""\n', encoding="utf-8")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def serving(config: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``exchange node serve`` on an upgraded database, until it says it listens."""
    assert run("db", "upgrade", "--config", str(config)).returncode == 0
    out = tmp_path / "serve.out"
    with out.open("wb") as sink:
        node = subprocess.Popen([*COMMAND, "node", "serve", str(config)], stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: node.poll() is not None or b"listening" in out.read_bytes(), "the node to listen")
        assert node.poll() is None, out.read_text()
        yield node
    finally:
        node.terminate()
        node.wait(timeout=30)


def test_db_upgrade_makes_a_private_folder_and_database(config: Path, tmp_path: Path) -> None:
    done = run("db", "upgrade", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "node.db") == 0o600


def test_a_serving_node_keeps_its_database_files_private(serving: subprocess.Popen[bytes], tmp_path: Path) -> None:
    data = tmp_path / "data"
    files = sorted(p.name for p in data.iterdir())
    assert files == ["node.db", "node.db-shm", "node.db-wal"]  # SQLite's side files are there, made by it
    assert {name: mode(data / name) for name in files} == dict.fromkeys(files, 0o600)
    assert mode(data) == 0o700


def test_a_database_made_readable_to_others_is_refused_in_one_line(config: Path, tmp_path: Path) -> None:
    assert run("db", "upgrade", "--config", str(config)).returncode == 0
    database = tmp_path / "data" / "node.db"
    database.chmod(0o644)
    refused = run("node", "serve", str(config))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (f"exchange: the database file {database} is open to group or others (mode 0644); "
                              f"it holds every record and the node's sealing key: chmod 600 {database}\n")
    # `db upgrade` closes the files of a database made before the rule...
    assert run("db", "upgrade", "--config", str(config)).returncode == 0 and mode(database) == 0o600
    # ...but not a folder, which may hold more than the node's files: that is the operator's.
    database.parent.chmod(0o755)
    refused = run("node", "serve", str(config))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.endswith(f"chmod 700 {database.parent}\n")


# --- messages ------------------------------------------------------------------------------------


@pytest.fixture
def jpn(federation: Federation, tmp_path: Path) -> Node:
    return federation.start_node("JPN-NPA", tmp_path / "jpn")


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def test_a_huge_field_gets_a_short_status_message(federation: Federation, jpn: Node) -> None:
    user = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    health = health_pb2_grpc.HealthStub(user.channel)  # type: ignore[no-untyped-call]
    refused = [
        refusal(lambda: user.query.Get(query_pb2.GetRequest(ref=records_pb2.RecordRef(
            originator=HUGE, record_id="00000000-0000-4000-8000-000000000000")), timeout=10)),
        refusal(lambda: user.query.Get(query_pb2.GetRequest(ref=records_pb2.RecordRef(
            originator="JPN-NPA", record_id=HUGE)), timeout=10)),
        refusal(lambda: user.query.Search(query_pb2.SearchRequest(originators=[HUGE]), timeout=10)),
        refusal(lambda: health.Check(health_pb2.HealthCheckRequest(service=HUGE), timeout=10)),
    ]
    assert [r.code() for r in refused] == [grpc.StatusCode.INVALID_ARGUMENT] * 3 + [grpc.StatusCode.NOT_FOUND]
    for error in refused:
        details = error.details() or ""
        assert len(details.encode()) < 1024, len(details)
        assert "XXXX" in details and "(100000 characters)" in details  # a prefix, and how long it was
    # The channel is fine afterwards.
    user.query.Search(query_pb2.SearchRequest(page_size=1), timeout=10)
