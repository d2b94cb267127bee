"""Operators' comfort, through the real command line: `pki init` never overwrites a PKI by
accident, a node with a foreign signing key refuses to start in one line, a node's port is one
edit, `exchange health` asks a node, every log line a node writes is JSON (gRPC's own too, and a
refused TLS handshake names the peer), pull reports are fields, `/metrics` alone answers."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.cli.main import main
from exchange.config import load_node_config
from exchange.core.identity import Identity
from exchange.pki import issue, make_ca, private_key_pem
from exchange.v1 import query_pb2, query_pb2_grpc
from tests.federation import Federation, free_port

REPO = Path(__file__).resolve().parent.parent
USAGE = 2
_PORTS: set[int] = set()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root``: its bytes, modification time and mode."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


_GRPC_CORE = re.compile(r"[IWED]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def one_error_line(capfd: pytest.CaptureFixture[str]) -> str:
    # capfd holds fd 2 of this whole test process: lines gRPC's C core logs for the test's own
    # channels (e.g. "I1204 19:41:49.727284 16633 chttp2_transport.cc:1403] ... GOAWAY") are
    # not the command's output, which is what must be one line.
    err = "".join(line for line in capfd.readouterr().err.splitlines(keepends=True) if not _GRPC_CORE.match(line))
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("exchange: "), err
    return err[len("exchange: "):-1]


@pytest.fixture
def nodes(tmp_path: Path) -> Path:
    """A copy of the repository's nodes/ (the shipped configuration), in a folder of its own."""
    copy = tmp_path / "nodes"
    shutil.copytree(REPO / "nodes", copy)
    return copy


# --- pki init -------------------------------------------------------------------------------


def test_pki_init_refuses_to_overwrite_a_pki_unless_forced(
    nodes: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes)]) == 0
    capfd.readouterr()
    before = snapshot(out)
    assert "manifest.toml" in before and "JPN-NPA/signing.key" in before

    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes)]) == USAGE
    message = one_error_line(capfd)
    assert message.startswith(f"{out} already holds a PKI (") and message.endswith("pass --force to replace it")
    assert snapshot(out) == before  # nothing written, nothing touched

    # Even with the manifest gone, an agency's keys are a PKI worth keeping.
    (out / "manifest.toml").unlink()
    kept = snapshot(out)
    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes)]) == USAGE
    assert "already holds a PKI" in one_error_line(capfd)
    assert snapshot(out) == kept

    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes), "--force"]) == 0
    after = snapshot(out)
    assert after["JPN-NPA/signing.key"][0] != before["JPN-NPA/signing.key"][0]  # really replaced
    assert after["manifest.toml"][0] != before["manifest.toml"][0]


# --- a node's signing key -------------------------------------------------------------------


def _node_toml(path: Path, pki_dir: Path, *, listen: str = "127.0.0.1:0", extra: str = "") -> Path:
    path.write_text(
        f'agency = "JPN-NPA"\nlisten = "{listen}"\npki_dir = "{pki_dir}"\ndata_dir = "{path.parent / "data"}"\n'
        f'metrics_listen = ""\n{extra}',
        encoding="utf-8",
    )
    return path


def test_a_node_whose_signing_key_is_not_in_the_manifest_refuses_to_start(pki: Federation, tmp_path: Path) -> None:
    own = tmp_path / "pki"
    shutil.copytree(pki.pki_dir, own)
    key = own / "JPN-NPA" / "signing.key"
    key.write_bytes(private_key_pem(Ed25519PrivateKey.generate()))  # a key the manifest never published
    config = _node_toml(tmp_path / "node.toml", own)
    result = subprocess.run([sys.executable, "-m", "exchange.cli.main", "node", "serve", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == USAGE
    assert result.stderr == f"exchange: {key}: this key is not among JPN-NPA's signing keys in the manifest\n"
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before its database was made


# --- shipped configuration ------------------------------------------------------------------


def test_shipped_nodes_pull_on_a_realistic_interval() -> None:
    configs = sorted((REPO / "nodes").glob("*/node.toml"))
    assert len(configs) == 4
    for path in configs:
        config = load_node_config(path)
        assert config.peers, path
        assert all(peer.interval_seconds >= 60 for peer in config.peers), (path, config.peers)


# --- changing a node's port: one edit -------------------------------------------------------


def test_a_nodes_port_is_one_edit_in_its_node_toml(
    nodes: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes)]) == 0
    jpn = nodes / "JPN-NPA" / "node.toml"
    old = load_node_config(jpn).listen
    new = f"127.0.0.1:{free_port(_PORTS)}"
    capfd.readouterr()

    # The one edit README "Changing a node's port" describes, then its command.
    jpn.write_text(jpn.read_text(encoding="utf-8").replace(f'listen = "{old}"', f'listen = "{new}"'), encoding="utf-8")
    assert main(["pki", "addresses", "--out", str(out), "--nodes", str(nodes)]) == 0
    assert capfd.readouterr().out.splitlines() == [f"JPN-NPA: {old} -> {new}",
                                                   "restart every node, so that they dial the new addresses"]

    manifest = tomllib.loads((out / "manifest.toml").read_text(encoding="utf-8"))
    addresses = {p["code"]: p["address"] for p in manifest["partners"]}
    assert addresses["JPN-NPA"] == new
    assert addresses["USA-DTSF"] == load_node_config(nodes / "USA-DTSF" / "node.toml").listen  # untouched
    for profile in (out / "JPN-NPA" / "users").glob("*.profile.toml"):
        assert tomllib.loads(profile.read_text(encoding="utf-8"))["node"] == new
    assert main(["pki", "addresses", "--out", str(out), "--nodes", str(nodes)]) == 0
    assert capfd.readouterr().out == "addresses already current\n"
    # A profile that is not TOML is one line naming it, never a traceback.
    broken = next((out / "KOR-KNPA" / "users").glob("*.profile.toml"))
    kept = broken.read_bytes()
    broken.write_text("node = [", encoding="utf-8")
    assert main(["pki", "addresses", "--out", str(out), "--nodes", str(nodes)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and str(broken) in err and "Traceback" not in err, err
    broken.write_bytes(kept)

    # The node serves on the new port, and a user's profile reaches it there.
    config = jpn
    text = config.read_text(encoding="utf-8")
    # Test hygiene, not part of the edit: no metrics port that another test run may hold.
    config.write_text(text.replace('metrics_listen = "127.0.0.1:9101"', 'metrics_listen = ""'), encoding="utf-8")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    with serving(config, tmp_path / "jpn.log", "--pki-dir", str(out)) as node:
        wait_for(lambda: health(config, "--pki-dir", str(out)) == 0, "the node on its new port")
        assert node.poll() is None
        capfd.readouterr()
        profile = out / "JPN-NPA" / "users" / "suzuki.profile.toml"
        assert main(["query", "--profile", str(profile), "--text", "技術", "--json"]) == 0
        assert json.loads(capfd.readouterr().out) == []


# --- exchange health ------------------------------------------------------------------------


def health(config: Path, *extra: str) -> int:
    return main(["health", "--config", str(config), "--timeout", "2", *extra])


def test_health_asks_the_node_with_its_own_certificate(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from grpc_health.v1 import health_pb2

    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    config = _node_toml(tmp_path / "node.toml", federation.pki_dir, listen=node.config.listen)
    assert health(config) == 0
    assert capfd.readouterr().out == "SERVING\n"
    assert health(config, "--service", "exchange.v1.QueryService") == 0
    assert capfd.readouterr().out == "SERVING\n"

    node.health.set_all(health_pb2.HealthCheckResponse.NOT_SERVING)  # as the database monitor would
    assert health(config) == 1
    assert capfd.readouterr().out == "NOT_SERVING\n"

    # The node's own certificate is good for health only: nothing that discloses.
    own = federation.pki_dir / "JPN-NPA"
    channel = federation.channel(node.port, server_agency="JPN-NPA", key=(own / "node.key").read_bytes(),
                                 cert=(own / "node.crt").read_bytes())
    with pytest.raises(grpc.RpcError) as refused:
        query_pb2_grpc.QueryServiceStub(channel).Search(query_pb2.SearchRequest(text="x"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel.close()

    node.stop(grace=0)
    federation.nodes.remove(node)
    assert health(config) == 1
    assert one_error_line(capfd).startswith(f"node at {node.config.listen} is unreachable: ")


# --- logs and metrics of a served node ------------------------------------------------------


class serving:
    """``exchange node serve CONFIG`` in a process of its own, stderr to ``log``; SIGTERM at the end."""

    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self._command = [sys.executable, "-m", "exchange.cli.main", "node", "serve", str(config), *extra]
        self._log = log

    def __enter__(self) -> subprocess.Popen[bytes]:
        with self._log.open("wb") as err:
            self.process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=err)
        return self.process

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a node's log, each of which must be a JSON object."""
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            lines.append(json.loads(text))
        except ValueError:
            pytest.fail(f"{path}:{number} is not JSON: {text!r}")
    return lines


def _foreign_client_files(tmp_path: Path) -> tuple[bytes, bytes]:
    """A user certificate claiming JPN-NPA, from a CA no federation member has."""
    now = dt.datetime.now(dt.UTC)
    impostor = issue(make_ca("JPN-NPA", now=now), Identity("JPN-NPA", "sato"), now=now)
    return impostor.key_pem, impostor.cert_pem


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()  # it holds the connection
        return int(error.code)


@pytest.fixture
def served(pki: Federation, tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """JPN-NPA's node served by `exchange node serve`, pulling from a USA-DTSF that is not there."""
    port, metrics_port = free_port(_PORTS), free_port(_PORTS)
    config = _node_toml(
        tmp_path / "node.toml", pki.pki_dir, listen=f"127.0.0.1:{port}",
        extra='[[peers]]\nagency = "USA-DTSF"\ninterval_seconds = 0.2\n',
    )
    config.write_text(config.read_text(encoding="utf-8").replace(
        'metrics_listen = ""', f'metrics_listen = "127.0.0.1:{metrics_port}"'), encoding="utf-8")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    log = tmp_path / "node.log"
    with serving(config, log, "--log-level", "info"):
        wait_for(lambda: health(config) == 0, "the node serving")
        yield log, metrics_port, config
    assert log_lines(log)[-1]["msg"] == "node JPN-NPA stopped"


def test_every_line_a_node_logs_is_json_with_refused_handshakes_and_pulls_as_fields(
    pki: Federation, tmp_path: Path, served: tuple[Path, int, Path]
) -> None:
    log, metrics_port, config = served
    port = int(load_node_config(config).listen.rpartition(":")[2])
    key, cert = _foreign_client_files(tmp_path)
    channel = pki.channel(port, server_agency="JPN-NPA", key=key, cert=cert)
    with pytest.raises(grpc.RpcError) as refused:
        query_pb2_grpc.QueryServiceStub(channel).Search(query_pb2.SearchRequest(text="x"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # refused at the TLS handshake
    channel.close()

    def refusals() -> list[dict[str, Any]]:
        return [line for line in log_lines(log) if line["msg"].startswith("TLS handshake refused")]

    try:
        wait_for(lambda: len(refusals()) == 1, "one line about the refused handshake")
    except AssertionError:
        pytest.fail(log.read_text(encoding="utf-8"))
    [line] = refusals()
    assert line["level"] == "WARNING" and line["logger"] == "grpc" and line["node"] == "JPN-NPA"
    assert line["client"].startswith("ipv4:127.0.0.1:")
    assert "CERTIFICATE_VERIFY_FAILED" in line["error"]

    def pulls() -> list[dict[str, Any]]:
        return [line for line in log_lines(log) if line["msg"].startswith("pull from USA-DTSF:")]

    wait_for(lambda: len(pulls()) >= 1, "a pull report")
    report = pulls()[0]
    assert report["peer"] == "USA-DTSF" and report["logger"] == "exchange.sync"
    for name in ("received", "batches", "stored", "duplicates", "older", "refused", "withdrawals", "equivocations"):
        assert report[name] == 0, name
    assert report["stale_cursor"] is False and report["repaired"] is False
    assert isinstance(report["duration_ms"], float)
    assert report["error"].startswith("UNAVAILABLE: ")
    assert not any("PullReport(" in json.dumps(line) for line in log_lines(log))

    # /metrics answers; any other path is 404.
    assert http_status(f"http://127.0.0.1:{metrics_port}/metrics") == 200
    for path in ("/", "/metric", "/metrics/x", "/favicon.ico"):
        assert http_status(f"http://127.0.0.1:{metrics_port}{path}") == 404, path
    assert not any(line["logger"] == "stderr" or ("source" in line and line["source"] == "stderr")
                   for line in log_lines(log))


def test_log_level_leaves_out_less_severe_lines(pki: Federation, tmp_path: Path) -> None:
    config = _node_toml(tmp_path / "node.toml", pki.pki_dir, listen=f"127.0.0.1:{free_port(_PORTS)}",
                        extra='[[peers]]\nagency = "USA-DTSF"\ninterval_seconds = 0.2\n')
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    log = tmp_path / "node.log"
    with serving(config, log, "--log-level", "WARNING"):
        wait_for(lambda: any(line["msg"].startswith("pull from USA-DTSF failed") for line in log_lines(log)),
                 "a failed pull's warning")
    lines = log_lines(log)
    assert lines and {line["level"] for line in lines} <= {"WARNING", "ERROR", "CRITICAL"}, lines
