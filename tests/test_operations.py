"""Operating a node: reflection, health, metrics, structured logs and a clean SIGTERM.

Real nodes on loopback with real certificates (tests/federation.py); the
partner that serves bad records is tests/hostile.py's scripted server; the
SIGTERM test runs ``exchange node serve`` as a real process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from exchange import logs
from exchange.config import DEFAULT_METRICS_LISTEN, PeerEntry, load_node_config
from exchange.core.identity import Identity, Principal, Role
from exchange.core.trust import Trust
from exchange.node.server import Node
from exchange.node.sync import SyncService
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft
from tests.fill import fill
from tests.hostile import Batch, Forge, HostilePartner, marking, tampered

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def start(federation: Federation, agency: str, data_dir: Path, *, peers: tuple[str, ...] = ()) -> Node:
    """A node with its metrics endpoint on a free loopback port and a quick health monitor."""
    federation.backend.migrated(data_dir)
    config = dataclasses.replace(
        federation.node_config(agency, data_dir),
        listen=federation.manifest.partner(agency).address,
        peers=tuple(PeerEntry(p, 3600.0) for p in peers),  # pulled by the test, not a schedule
        metrics_listen="127.0.0.1:0",
        health_check_seconds=0.05,
    )
    node = Node(config, manifest=federation.manifest, schedule=False)
    node.start()
    federation.nodes.append(node)
    return node


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- reflection ------------------------------------------------------------------------------


def reflect(channel: grpc.Channel, *requests: reflection_pb2.ServerReflectionRequest
            ) -> list[reflection_pb2.ServerReflectionResponse]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[no-untyped-call]
    return list(stub.ServerReflectionInfo(iter(requests), timeout=10))


def list_services(channel: grpc.Channel) -> list[str]:
    [response] = reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    return [s.name for s in response.list_services_response.service]


def test_reflection_lists_and_describes_the_services_to_a_federation_identity(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = start(federation, "JPN-NPA", tmp_path / "jpn")
    liaison = federation.user_channel(jpn, "JPN-NPA", "suzuki")
    services = list_services(liaison)
    assert {"exchange.v1.SubmissionService", "exchange.v1.QueryService", "exchange.v1.SyncService",
            "exchange.v1.LiaisonService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    # A partner node may look too (any authenticated federation identity, as for health).
    key, cert = (federation.pki_dir / "USA-DTSF" / "node.key").read_bytes(), \
        (federation.pki_dir / "USA-DTSF" / "node.crt").read_bytes()
    assert list_services(federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert)) == services

    # What grpcurl does to call a method it has no .proto for: fetch the file declaring the
    # service (with its imports), build the message types, call with them.
    [response] = reflect(liaison, reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="exchange.v1.QueryService"))
    pool = descriptor_pool.DescriptorPool()
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in response.file_descriptor_response.file_descriptor_proto]
    pending = {f.name: f for f in files}
    while pending:  # a pool takes a file only after its imports
        for name, proto in list(pending.items()):
            if not set(proto.dependency) & set(pending):
                pool.Add(proto)
                del pending[name]
    method = pool.FindServiceByName("exchange.v1.QueryService").methods_by_name["Search"]
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft(title="第三国経由の迂回輸出")), timeout=10)
    search = liaison.unary_unary("/exchange.v1.QueryService/Search", request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=response_type.FromString)
    found = search(json_format.ParseDict({"text": "迂回"}, request_type()), timeout=10)
    assert len(found.records) == 1


def test_reflection_refuses_a_client_without_a_federation_identity(federation: Federation, tmp_path: Path) -> None:
    jpn = start(federation, "JPN-NPA", tmp_path / "jpn")
    # No certificate: the mutual-TLS handshake fails before any RPC exists.
    anonymous = federation.channel(jpn.port, server_agency="JPN-NPA", key=None, cert=None)
    with pytest.raises(grpc.RpcError) as refused:
        list_services(anonymous)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # A federation CA's certificate that lies about its agency passes TLS; the guard refuses it.
    key, cert = federation.issue_cert("KOR-KNPA", Identity("JPN-NPA", "suzuki"))
    impostor = federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert)
    with pytest.raises(grpc.RpcError) as unauthenticated:
        list_services(impostor)
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- health ----------------------------------------------------------------------------------


def health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    return status


def test_health_is_not_serving_while_the_database_cannot_be_used(federation: Federation, tmp_path: Path) -> None:
    """The node's database is taken away, then given back.

    SQLite: the data directory is moved away, as when its volume is unmounted. The node's
    pooled connections hold the file open and would go on answering (``SELECT 1`` never
    even reads the file), but no new connection could open it: the pool cannot grow under
    load and a restart would fail. The monitor opens the file afresh each time, so it sees
    what the next connection would see. PostgreSQL: the node's schema is renamed away, so
    the server answers but the node's tables are not there.
    """
    jpn = start(federation, "JPN-NPA", tmp_path / "jpn")
    channel = federation.user_channel(jpn, "JPN-NPA", "suzuki")
    assert health(channel) == SERVING and health(channel, "exchange.v1.QueryService") == SERVING
    federation.backend.make_unusable(tmp_path / "jpn")
    try:
        wait_for(lambda: health(channel) == NOT_SERVING, "NOT_SERVING")
        assert health(channel, "exchange.v1.SyncService") == NOT_SERVING  # every service, not just the node
        assert scrape(jpn)["exchange_database_up"][()] == 0
    finally:
        federation.backend.make_usable(tmp_path / "jpn")
    wait_for(lambda: health(channel) == SERVING, "SERVING again")
    assert scrape(jpn)["exchange_database_up"][()] == 1


# --- metrics and logs ------------------------------------------------------------------------


Series = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(node: Node) -> Series:
    """Every sample of the node's /metrics, parsed as Prometheus exposition format."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return series


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The process's log lines as the node writes them (exchange.logs' JSON)."""
    buffer = io.StringIO()
    handler = logs.json_handler(agency="JPN-NPA", stream=buffer)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


def test_metrics_move_with_pulls_refusals_and_calls(
    federation: Federation, tmp_path: Path, log_lines: io.StringIO
) -> None:
    jpn = start(federation, "JPN-NPA", tmp_path / "jpn", peers=("KOR-KNPA",))
    before = scrape(jpn)
    assert before["exchange_pull_lag_seconds"][(("peer", "KOR-KNPA"),)] == math.inf  # never pulled
    assert "exchange_pull_last_success_timestamp_seconds" not in before
    rejections = before["exchange_received_rejections_total"]
    assert {dict(k)["reason"]: v for k, v in rejections.items()} == {
        "invalid": 0, "not-holdable": 0, "relayed": 0, "excess-evidence": 0, "equivocation": 0}

    # A real pull from a partner (the scripted KOR-KNPA) that serves one good record, one
    # tampered, one JPN-NPA may not hold, and two different signed contents of one version.
    forge = Forge(federation, "KOR-KNPA")
    record = forge.record()
    other = records_pb2.Record()
    other.CopyFrom(record)
    other.content.title = "another content for the same version"
    script = [Batch([forge.honest(), tampered(forge.honest()), forge.honest(mark=marking(releasable_to=["USA-DTSF"])),
                     forge.seal(record), forge.seal(other)], cursor=b"after-1")]
    hostile = HostilePartner(federation, "KOR-KNPA").play(script).start()
    try:
        pulled_at = time.time()
        report = jpn.puller.pull("KOR-KNPA")
    finally:
        hostile.stop()
    assert report.error == "" and report.applied.refused == 2 and report.applied.equivocations == 1, report

    after = scrape(jpn)
    assert {dict(k)["reason"]: v for k, v in after["exchange_received_rejections_total"].items()} == {
        "invalid": 1, "not-holdable": 1, "relayed": 0, "excess-evidence": 0, "equivocation": 1}
    last = after["exchange_pull_last_success_timestamp_seconds"][(("peer", "KOR-KNPA"),)]
    assert pulled_at - 1 <= last <= time.time()
    assert 0 <= after["exchange_pull_lag_seconds"][(("peer", "KOR-KNPA"),)] < 60
    with jpn.store.engine.connect() as conn:
        held = conn.exec_driver_sql("SELECT count(*) FROM records WHERE originator = 'KOR-KNPA'").scalar_one()
    assert held == 2 and after["exchange_records_held"][(("originator", "KOR-KNPA"),)] == held

    # RPC latency by method and status, measured in the guard.
    assert health(federation.user_channel(jpn, "JPN-NPA", "suzuki")) == SERVING
    foreign = UserClient.of(federation.user_channel(jpn, "USA-DTSF", "rchen"))
    with pytest.raises(grpc.RpcError):
        foreign.query.Search(query_pb2.SearchRequest(text="x"), timeout=5)
    counts = scrape(jpn)["exchange_rpc_duration_seconds_count"]
    assert counts[(("code", "OK"), ("method", "grpc.health.v1.Health/Check"))] == 1
    assert counts[(("code", "PERMISSION_DENIED"), ("method", "exchange.v1.QueryService/Search"))] == 1

    # The log: JSON lines; the guard's carry the caller, the puller's the partner; no contents.
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    calls = [line for line in lines if line["logger"] == "exchange.rpc"]
    assert {(c["identity"], c["method"], c["code"]) for c in calls} >= {
        ("urn:exchange:JPN-NPA:user:suzuki", "grpc.health.v1.Health/Check", "OK"),
        ("urn:exchange:USA-DTSF:user:rchen", "exchange.v1.QueryService/Search", "PERMISSION_DENIED"),
    }
    assert all(isinstance(c["duration_ms"], float) and c["client"].startswith("ipv4:127.0.0.1") for c in calls)
    pulls = [line for line in lines if line["logger"] == "exchange.sync"]
    assert pulls and all(line["peer"] == "KOR-KNPA" for line in pulls)
    assert all(line["node"] == "JPN-NPA" for line in lines)
    text = log_lines.getvalue()
    assert record.content.title not in text and other.content.title not in text


def test_metrics_listen_defaults_to_loopback(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
    assert load_node_config(config).metrics_listen == DEFAULT_METRICS_LISTEN == "127.0.0.1:9101"
    config.write_text('agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\nmetrics_listen = ""\n', encoding="utf-8")
    assert load_node_config(config).metrics_listen == ""  # no endpoint at all


# --- SIGTERM ---------------------------------------------------------------------------------

TOTAL = 6000
BATCH = 100


def held_count(federation: Federation, data_dir: Path) -> int:
    return int(federation.backend.rows(data_dir, "SELECT count(*) FROM records")[0][0])


def test_sigterm_during_a_pull_leaves_a_consistent_database(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", TOTAL)
    config = tmp_path / "usa.toml"
    config.write_text(
        f'agency = "USA-DTSF"\nlisten = "127.0.0.1:0"\npki_dir = "{federation.pki_dir}"\n'
        f'data_dir = "{tmp_path / "usa"}"\nmetrics_listen = "127.0.0.1:0"\n'
        f'{federation.backend.config_line(tmp_path / "usa")}\n'
        f'[limits]\npull_batch_entries = {BATCH}\n\n[[peers]]\nagency = "JPN-NPA"\ninterval_seconds = 0.2\n',
        encoding="utf-8",
    )
    usa_dir = tmp_path / "usa"
    upgrade = subprocess.run([sys.executable, "-m", "exchange.cli.main", "db", "upgrade", "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert upgrade.returncode == 0, upgrade.stderr
    stderr = tmp_path / "usa.log"
    with stderr.open("wb") as err:
        node = subprocess.Popen([sys.executable, "-m", "exchange.cli.main", "node", "serve", str(config)],
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda: node.poll() is not None or held_count(federation, usa_dir) > 0,
                     "the schedule's first batch", 30)
            assert node.poll() is None, stderr.read_text()
            node.send_signal(signal.SIGTERM)
            try:
                code = node.wait(timeout=20)
            except subprocess.TimeoutExpired:  # the node's log says how far its stop got
                pytest.fail(f"the node did not exit within 20 s of SIGTERM; its log:\n{stderr.read_text()[-6000:]}")
            assert code == 0, stderr.read_text()
        finally:
            if node.poll() is None:
                node.kill()
    held = held_count(federation, usa_dir)
    # Stopped at a batch boundary, not after the whole catch-up.
    assert 0 < held < TOTAL - BATCH, held

    assert federation.backend.integrity_problems(usa_dir) == []
    assert federation.backend.rows(usa_dir, "SELECT count(*) FROM log") == [(held,)]
    assert federation.backend.rows(usa_dir, "SELECT originator, record_id, version, count(*) FROM log "
                                        "GROUP BY 1, 2, 3 HAVING count(*) > 1") == []
    # The cursor, opened by the server that sealed it, points exactly past what is held.
    [(cursor,)] = federation.backend.rows(usa_dir, "SELECT cursor FROM peers WHERE agency = 'JPN-NPA'")
    usa = Principal(Identity("USA-DTSF", None), Role.NODE, "TOP SECRET")
    position = SyncService("JPN-NPA", jpn.store, Trust(federation.manifest), jpn.config.limits)._position(cursor, usa)
    with jpn.store.engine.connect() as conn:
        served = set(conn.execute(text("SELECT originator, record_id FROM log WHERE seq <= :p"),
                                  {"p": position}).all())
    assert set(federation.backend.rows(usa_dir, "SELECT originator, record_id FROM records")) == served

    lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
    assert any(line["logger"] == "exchange.sync" and line.get("peer") == "JPN-NPA" for line in lines)
    assert lines[-1]["msg"] == "node USA-DTSF stopped"

    # A restart pulls the rest from the cursor: nothing twice, nothing missing.
    rest = subprocess.run([sys.executable, "-m", "exchange.cli.main", "sync", "--peer", "JPN-NPA",
                           "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert rest.returncode == 0, rest.stderr
    assert f"received {TOTAL - held:,}, stored {TOTAL - held:,}, duplicates 0" in rest.stdout, rest.stdout
    assert held_count(federation, usa_dir) == TOTAL
    assert federation.backend.rows(usa_dir, "SELECT count(*) FROM log") == [(TOTAL,)]


def test_cancelled_health_watches_do_not_hold_the_nodes_threads(federation: Federation, tmp_path: Path) -> None:
    """Review finding: a Watch held its RPC thread after the client left; 16 of them hung the node."""
    from exchange.node.health import MAX_WATCHERS
    from exchange.v1 import submission_pb2
    from tests.federation import UserClient, draft

    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    key = (federation.pki_dir / "KOR-KNPA" / "node.key").read_bytes()
    cert = (federation.pki_dir / "KOR-KNPA" / "node.crt").read_bytes()
    health = health_pb2_grpc.HealthStub(federation.channel(node.port, server_agency="JPN-NPA", key=key, cert=cert))
    for _ in range(3):  # more watches than the node has threads, in rounds, each cancelled
        calls = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(MAX_WATCHERS)]
        for call in calls:
            assert next(call).status == health_pb2.HealthCheckResponse.SERVING
        extra = health.Watch(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.RpcError) as refused:
            next(extra)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in calls:
            call.cancel()
        # Each watch notices its client left within its poll interval, and gives its thread back.
        wait_for(lambda: node.health.watching == 0, "every cancelled watch to end")
    analyst = UserClient.of(federation.user_channel(node, "JPN-NPA", "sato"))
    assert analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft()), timeout=5).receipt.created
