"""Watch hits pushed to a real HTTPS webhook on loopback: retried while it is down, each hit once
across node restarts; hits marked seen."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import hmac
import http.server
import ipaddress
import json
import socket
import ssl
import struct
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from exchange.cli.main import main
from exchange.config import NotifyTarget, UserEntry, load_node_config
from exchange.core.identity import Role
from exchange.errors import ConfigError
from exchange.node.notify import _close_abandoned_sockets
from exchange.node.server import Node
from exchange.store import audit
from exchange.store.outbox import NOTIFY_ACTION
from exchange.store.schema import watch_outbox
from exchange.v1 import liaison_pb2, liaison_pb2_grpc, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft, free_port

COMPANY = "Kestrel Components Ltd"
EMAIL = "procurement@kestrel-components.example"
SECRET = b"a shared secret between the node and the SOC"


def _self_signed(tmp: Path, name_prefix: str = "hook") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made here (the webhook's own, or the node's client certificate
    for it: not the federation's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soc webhook")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / f"{name_prefix}.crt", tmp / f"{name_prefix}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Webhook:
    """The agency's receiver: HTTPS on 127.0.0.1, checks the HMAC, deduplicates on the idempotency key."""

    def __init__(self, port: int, cert: Path, key: Path, *, client_ca: Path | None = None) -> None:
        self.port = port
        self.cert, self.key = cert, key
        self.client_ca = client_ca  # mutual TLS: the node's client certificate must chain to it (no HMAC then)
        self.posts: list[str] = []  # every accepted POST's key, in order (duplicates included)
        self.acted_on: dict[str, dict[str, object]] = {}  # what the receiver acts on: once per key
        self.bad_signatures = 0
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(expected, self.headers.get("X-Exchange-Signature", ""))
                if hook.client_ca is None and not signed:
                    hook.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                key = self.headers["Idempotency-Key"]
                hook.posts.append(key)
                hook.acted_on.setdefault(key, json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.client_ca))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start_jpn(federation: Federation, data_dir: Path, *targets: NotifyTarget, check_seconds: float = 0.05,
               keep_days: float = 30.0) -> Node:
    federation.backend.migrated(data_dir)
    config = dataclasses.replace(
        federation.node_config("JPN-NPA", data_dir), listen=federation.manifest.partner("JPN-NPA").address,
        notify={t.name: t for t in targets}, notify_check_seconds=check_seconds,
        notify_keep_delivered_days=keep_days,
    )
    node = Node(config, manifest=federation.manifest, schedule=False)
    node.start()
    federation.nodes.append(node)
    return node


def _restart(federation: Federation, node: Node, data_dir: Path, target: NotifyTarget) -> Node:
    node.stop(grace=0)
    federation.nodes.remove(node)
    return _start_jpn(federation, data_dir, target)


def _submit(federation: Federation, usa: Node, title: str, *extra: records_pb2.Observable) -> records_pb2.RecordRef:
    user = UserClient.of(federation.user_channel(usa, "USA-DTSF", "jmiller"))
    marking = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["JPN-NPA"], tlp="AMBER")
    observables = [records_pb2.Observable(type="company_name", value=COMPANY), *extra]
    request = submission_pb2.SubmitRequest(draft=draft(title=title, marking=marking, observables=observables))
    return user.submission.Submit(request, timeout=10).receipt.ref


def _attempts(node: Node) -> int:
    with node.store.engine.connect() as conn:
        return max([int(a) for a in conn.execute(select(watch_outbox.c.attempts)).scalars()] or [0])


def test_a_watch_hit_reaches_the_webhook_once_across_restarts_and_is_retried_while_it_is_down(
    federation: Federation, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "secret").write_bytes(SECRET)
    port = free_port(set())
    target = NotifyTarget(name="soc", url=f"https://127.0.0.1:{port}/exchange-hits", ca_file=cert,
                          secret_file=tmp_path / "secret", retry_seconds=0.1, max_retry_seconds=0.5)
    hook = Webhook(port, cert, key)
    jpn = _start_jpn(federation, tmp_path / "jpn", target)
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    with pytest.raises(grpc.RpcError) as unknown:
        suzuki.WatchAdd(liaison_pb2.WatchAddRequest(value=COMPANY, notify="pager"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pager" in (unknown.value.details() or "")
    added = suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY, notify="soc"), timeout=10)
    assert added.entry.notify == "soc"
    try:
        first = _submit(federation, usa, "first front company sighting")
        jpn.puller.pull("USA-DTSF")
        _wait(lambda: _attempts(jpn) >= 3, "retries while the webhook is down")  # backing off, not lost
        # The node restarts while the webhook is still down: the hit owed is in the database.
        jpn = _restart(federation, jpn, tmp_path / "jpn", target)
        hook.start()
        _wait(lambda: len(hook.posts) == 1, "the first hit")
        # And again: the delivered hit is not sent again; a new one is.
        jpn = _restart(federation, jpn, tmp_path / "jpn", target)
        second = _submit(federation, usa, "second front company sighting")
        jpn.puller.pull("USA-DTSF")
        _wait(lambda: len(hook.posts) == 2, "the second hit")
        time.sleep(0.5)  # several more notifier rounds: nothing more arrives
        assert len(hook.posts) == 2 and len(set(hook.posts)) == 2 and hook.bad_signatures == 0
        sent = [(p["record"]["record_id"], p["user"]) for p in hook.acted_on.values()]  # type: ignore[index]
        assert sent == [(first.record_id, "urn:exchange:JPN-NPA:user:suzuki"),
                        (second.record_id, "urn:exchange:JPN-NPA:user:suzuki")]
        # Each delivery is audited once, as a disclosure to the user's own system.
        notified = [e for e in audit.read_entries(jpn.store, NOTIFY_ACTION) if e.detail["sent"]]
        assert sorted(e.detail["key"] for e in notified) == sorted(hook.posts)
    finally:
        hook.stop()


def test_hits_are_marked_seen(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY), timeout=10)
    first = _submit(federation, usa, "one")
    second = _submit(federation, usa, "two")
    jpn.puller.pull("USA-DTSF")

    def unseen() -> list[str]:
        hits = suzuki.WatchHits(liaison_pb2.WatchHitsRequest(unseen=True), timeout=10).hits
        return sorted(records_pb2.Record.FromString(h.record.envelope.payload).ref.record_id for h in hits)

    assert unseen() == sorted([first.record_id, second.record_id])
    assert suzuki.WatchSeen(liaison_pb2.WatchSeenRequest(refs=[first]), timeout=10).marked == 1
    assert unseen() == [second.record_id]
    flags = {records_pb2.Record.FromString(h.record.envelope.payload).ref.record_id: h.seen
             for h in suzuki.WatchHits(liaison_pb2.WatchHitsRequest(), timeout=10).hits}
    assert flags == {first.record_id: True, second.record_id: False}
    assert suzuki.WatchSeen(liaison_pb2.WatchSeenRequest(all=True), timeout=10).marked == 1
    assert unseen() == []
    # Not a hit (the own agency's record is never one): the same answer as absent.
    own = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato")).submission.Submit(
        submission_pb2.SubmitRequest(draft=draft()), timeout=10).receipt.ref
    with pytest.raises(grpc.RpcError) as refused:
        suzuki.WatchSeen(liaison_pb2.WatchSeenRequest(refs=[own]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_commands_for_alerts_and_seen(federation: Federation, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    profile = ["--profile", str(federation.pki_dir / "JPN-NPA" / "users" / "suzuki.profile.toml")]
    assert main(["watch", "add", "--type", "company_name", COMPANY, "--notify", "soc", *profile]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown notify target 'soc'" in err and "none configured" in err
    assert main(["watch", "add", "--type", "company_name", COMPANY, *profile]) == 0
    ref = _submit(federation, usa, "one")
    jpn.puller.pull("USA-DTSF")
    capsys.readouterr()
    assert main(["watch", "hits", "--unseen", "--format", "json", *profile]) == 0
    assert [h["seen"] for h in json.loads(capsys.readouterr().out)] == [False]
    assert main(["watch", "seen", ref.record_id[:8], *profile]) == 0
    assert "marked 1 hit seen" in capsys.readouterr().out
    assert main(["watch", "hits", "--unseen", "--format", "json", *profile]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["watch", "seen", *profile]) == 2
    assert "--all" in capsys.readouterr().err


def test_hits_go_to_a_mutual_tls_webhook_and_to_a_local_command(federation: Federation, tmp_path: Path) -> None:
    server_cert, server_key = _self_signed(tmp_path)
    client_cert, client_key = _self_signed(tmp_path, "node-client")
    port = free_port(set())
    hook = Webhook(port, server_cert, server_key, client_ca=client_cert)
    script, received = tmp_path / "page.py", tmp_path / "paged.jsonl"
    script.write_text(
        "import json, os, sys\n"
        f"with open({str(received)!r}, 'a') as out:\n"
        "    hit = {'key': os.environ['EXCHANGE_IDEMPOTENCY_KEY'], 'hit': json.load(sys.stdin)}\n"
        "    out.write(json.dumps(hit) + '\\n')\n",
        encoding="utf-8")
    mtls = NotifyTarget(name="soc", url=f"https://127.0.0.1:{port}/hits", ca_file=server_cert,
                        client_cert=client_cert, client_key=client_key, retry_seconds=0.1)
    pager = NotifyTarget(name="pager", command=(sys.executable, str(script)), retry_seconds=0.1)
    jpn = _start_jpn(federation, tmp_path / "jpn", mtls, pager)
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY, notify="soc"), timeout=10)
    suzuki.WatchAdd(liaison_pb2.WatchAddRequest(value=EMAIL, notify="pager"), timeout=10)
    hook.start()
    try:
        ref = _submit(federation, usa, "both", records_pb2.Observable(type="email", value=EMAIL))
        jpn.puller.pull("USA-DTSF")
        _wait(lambda: len(hook.posts) == 1 and received.exists(), "both targets")
        time.sleep(0.3)
        paged = [json.loads(line) for line in received.read_text(encoding="utf-8").splitlines()]
        assert len(paged) == 1 and paged[0]["hit"]["record"]["record_id"] == ref.record_id
        assert paged[0]["key"] == paged[0]["hit"]["idempotency_key"]
        assert len(hook.posts) == 1 and hook.posts[0] != paged[0]["key"]  # one hit per target
    finally:
        hook.stop()


def test_notify_targets_in_node_toml(tmp_path: Path) -> None:
    base = 'agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\n'
    path = tmp_path / "node.toml"
    path.write_text(base + textwrap.dedent("""
        [[notify]]
        name = "soc"
        url = "https://soc.example:8443/hits"
        ca_file = "soc-ca.crt"
        secret_file = "soc.secret"
        retry_seconds = 1

        [[notify]]
        name = "pager"
        command = ["/usr/local/bin/page", "--urgent"]
        """), encoding="utf-8")
    config = load_node_config(path)
    assert config.notify_keep_delivered_days == 30
    assert config.notify["soc"].secret_file == tmp_path / "soc.secret" and config.notify["soc"].retry_seconds == 1
    assert config.notify["pager"].command == ("/usr/local/bin/page", "--urgent")
    bad = {
        'name = "x"\nurl = "http://soc.example/hits"\nsecret_file = "s"': "a webhook must be https://",
        'name = "x"\nurl = "https://soc.example/hits"': "needs secret_file (HMAC) or client_cert",
        'name = "x"': "give exactly one of command or url",
        'name = "x"\ncommand = ["a"]\nurl = "https://soc.example/"': "give exactly one of command or url",
        'name = "x"\nurl = "https://s/"\nclient_cert = "c"': "client_cert and client_key go together",
    }
    path.write_text(base + "notify_keep_delivered_days = 7\n", encoding="utf-8")
    assert load_node_config(path).notify_keep_delivered_days == 7
    path.write_text(base + "notify_keep_delivered_days = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="notify_keep_delivered_days: expected a positive number of days"):
        load_node_config(path)
    for body, problem in bad.items():
        path.write_text(base + "[[notify]]\n" + body + "\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            load_node_config(path)


def _pager_that_is_down(tmp_path: Path) -> tuple[NotifyTarget, Path, Path]:
    """A command target that fails (exit 75) while the file ``down`` exists, and otherwise
    appends each delivery's idempotency key to ``received``; it starts down."""
    script, received, down = tmp_path / "page.py", tmp_path / "paged.txt", tmp_path / "down"
    script.write_text(
        "import os, sys\n"
        f"if os.path.exists({str(down)!r}):\n"
        "    sys.exit(75)\n"
        f"open({str(received)!r}, 'a').write(os.environ['EXCHANGE_IDEMPOTENCY_KEY'] + '\\n')\n",
        encoding="utf-8")
    down.touch()
    pager = NotifyTarget(name="pager", command=(sys.executable, str(script)), retry_seconds=0.1,
                         max_retry_seconds=0.2)
    return pager, received, down


def test_a_hit_owed_to_a_removed_watch_entry_is_not_pushed(federation: Federation, tmp_path: Path) -> None:
    pager, received, down = _pager_that_is_down(tmp_path)
    jpn = _start_jpn(federation, tmp_path / "jpn", pager)
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    entry = suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY, notify="pager"),
                            timeout=10).entry
    _submit(federation, usa, "owed")
    jpn.puller.pull("USA-DTSF")
    _wait(lambda: _attempts(jpn) >= 2, "the command failing")
    suzuki.WatchRemove(liaison_pb2.WatchRemoveRequest(id=entry.id), timeout=10)
    down.unlink()
    _wait(lambda: any(not e.detail["sent"] for e in audit.read_entries(jpn.store, NOTIFY_ACTION)), "the drop")
    assert not received.exists()


def _outbox_rows(node: Node) -> int:
    with node.store.engine.connect() as conn:
        return len(conn.execute(select(watch_outbox.c.id)).all())


def test_the_notifier_reads_only_what_is_new_and_a_pruned_hit_is_never_sent_again(
    federation: Federation, tmp_path: Path
) -> None:
    script, received = tmp_path / "page.py", tmp_path / "paged.txt"
    script.write_text(
        "import os\n"
        f"open({str(received)!r}, 'a').write(os.environ['EXCHANGE_IDEMPOTENCY_KEY'] + '\\n')\n",
        encoding="utf-8")
    pager = NotifyTarget(name="pager", command=(sys.executable, str(script)), retry_seconds=0.1)
    # Rounds by hand (the node's own waits an hour); delivered hits are kept a few milliseconds.
    keep_days = 0.005 / 86400

    def start() -> Node:
        return _start_jpn(federation, tmp_path / "jpn", pager, check_seconds=3600, keep_days=keep_days)

    def round_of(node: Node) -> int:
        assert node.notifier is not None
        node.notifier.run_once()
        return node.notifier.rows_read

    def paged() -> list[str]:
        return received.read_text(encoding="utf-8").split() if received.exists() else []

    jpn = start()
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY, notify="pager"), timeout=10)
    for i in range(6):
        _submit(federation, usa, f"old sighting {i}")
    jpn.puller.pull("USA-DTSF")
    assert round_of(jpn) == 6 and len(paged()) == 6
    time.sleep(0.02)
    assert round_of(jpn) == 0  # nothing new: nothing read
    assert _outbox_rows(jpn) == 0  # the delivered hits are pruned ...
    jpn.stop(grace=0)
    federation.nodes.remove(jpn)
    jpn = start()
    assert round_of(jpn) == 0 and len(paged()) == 6  # ... and never found nor sent again, restarted or not
    # One new hit: the round reads it alone, however many old ones there are.
    _submit(federation, usa, "new sighting")
    jpn.puller.pull("USA-DTSF")
    assert round_of(jpn) == 1
    keys = paged()
    assert len(keys) == 7 and len(set(keys)) == 7
    # A second entry to the same target matching the old records does not bring them back.
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    suzuki.WatchAdd(liaison_pb2.WatchAddRequest(value=COMPANY, notify="pager"), timeout=10)
    time.sleep(0.02)
    assert round_of(jpn) == 0 and len(paged()) == 7
    sent = [e for e in audit.read_entries(jpn.store, NOTIFY_ACTION) if e.detail["sent"]]
    assert sorted(e.detail["key"] for e in sent) == sorted(keys)  # each audited once


def _outbox_errors(node: Node) -> list[tuple[object, str]]:
    with node.store.engine.connect() as conn:
        return [(r.delivered_at, r.last_error or "")
                for r in conn.execute(select(watch_outbox.c.delivered_at, watch_outbox.c.last_error))]


@pytest.mark.parametrize("code", [301, 302, 303, 307])
def test_a_webhook_redirect_is_not_followed_and_the_hit_stays_owed(
    federation: Federation, tmp_path: Path, code: int
) -> None:
    """A webhook answering 3xx (a misconfigured proxy, or a receiver taken over) must not move the hit
    elsewhere: followed, urllib re-sends it as a GET without its body, to any host, over plain HTTP,
    with the idempotency key (which names the record) and the signature, and a 2xx there would mark
    a hit delivered that never arrived."""
    elsewhere: list[tuple[str, dict[str, str]]] = []  # what reached the redirect's target

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            elsewhere.append((self.path, dict(self.headers)))
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    cert, key = _self_signed(tmp_path)
    (tmp_path / "secret").write_bytes(SECRET)

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(code)
            self.send_header("Location", f"http://127.0.0.1:{plain.server_address[1]}/collect")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    hook.socket = context.wrap_socket(hook.socket, server_side=True)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    target = NotifyTarget(name="soc", url=f"https://127.0.0.1:{hook.server_address[1]}/hits", ca_file=cert,
                          secret_file=tmp_path / "secret", retry_seconds=0.1, max_retry_seconds=0.2)
    try:
        jpn = _start_jpn(federation, tmp_path / "jpn", target)
        usa = federation.start_node("USA-DTSF", tmp_path / "usa")
        suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
        suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY, notify="soc"), timeout=10)
        _submit(federation, usa, "redirected front company sighting")
        jpn.puller.pull("USA-DTSF")
        _wait(lambda: _attempts(jpn) >= 2 or any(at is not None for at, _ in _outbox_errors(jpn)),
              "the redirected hit retried, or taken as delivered")
        assert elsewhere == []  # nothing, not even the key or the signature, went to the redirect's target
        rows = _outbox_errors(jpn)
        assert len(rows) == 1 and rows[0][0] is None  # still owed: not marked delivered
        assert f"HTTP {code}" in rows[0][1] and "redirect" in rows[0][1]
        assert not [e for e in audit.read_entries(jpn.store, NOTIFY_ACTION) if e.detail["sent"]]
    finally:
        for server in (hook, plain):
            server.shutdown()
            server.server_close()


def test_a_hit_owed_to_a_user_whose_role_no_longer_reads_watch_hits_is_not_pushed(
    federation: Federation, tmp_path: Path
) -> None:
    """A liaison officer made a disclosure officer (who may neither search nor read watch hits,
    nor so much as list or remove the watch entry) gets nothing more pushed in their name."""
    pager, received, down = _pager_that_is_down(tmp_path)
    jpn = _start_jpn(federation, tmp_path / "jpn", pager)
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY, notify="pager"), timeout=10)
    _submit(federation, usa, "owed to a liaison officer")
    jpn.puller.pull("USA-DTSF")
    _wait(lambda: _attempts(jpn) >= 1, "the hit queued (the command failing)")
    jpn.stop(grace=0)
    federation.nodes.remove(jpn)
    config = federation.node_config("JPN-NPA", tmp_path / "jpn")
    users = {**config.users, "suzuki": UserEntry("suzuki", Role.DISCLOSURE_OFFICER, "SECRET")}
    jpn = Node(dataclasses.replace(config, listen=federation.manifest.partner("JPN-NPA").address, users=users,
                                   notify={"pager": pager}, notify_check_seconds=0.05),
               manifest=federation.manifest, schedule=False)
    jpn.start()
    federation.nodes.append(jpn)
    down.unlink()
    _submit(federation, usa, "received after the role changed")
    jpn.puller.pull("USA-DTSF")
    _wait(lambda: bool(audit.read_entries(jpn.store, NOTIFY_ACTION)), "the owed hit dealt with")
    time.sleep(0.5)  # several more rounds: the second record is not queued for them either
    assert not received.exists()
    assert not [e for e in audit.read_entries(jpn.store, NOTIFY_ACTION) if e.detail["sent"]]


def test_a_webhook_connection_reset_before_its_handshake_leaves_no_socket_open(tmp_path: Path) -> None:
    """A webhook that resets the connection between the TCP connect and the TLS wrap (one
    stopping, as in the redirect test's teardown) makes CPython 3.11's ``wrap_socket`` raise
    without closing the SSLSocket it made: the descriptor stays open until the collector finds
    it, and the collector's ResourceWarning then fails whichever test it lands in. The notifier
    closes the half-made socket where the error is caught."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    accepted.close()
    listener.close()
    time.sleep(0.1)  # the reset has arrived before the wrap
    cert, _ = _self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    with pytest.raises(OSError) as raised:
        context.wrap_socket(client, server_hostname="127.0.0.1")
    half_made = [frame.f_locals["self"] for frame, _ in traceback.walk_tb(raised.value.__traceback__)
                 if isinstance(frame.f_locals.get("self"), ssl.SSLSocket)]
    assert half_made and all(s.fileno() != -1 for s in half_made)  # the leak this guards against
    _close_abandoned_sockets(raised.value)
    assert all(s.fileno() == -1 for s in half_made)
    del raised, half_made
    gc.collect()  # nothing left for the collector to warn about (warnings are errors here)
