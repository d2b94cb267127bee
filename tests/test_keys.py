"""Keys and certificates over a federation's life: rotation, compromise and re-signing,
revoked certificates, a renewed server certificate.

Real nodes on loopback over mutual TLS, a PKI made for this module by ``pki init`` (these
tests rotate its keys and renew its certificates, so not the session's), real Ed25519 keys.
One test per scenario of issue 11's table, each with its negative twin:

- rotation: new records signed with the new key, old ones still valid; twin: a node
  without the new manifest refuses the new key's records and keeps the old ones;
- compromise: hidden everywhere; re-sign: shown and served everywhere, nothing lost; twin:
  a re-signed envelope with other content, a wrong key or the compromised key is refused;
- a revoked user certificate is refused on its next call; twin: another user, and the same
  serial in another agency's list, change nothing;
- a revoked node certificate's open stream ends; twin: another partner's stream goes on;
- a renewed server certificate is served without a restart; twin: a certificate that does
  not match the node's key is not taken.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exchange.cli.main import main
from exchange.config import load_manifest, load_node_config
from exchange.core.identity import Identity
from exchange.core.manifest import Manifest, Partner, RevokedCertificate, SigningKey, parse_manifest
from exchange.core.trust import Trust
from exchange.errors import ConfigError
from exchange.node.server import Node
from exchange.pki import (
    CERT_LIFETIME,
    load_cert,
    load_private_key,
    private_key_pem,
    renew_certificate,
    rotate_signing_key,
)
from exchange.records.envelope import RECORD_TYPE, Signer, content_hash
from exchange.records.keyring import KeyRing
from exchange.records.manifests import parse_document, sign
from exchange.store.current import current_record
from exchange.store.log import log_after, log_entries
from exchange.store.received import apply_batch
from exchange.store.resign import resign_own
from exchange.sync.verifier import Verifier
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.backends import Backend
from tests.federation import USERS, Federation, UserClient, draft, free_port, make_federation

J, U, K, G = "JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA"
WIDE = records_pb2.Marking(classification="RESTRICTED", releasable_to=[U, K, G], tlp="GREEN")
CHAIN = [(J, U), (U, K), (K, G)]  # GBR-NPSA gets JPN-NPA's records only through two relays


@pytest.fixture
def fed(tmp_path: Path, backend: Backend) -> Iterator[Federation]:
    """A federation of its own: these tests rotate its keys and renew its certificates."""
    federation = make_federation(tmp_path / "federation")
    federation.backend = backend
    yield federation
    federation.stop()


def submit(node: Node, fed: Federation, title: str, handle: str = "sato") -> records_pb2.RecordRef:
    client = UserClient.of(fed.user_channel(node, node.config.agency, handle))
    try:
        request = submission_pb2.SubmitRequest(draft=draft(title=title, marking=WIDE))
        ref: records_pb2.RecordRef = client.submission.Submit(request, timeout=10).receipt.ref
        return ref
    finally:
        client.channel.close()


def pull_along(nodes: dict[str, Node], links: list[tuple[str, str]], rounds: int = 4) -> None:
    """Both ends of every link pull from each other, ``rounds`` times over."""
    for _ in range(rounds):
        for a, b in links:
            for puller, peer in ((a, b), (b, a)):
                if puller in nodes and peer in nodes:
                    report = nodes[puller].puller.pull(peer)
                    assert report.error == "", report


def signed_by(node: Node, ref: records_pb2.RecordRef) -> str | None:
    """The key id of the envelope ``node`` shows for ``ref`` (None: not shown)."""
    found = current_record(node.store, ref.originator, ref.record_id)
    return None if found is None else records_pb2.Envelope.FromString(found.envelope).key_id


def served_ids(node: Node, originator: str) -> set[str]:
    """The record ids of ``originator`` whose entries ``node`` serves from its log."""
    return {e.record_id for e in log_after(node.store, 0) if e.originator == originator and not e.is_withdrawal}


def compromised(manifest: Manifest, key_id: str, version: int) -> Manifest:
    partner = manifest.partner(key_id.partition("/")[0])
    keys = tuple(dataclasses.replace(k, compromised_since=k.not_before) if k.key_id == key_id else k
                 for k in partner.keys)
    return dataclasses.replace(manifest, version=version,
                               partners={**manifest.partners, partner.code: dataclasses.replace(partner, keys=keys)})


def revoking(manifest: Manifest, agency: str, cert: x509.Certificate, version: int, *, by_serial: bool) -> Manifest:
    partner = manifest.partner(agency)
    entry = (RevokedCertificate(serial=cert.serial_number, reason="key leaked") if by_serial
             else RevokedCertificate(fingerprint=cert.fingerprint(hashes.SHA256())))
    return dataclasses.replace(manifest, version=version, partners={
        **manifest.partners, agency: dataclasses.replace(partner, revoked=(*partner.revoked, entry))})


def rotate(fed: Federation, agency: str) -> tuple[Manifest, str, str]:
    """``keys rotate`` for ``agency``: (the proposed manifest, the new key id, the retired one)."""
    rotation = rotate_signing_key(agency, fed.pki_dir / agency, fed.pki_dir / "manifest.toml",
                                  fed.pki_dir / "manifest.proposed.toml")
    return load_manifest(rotation.proposal), rotation.key_id, rotation.retired


# --- key rotation -----------------------------------------------------------------------------


def rotation_signs_new_records_with_the_new_key_and_old_ones_still_verify(fed: Federation,
                                                                               tmp_path: Path) -> None:
    nodes = {a: fed.start_node(a, tmp_path / a) for a in (J, U, K)}
    old = submit(nodes[J], fed, "before the rotation")
    pull_along(nodes, [(J, U), (J, K)])
    proposed, new_key, retired = rotate(fed, J)
    # Until the federation adopts the proposal, the node goes on signing with the published key.
    assert nodes[J].signer.key_id == retired
    assert signed_by(nodes[J], submit(nodes[J], fed, "rotated, not yet adopted")) == retired
    for agency in (J, U):  # KOR-KNPA is the twin: it never adopts the new manifest
        nodes[agency].adopt(proposed)
    assert nodes[J].signer.key_id == new_key
    new = submit(nodes[J], fed, "after the rotation")
    assert signed_by(nodes[J], new) == new_key
    pull_along(nodes, [(J, U), (J, K)])
    # USA-DTSF holds and shows both: the retired key still verifies what it signed.
    assert signed_by(nodes[U], old) == retired and signed_by(nodes[U], new) == new_key
    # A node restarted after the rotation signs with the new key (signing.key) too.
    # Twin: KOR-KNPA, on the old manifest, refuses the unknown key's record and keeps the old one.
    assert signed_by(nodes[K], old) == retired
    assert signed_by(nodes[K], new) is None
    assert new.record_id not in served_ids(nodes[K], J)


# --- compromise and re-signing ------------------------------------------------------------------


def compromise_hides_everywhere_and_resign_shows_and_serves_everywhere(fed: Federation,
                                                                           tmp_path: Path) -> None:
    nodes = {a: fed.start_node(a, tmp_path / a) for a in (J, U, K, G)}
    refs = [submit(nodes[J], fed, f"record {n}") for n in range(3)]
    pull_along(nodes, CHAIN)
    analyst = UserClient.of(fed.user_channel(nodes[J], J, "sato"))
    # The third is retracted once everyone holds it: a retracted version and a withdrawal, both
    # to be re-signed too.
    analyst.submission.Retract(submission_pb2.RetractRequest(ref=refs[2], base_version=1, reason="duplicate"),
                               timeout=10)
    analyst.channel.close()
    pull_along(nodes, CHAIN)
    ids = {r.record_id for r in refs}
    for agency, node in nodes.items():
        assert served_ids(node, J) == ids, agency
    proposed, new_key, old_key = rotate(fed, J)
    leaked = compromised(proposed, old_key, proposed.version + 1)
    for node in nodes.values():
        node.adopt(leaked)
    # Everything the leaked key signed is hidden everywhere: not shown, not served.
    for agency, node in nodes.items():
        assert all(signed_by(node, r) is None for r in refs), agency
        assert served_ids(node, J) == set(), agency
    signer = nodes[J].signer.signer()
    assert signer.key_id == new_key
    # Three current versions, the retracted record's first version (its originator keeps it) and
    # the withdrawal.
    assert resign_own(nodes[J].store, signer.seal, signer.key_id, leaked.supersedes) == 5
    assert resign_own(nodes[J].store, signer.seal, signer.key_id, leaked.supersedes) == 0  # nothing left
    pull_along(nodes, CHAIN)
    for agency, node in nodes.items():
        assert all(signed_by(node, r) == new_key for r in refs), agency  # shown again
        assert served_ids(node, J) == ids, agency  # and served, relays included: nothing lost
        for ref in refs[:2]:
            entries = log_entries(node.store, J, ref.record_id)
            # One content, two signatures: the replaced entry stays, purged, under the leaked key.
            assert {(e.key_id, bool(e.envelope)) for e in entries} == {(old_key, False), (new_key, True)}, agency
            assert len({e.content_hash for e in entries}) == 1
        retracted = log_entries(node.store, J, refs[2].record_id)
        assert all(e.key_id == new_key for e in retracted if e.envelope and not e.purged), agency
        assert any(e.key_id == new_key and "withdrawal" in e.payload_type and not e.payload_type.endswith(
            ";replaced") for e in retracted), agency
        assert signed_by(node, refs[2]) == new_key
    # A liaison officer of GBR-NPSA (two relays away) is shown them through its node.
    client = UserClient.of(fed.user_channel(nodes[G], G, "ebrooks"))
    found = client.query.Search(query_pb2.SearchRequest(originators=[J]), timeout=10)
    assert {r.envelope.key_id for r in found.records} == {new_key} and len(found.records) == 2  # + 1 retracted
    client.channel.close()


def a_resigned_envelope_is_taken_only_for_the_same_content_and_a_trusted_key(
    fed: Federation, tmp_path: Path
) -> None:
    jpn, usa = fed.start_node(J, tmp_path / J), fed.start_node(U, tmp_path / U)
    ref = submit(jpn, fed, "the original")
    pull_along({J: jpn, U: usa}, [(J, U)])
    proposed, new_key, old_key = rotate(fed, J)
    leaked = compromised(proposed, old_key, proposed.version + 1)
    usa.adopt(leaked)
    held = records_pb2.Envelope.FromString(log_entries(usa.store, J, ref.record_id)[0].envelope)
    new_private = KeyRing.load(J, fed.pki_dir / J, lambda: leaked).signer().private_key
    record = records_pb2.Record.FromString(held.payload)
    record.content.title = "the original, edited"
    other = Ed25519PrivateKey.generate()
    cases = {
        # other content under the new key: not a re-signature (an equivocating version instead)
        "changed content": Signer(J, new_key, new_private).seal(RECORD_TYPE, record.SerializeToString()),
        "wrong key": Signer(J, new_key, other).seal(RECORD_TYPE, held.payload),  # signature does not verify
        "leaked key": held,  # the compromised key's own envelope, served again
        "another agency's key": Signer(J, usa.signer.key_id, usa.signer.signer().private_key).seal(
            RECORD_TYPE, held.payload),
    }
    verifier = Verifier(U, Trust(leaked))
    for name, envelope in cases.items():
        entry = verifier.check(envelope, J)
        apply_batch(usa.store, J, [entry], None, supersedes=leaked.supersedes)
        assert signed_by(usa, ref) is None, name  # still hidden: nothing replaced the leaked signature
    # The positive: the same bytes under the new key replace the held envelope.
    good = Signer(J, new_key, new_private).seal(RECORD_TYPE, held.payload)
    report = apply_batch(usa.store, J, [verifier.check(good, J)], None, supersedes=leaked.supersedes)
    assert report.resigned == 1
    assert signed_by(usa, ref) == new_key
    assert content_hash(good.payload) == content_hash(held.payload)


# --- revoked certificates -----------------------------------------------------------------------


def a_revoked_user_certificate_is_refused_on_its_next_call(fed: Federation, tmp_path: Path) -> None:
    jpn = fed.start_node(J, tmp_path / J)
    suzuki = UserClient.of(fed.user_channel(jpn, J, "suzuki"))
    ito = UserClient.of(fed.user_channel(jpn, J, "ito"))
    search = query_pb2.SearchRequest()
    suzuki.query.Search(search, timeout=10)
    ito.query.Search(search, timeout=10)
    cert = load_cert(fed.pki_dir / J / "users" / "suzuki.crt")
    # Twin: the same serial in another agency's list revokes nothing (each agency revokes its own).
    jpn.adopt(revoking(fed.manifest, U, cert, fed.manifest.version + 1, by_serial=True))
    suzuki.query.Search(search, timeout=10)
    for version, by_serial in ((fed.manifest.version + 2, True), (fed.manifest.version + 3, False)):
        jpn.adopt(revoking(fed.manifest, J, cert, version, by_serial=by_serial))
        with pytest.raises(grpc.RpcError) as refused:  # the same open channel, its next call
            suzuki.query.Search(search, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in str(refused.value.details())
        ito.query.Search(search, timeout=10)  # another user of the agency is untouched
    suzuki.channel.close()
    ito.channel.close()


def _watch(fed: Federation, node: Node, agency: str) -> tuple[grpc.Channel, list[object], threading.Thread]:
    """A partner node's health Watch stream, read on a thread: [messages..., final status]."""
    channel = fed.node_channel(node, agency)
    stub = health_pb2_grpc.HealthStub(channel)
    seen: list[object] = []
    stream = stub.Watch(health_pb2.HealthCheckRequest(), timeout=60)

    def read() -> None:
        try:
            for message in stream:
                seen.append(message.status)
        except grpc.RpcError as error:
            seen.append(error.code())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return channel, seen, thread


def a_revoked_node_certificates_open_stream_is_ended(fed: Federation, tmp_path: Path) -> None:
    jpn = fed.start_node(J, tmp_path / J)
    usa_channel, usa_seen, usa_thread = _watch(fed, jpn, U)
    kor_channel, kor_seen, kor_thread = _watch(fed, jpn, K)
    deadline = time.monotonic() + 10
    while (not usa_seen or not kor_seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert usa_seen == [health_pb2.HealthCheckResponse.SERVING] and kor_seen == usa_seen
    started = time.monotonic()
    jpn.adopt(revoking(fed.manifest, U, load_cert(fed.pki_dir / U / "node.crt"), fed.manifest.version + 1,
                       by_serial=True))
    usa_thread.join(timeout=10)
    assert not usa_thread.is_alive() and time.monotonic() - started < 5  # within seconds
    assert usa_seen[-1] == grpc.StatusCode.CANCELLED
    assert kor_thread.is_alive() and kor_seen == [health_pb2.HealthCheckResponse.SERVING]  # the twin goes on
    usa_channel.close()
    kor_channel.close()
    kor_thread.join(timeout=10)


# --- a renewed server certificate -----------------------------------------------------------------


def served_certificate(fed: Federation, node: Node) -> x509.Certificate:
    """The certificate the node presents to a new TLS connection (a fresh handshake)."""
    context = ssl.create_default_context(cafile=str(fed.pki_dir / J / "ca.crt"))
    context.check_hostname = False
    users = fed.pki_dir / J / "users"
    context.load_cert_chain(users / "suzuki.crt", users / "suzuki.key")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="jpn-npa.node.exchange") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def a_renewed_server_certificate_is_served_without_a_restart(fed: Federation, tmp_path: Path) -> None:
    jpn = fed.start_node(J, tmp_path / J)
    before = served_certificate(fed, jpn)
    assert before.serial_number == load_cert(fed.pki_dir / J / "node.crt").serial_number
    # Twin first: a certificate that does not certify node.key is not taken (the node keeps serving).
    stray = fed.issue_cert(J, Identity(J, None))[1]
    original = (fed.pki_dir / J / "node.crt").read_bytes()
    (fed.pki_dir / J / "node.crt").write_bytes(stray)
    assert served_certificate(fed, jpn).serial_number == before.serial_number
    (fed.pki_dir / J / "node.crt").write_bytes(original)
    renewal = renew_certificate(J, fed.pki_dir / J, lifetime=CERT_LIFETIME + dt.timedelta(days=1))
    after = served_certificate(fed, jpn)
    assert after.serial_number == renewal.serial != before.serial_number
    assert after.not_valid_after_utc > before.not_valid_after_utc
    # And calls go on over new connections, with no restart.
    client = UserClient.of(fed.user_channel(jpn, J, "suzuki"))
    client.query.Search(query_pb2.SearchRequest(), timeout=10)
    client.channel.close()



# --- the operator's commands, as the README writes them --------------------------------------


def _one_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("exchange: "), err
    return err[len("exchange: "):-1]


@pytest.fixture
def sqlite_fed(tmp_path: Path) -> Iterator[Federation]:
    """The commands read the node's database from the node.toml written below: a SQLite file (the
    node tests above cover PostgreSQL)."""
    federation = make_federation(tmp_path / "federation")
    federation.backend = Backend("sqlite")
    yield federation
    federation.stop()


def test_status_renew_rotate_and_resign_commands(sqlite_fed: Federation, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    fed = sqlite_fed
    users = "".join(f'\n[[users]]\nhandle = "{h}"\nrole = "analyst"\nclearance = "SECRET"\n'
                    for h in ("sato", "suzuki"))
    config = tmp_path / "node.toml"
    config.write_text(f'agency = "{J}"\nlisten = "127.0.0.1:{free_port(set())}"\npki_dir = "{fed.pki_dir}"\n'
                      f'data_dir = "{tmp_path / "var"}"\nmetrics_listen = ""\n{users}', encoding="utf-8")
    flag = ["--config", str(config)]
    assert main(["db", "upgrade", *flag]) == 0
    assert main(["status", *flag]) == 0
    out = capfd.readouterr().out
    published = fed.manifest.partner(J).keys[0].key_id
    assert f"manifest version 1, signing key {published}" in out
    for label in ("node certificate JPN-NPA", "CA certificate JPN-NPA", "user certificate sato",
                  "user certificate suzuki", "manifest version 1"):
        assert label in out, out
    assert "WARNING" not in out and "days left" in out

    node_serial = load_cert(fed.pki_dir / J / "node.crt").serial_number
    user_key = (fed.pki_dir / J / "users" / "suzuki.key").read_bytes()
    assert main(["pki", "renew", *flag]) == 0
    assert load_cert(fed.pki_dir / J / "node.crt").serial_number != node_serial
    assert main(["pki", "renew", *flag, "--user", "suzuki"]) == 0
    assert (fed.pki_dir / J / "users" / "suzuki.key").read_bytes() == user_key  # same key by default
    assert "same key" in capfd.readouterr().out
    assert main(["pki", "renew", *flag, "--user", "nobody"]) == 2
    assert _one_line(capfd) == f"nobody is not a user of {J} in {config}"

    # A record signed with the published key, by the node this configuration describes.
    node = Node(load_node_config(config), schedule=False)
    node.start()
    try:
        ref = submit(node, fed, "signed before the rotation")
        # A user certificate with days left: `health` and `status` warn of it.
        renew_certificate(J, fed.pki_dir / J, handle="sato", lifetime=dt.timedelta(days=10))
        assert main(["health", *flag]) == 0
        lines = capfd.readouterr().out.splitlines()
        assert lines[0] == "SERVING" and len(lines) == 2
        assert lines[1].startswith("warning: user certificate sato expires in 9 days (")
        assert main(["status", *flag]) == 1
        warned = [line for line in capfd.readouterr().out.splitlines() if line.endswith("WARNING")]
        assert len(warned) == 1 and "user certificate sato" in warned[0]
        assert main(["pki", "renew", *flag, "--user", "sato"]) == 0
        assert main(["status", *flag]) == 0
        capfd.readouterr()
    finally:
        node.stop(grace=0)
    assert main(["keys", "rotate", *flag]) == 0
    said = capfd.readouterr().out
    proposal = fed.pki_dir / "manifest.proposed.toml"
    assert f"wrote the manifest proposal {proposal}" in said
    proposed = load_manifest(proposal)
    new_key = proposed.partner(J).keys[-1].key_id
    assert proposed.version == 2 and [k.key_id for k in proposed.partner(J).keys] == [published, new_key]
    assert (fed.pki_dir / J / "retired-signing-keys" / f"{published.replace('/', '_')}.key").exists()
    # Not yet adopted: the published key still signs, and nothing needs re-signing.
    assert main(["records", "resign", *flag]) == 0
    assert f"re-signed 0 entries of {J} with {published}" in capfd.readouterr().out
    # The federation's root key holders sign the proposal (a majority), the operator installs
    # it, and the node adopts it at its next start (verifying the chain from version 1).
    document = parse_document(proposal.read_bytes())
    for agency in (J, U, K):
        root = load_private_key(fed.pki_dir / "roots" / agency / "root.key")
        assert isinstance(root, Ed25519PrivateKey)
        document = sign(document, root)
    (fed.pki_dir / "manifest.toml").write_bytes(document.render())
    node = Node(load_node_config(config), schedule=False)
    assert node.manifest.version == 2 and node.signer.key_id == new_key
    node.store.close()
    assert main(["records", "resign", *flag]) == 0
    assert f"re-signed 1 entries of {J} with {new_key}" in capfd.readouterr().out
    assert main(["status", *flag]) == 0
    assert f"manifest version 2, signing key {new_key}" in capfd.readouterr().out
    node = Node(load_node_config(config), schedule=False)
    try:
        assert signed_by(node, ref) == new_key
    finally:
        node.store.close()

    # A rotation must start from the published key: a stray signing.key is refused, in one line.
    (fed.pki_dir / J / "signing.key").write_bytes(private_key_pem(Ed25519PrivateKey.generate()))
    before = (fed.pki_dir / "manifest.toml").read_bytes()
    assert main(["keys", "rotate", *flag]) == 2
    assert "is not among JPN-NPA's signing keys" in _one_line(capfd)
    assert (fed.pki_dir / "manifest.toml").read_bytes() == before


# --- what expires when ------------------------------------------------------------------------


def test_expiry_days_are_a_metric_and_a_health_warning(fed: Federation, tmp_path: Path) -> None:
    # A user certificate with ten days left, and a manifest that expires in five.
    renew_certificate(J, fed.pki_dir / J, handle="ito", lifetime=dt.timedelta(days=10))
    expiring = dataclasses.replace(fed.manifest, expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=5, hours=1))
    config = dataclasses.replace(fed.node_config(J, tmp_path / J), metrics_listen="127.0.0.1:0")
    fed.backend.migrated(tmp_path / J)
    node = Node(config, manifest=expiring, schedule=False)
    node.start()
    fed.nodes.append(node)
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    days = {(s.labels["kind"], s.labels["name"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "exchange_expiry_days"}
    assert 9 < days[("user_certificate", "ito")] < 10.1
    assert 5 < days[("manifest", "version 1")] < 5.1
    assert 396 < days[("node_certificate", J)] < 398 and days[("ca_certificate", J)] > 3000
    assert {name for kind, name in days if kind == "user_certificate"} == set(USERS[J])  # every user of node.toml
    # The health warning: logged by the node, one line per item close to its end, and only those.
    warnings = node.expiry_watch.check()
    assert len(warnings) == 2
    assert warnings[0].startswith("user certificate ito expires in 9 days (") and "pki renew" in warnings[0]
    assert warnings[1].startswith("manifest version 1 expires in 5 days (")
    # Renewed, the certificate leaves the warnings (and the metric follows at the next scrape).
    renew_certificate(J, fed.pki_dir / J, handle="ito")
    assert [w for w in node.expiry_watch.check() if "ito" in w] == []


# --- the manifest's revocation list, parsed ---------------------------------------------------

SERIAL = "5f:1e:0c"
FINGERPRINT = "ab" * 32


@pytest.mark.parametrize(("entry", "problem"), [
    ({}, "partners[0].revoked[0]: a revoked certificate needs a serial or a fingerprint"),
    ({"serial": 12}, "partners[0].revoked[0].serial: expected hex digits in a string, got 12"),
    ({"serial": "xyz"}, "partners[0].revoked[0].serial: not hex digits: 'xyz'"),
    ({"fingerprint": "abcd"}, "partners[0].revoked[0].fingerprint: a SHA-256 fingerprint is 32 bytes, got 2"),
    ({"fingerprint": "zz" * 32}, "partners[0].revoked[0].fingerprint: not hex digits"),
    ({"serial": "01", "reason": 3}, "partners[0].revoked[0].reason: expected str, got 3"),
    ({"serial": "01", "since": "yesterday"}, "partners[0].revoked[0].since: not an ISO 8601 time: 'yesterday'"),
])
def test_a_malformed_revocation_entry_is_refused_naming_the_field(entry: dict[str, object], problem: str) -> None:
    data = _manifest_data(revoked=[entry])
    with pytest.raises(ConfigError) as refused:
        parse_manifest(data, require_keys=False)
    assert str(refused.value).startswith(problem)


def test_revocation_entries_match_by_serial_or_fingerprint_only_in_their_agencys_list() -> None:
    manifest = parse_manifest(_manifest_data(revoked=[
        {"serial": SERIAL, "reason": "laptop lost", "since": "2026-12-04T09:00:00+00:00"},
        {"fingerprint": FINGERPRINT}]), require_keys=False)
    partner = manifest.partner(J)
    assert partner.revokes(0x5F1E0C, b"\x00" * 32) is not None
    assert partner.revokes(1, bytes.fromhex(FINGERPRINT)) is not None
    assert partner.revokes(0x5F1E0D, b"\x00" * 32) is None  # a serial one off: not revoked
    assert manifest.partner(U).revokes(0x5F1E0C, bytes.fromhex(FINGERPRINT)) is None


def _manifest_data(*, revoked: list[dict[str, object]]) -> dict[str, object]:
    partner = {"name": "n", "country": "JPN", "address": "127.0.0.1:1", "accreditation": "SECRET"}
    return {"version": 1, "partners": [{**partner, "code": J, "revoked": revoked}, {**partner, "code": U}]}


# --- which signature wins, as a property ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=6))
def test_a_resigned_envelope_never_alternates_between_two_keys(keys: list[tuple[int, bool]]) -> None:
    """However the keys were published (ties included) and whichever are compromised, of two keys at
    most one supersedes the other, never a key itself, and never a compromised one: two relays serving
    both envelopes of a record cannot make a holder swap them back and forth."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    published = tuple(
        SigningKey(f"{J}/k{i}", bytes([i]) * 32, start + dt.timedelta(days=day), start + dt.timedelta(days=999),
                   compromised_since=start if leaked else None)
        for i, (day, leaked) in enumerate(keys))
    partner = Partner(J, "n", "JPN", "127.0.0.1:1", "SECRET", "", published)
    manifest = Manifest(version=1, partners={J: partner})
    ids = [k.key_id for k in published] + [f"{J}/unknown"]
    for a in ids:
        assert not manifest.supersedes(J, a, a)
        for b in ids:
            assert not (manifest.supersedes(J, a, b) and manifest.supersedes(J, b, a)), (a, b)
            key = manifest.signing_key(J, a)
            if key is None or key.compromised:
                assert not manifest.supersedes(J, a, b)
            elif a != b and (held := manifest.signing_key(J, b)) is not None and held.compromised:
                assert manifest.supersedes(J, a, b)
    current = partner.current_key(start + dt.timedelta(days=10))
    trusted = [k for k in published if not k.compromised]
    assert (current is None) == (not trusted)
    if current is not None:  # the current key is superseded by no other key
        assert not any(manifest.supersedes(J, k.key_id, current.key_id) for k in published)


# --- the table: one row per scenario of issue 11's items 3 and 4 (tests/test_trust.py has those of
# items 1, 2, 5 and 6); each row's function holds its negative twin -------------------------------

ROWS: dict[str, Callable[[Federation, Path], None]] = {
    "key rotation, old records still valid":
        rotation_signs_new_records_with_the_new_key_and_old_ones_still_verify,
    "compromise hidden everywhere, re-signed, served everywhere":
        compromise_hides_everywhere_and_resign_shows_and_serves_everywhere,
    "re-signed envelope: same content, trusted key only":
        a_resigned_envelope_is_taken_only_for_the_same_content_and_a_trusted_key,
    "a revoked user certificate refused on its next call": a_revoked_user_certificate_is_refused_on_its_next_call,
    "a revoked node certificate's open stream ended": a_revoked_node_certificates_open_stream_is_ended,
    "a renewed server certificate served with no restart": a_renewed_server_certificate_is_served_without_a_restart,
}


@pytest.mark.parametrize("row", list(ROWS))
def test_keys_and_certificates(row: str, fed: Federation, tmp_path: Path) -> None:
    ROWS[row](fed, tmp_path)


def test_resign_never_launders_what_a_thief_signed_with_the_leaked_key(fed: Federation, tmp_path: Path) -> None:
    """A thief holding JPN-NPA's signing key signs a record of its own making as JPN-NPA; a
    partner node (USA-DTSF, hostile or merely relaying) holds it and JPN-NPA's node pulls it
    from there. Once the key is marked compromised the forgery is hidden everywhere, as it
    must be; `records resign` must not sign it again with the new key (it re-signed every
    entry of its agency, its own or not: the forgery came back valid under the new key)."""
    from tests.fill import make_record

    jpn, usa = fed.start_node(J, tmp_path / J), fed.start_node(U, tmp_path / U)
    genuine = submit(jpn, fed, "the genuine one")
    manifest = fed.manifest
    leaked_key = jpn.signer.signer()
    thief = Signer(J, leaked_key.key_id, leaked_key.private_key)
    forged = make_record(J, 0, WIDE, summary="made by the thief")
    envelope = thief.seal(RECORD_TYPE, forged.SerializeToString())
    report = apply_batch(usa.store, J, [Verifier(U, Trust(manifest)).check(envelope, J)], None)
    assert report.stored == 1  # USA-DTSF holds it (it verifies: the key is not known to be leaked yet)
    pull_along({J: jpn, U: usa}, [(J, U)])
    proposed, new_key, old_key = rotate(fed, J)
    assert old_key == leaked_key.key_id
    leaked = compromised(proposed, old_key, proposed.version + 1)
    for node in (jpn, usa):
        node.adopt(leaked)
    assert signed_by(jpn, forged.ref) is None and signed_by(usa, forged.ref) is None
    signer = jpn.signer.signer()
    assert resign_own(jpn.store, signer.seal, signer.key_id, leaked.supersedes) == 1  # the genuine one only
    pull_along({J: jpn, U: usa}, [(J, U)])
    assert signed_by(jpn, genuine) == signed_by(usa, genuine) == new_key  # twin: shown again
    for node in (jpn, usa):
        assert signed_by(node, forged.ref) is None  # the forgery stays hidden
        assert all(e.key_id == old_key for e in log_entries(node.store, J, forged.ref.record_id))


def test_a_thiefs_withdrawal_never_purges_the_originators_record(fed: Federation, tmp_path: Path) -> None:
    """A thief holding JPN-NPA's signing key withdraws a genuine JPN-NPA record; USA-DTSF (hostile
    or relaying) serves the withdrawal. JPN-NPA's node applied it and purged its own record for
    good: once the key was marked compromised, nothing was left to re-sign. It refuses a withdrawal
    of its own agency's record that it did not make, keeps the record, and re-signs it."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from exchange.records.envelope import WITHDRAWAL_TYPE

    jpn, usa = fed.start_node(J, tmp_path / J), fed.start_node(U, tmp_path / U)
    genuine = submit(jpn, fed, "the genuine one")
    pull_along({J: jpn, U: usa}, [(J, U)])
    leaked_key = jpn.signer.signer()
    thief = Signer(J, leaked_key.key_id, leaked_key.private_key)
    issued = Timestamp()
    issued.GetCurrentTime()
    withdrawal = records_pb2.Withdrawal(ref=genuine, version=2, issued_at=issued)
    envelope = thief.seal(WITHDRAWAL_TYPE, withdrawal.SerializeToString())
    apply_batch(usa.store, J, [Verifier(U, Trust(fed.manifest)).check(envelope, J)], None)
    report = jpn.puller.pull(U)
    assert report.applied.withdrawals == 0 and report.applied.refused == 1, report
    assert signed_by(jpn, genuine) is not None  # still shown: the key is not known to be leaked yet
    proposed, new_key, old_key = rotate(fed, J)
    leaked = compromised(proposed, old_key, proposed.version + 1)
    for node in (jpn, usa):
        node.adopt(leaked)
    signer = jpn.signer.signer()
    assert resign_own(jpn.store, signer.seal, signer.key_id, leaked.supersedes) == 1
    assert signed_by(jpn, genuine) == new_key  # shown again, under the new key
    # Twin: its own retraction, made by its node, is applied as before.
    analyst = UserClient.of(fed.user_channel(jpn, J, "sato"))
    analyst.submission.Retract(submission_pb2.RetractRequest(ref=genuine, base_version=1, reason="duplicate"),
                               timeout=10)
    analyst.channel.close()
    assert any(e.payload_type == WITHDRAWAL_TYPE and e.key_id == new_key
               for e in log_entries(jpn.store, J, genuine.record_id))


def test_a_thiefs_new_version_never_replaces_the_originators_record(fed: Federation, tmp_path: Path) -> None:
    """The same thief writes a version 2 of a genuine JPN-NPA record, served by USA-DTSF. JPN-NPA's
    node took it as the record's current version: hidden once the key was marked compromised,
    with the genuine version 1 behind it never shown again, re-signed or not. It refuses a version
    of its own agency's record that it did not make."""
    jpn, usa = fed.start_node(J, tmp_path / J), fed.start_node(U, tmp_path / U)
    genuine = submit(jpn, fed, "the genuine one")
    pull_along({J: jpn, U: usa}, [(J, U)])
    leaked_key = jpn.signer.signer()
    thief = Signer(J, leaked_key.key_id, leaked_key.private_key)
    held = records_pb2.Envelope.FromString(log_entries(usa.store, J, genuine.record_id)[0].envelope)
    forged = records_pb2.Record.FromString(held.payload)
    forged.version = 2
    forged.content.title = "rewritten by the thief"
    envelope = thief.seal(RECORD_TYPE, forged.SerializeToString())
    assert apply_batch(usa.store, J, [Verifier(U, Trust(fed.manifest)).check(envelope, J)], None).stored == 1
    report = jpn.puller.pull(U)
    assert report.applied.stored == 0 and report.applied.refused == 1, report
    proposed, new_key, old_key = rotate(fed, J)
    leaked = compromised(proposed, old_key, proposed.version + 1)
    jpn.adopt(leaked)
    signer = jpn.signer.signer()
    assert resign_own(jpn.store, signer.seal, signer.key_id, leaked.supersedes) == 1
    shown = current_record(jpn.store, J, genuine.record_id)
    assert shown is not None and shown.version == 1 and signed_by(jpn, genuine) == new_key


def test_partners_that_applied_a_thiefs_withdrawal_or_version_recover_when_the_originator_resigns(
    fed: Federation, tmp_path: Path
) -> None:
    """A thief holding JPN-NPA's signing key withdraws one genuine record and writes a version 2 of
    another; USA-DTSF takes both (the key is not known to be leaked yet) and relays them to
    KOR-KNPA and on to GBR-NPSA. JPN-NPA's own node refuses them, but at every other holder the
    genuine version 1 was purged or hidden behind the forgery: when JPN-NPA re-signed, the partners
    took the re-signed envelope for a duplicate and the distrusted withdrawal still blocked it, so
    the records stayed lost there. Once the key is marked compromised, what it signed no longer
    decides what is current: every holder takes the re-signed version 1 back, shows and serves it,
    through relays too, and nothing the thief signed is shown or served."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from exchange.records.envelope import WITHDRAWAL_TYPE

    nodes = {a: fed.start_node(a, tmp_path / a) for a in (J, U, K, G)}
    purged, rewritten = submit(nodes[J], fed, "withdrawn by the thief"), submit(nodes[J], fed, "rewritten by the thief")
    retracted = submit(nodes[J], fed, "retracted by its analyst")  # the twin: a genuine withdrawal
    pull_along(nodes, CHAIN)
    analyst = UserClient.of(fed.user_channel(nodes[J], J, "sato"))
    analyst.submission.Retract(submission_pb2.RetractRequest(ref=retracted, base_version=1, reason="duplicate"),
                               timeout=10)
    analyst.channel.close()
    pull_along(nodes, CHAIN)
    leaked_key = nodes[J].signer.signer()
    thief = Signer(J, leaked_key.key_id, leaked_key.private_key)
    issued = Timestamp()
    issued.GetCurrentTime()
    withdrawal = thief.seal(WITHDRAWAL_TYPE, records_pb2.Withdrawal(ref=purged, version=2, issued_at=issued)
                            .SerializeToString())
    held = records_pb2.Envelope.FromString(log_entries(nodes[U].store, J, rewritten.record_id)[0].envelope)
    forged = records_pb2.Record.FromString(held.payload)
    forged.version = 2
    forged.content.title = "the thief's version"
    version = thief.seal(RECORD_TYPE, forged.SerializeToString())
    verifier = Verifier(U, Trust(fed.manifest))
    report = apply_batch(nodes[U].store, J, [verifier.check(withdrawal, J), verifier.check(version, J)], None)
    assert report.withdrawals == 1 and report.stored == 1, report
    pull_along(nodes, CHAIN)
    for agency in (U, K, G):  # the forgeries took hold at every partner, relays included
        assert signed_by(nodes[agency], purged) is None, agency
        shown = current_record(nodes[agency].store, J, rewritten.record_id)
        assert shown is not None and shown.version == 2, agency
    proposed, new_key, old_key = rotate(fed, J)
    assert old_key == leaked_key.key_id
    leaked = compromised(proposed, old_key, proposed.version + 1)
    for node in nodes.values():
        node.adopt(leaked)
    for agency, node in nodes.items():  # everything the leaked key signed is hidden
        assert signed_by(node, purged) is None and signed_by(node, rewritten) is None, agency
    signer = nodes[J].signer.signer()
    # The genuine ones only: two versions 1, and the retracted record's two versions and withdrawal.
    assert resign_own(nodes[J].store, signer.seal, signer.key_id, leaked.supersedes) == 5
    pull_along(nodes, CHAIN)
    for agency, node in nodes.items():
        for ref, title in ((purged, "withdrawn by the thief"), (rewritten, "rewritten by the thief")):
            shown = current_record(node.store, J, ref.record_id)
            assert shown is not None, (agency, title)  # shown again: nothing lost
            record = records_pb2.Record.FromString(records_pb2.Envelope.FromString(shown.envelope).payload)
            assert (shown.version, record.content.title) == (1, title), agency
            assert signed_by(node, ref) == new_key, agency
        assert served_ids(node, J) == {purged.record_id, rewritten.record_id, retracted.record_id}, agency
        served = [e for e in log_after(node.store, 0) if e.originator == J]
        # Nothing the thief signed is served: no withdrawal, no version 2.
        assert {(e.record_id, e.version, e.is_withdrawal) for e in served if e.record_id != retracted.record_id} == {
            (purged.record_id, 1, False), (rewritten.record_id, 1, False)}, agency
        assert {records_pb2.Envelope.FromString(e.envelope).key_id for e in served} == {new_key}, agency
        # Twin: the genuine withdrawal, re-signed, still withdraws: version 1 is not taken back.
        assert {(e.version, e.is_withdrawal) for e in served if e.record_id == retracted.record_id} == (
            {(2, False), (2, True)} if agency != J else {(1, False), (2, False), (2, True)}), agency
    # A liaison officer of GBR-NPSA (two relays away) is shown both, genuine, through its node.
    client = UserClient.of(fed.user_channel(nodes[G], G, "ebrooks"))
    found = client.query.Search(query_pb2.SearchRequest(originators=[J]), timeout=10)
    client.channel.close()
    titles = sorted(records_pb2.Record.FromString(r.envelope.payload).content.title for r in found.records)
    assert titles == ["rewritten by the thief", "withdrawn by the thief"]  # a retracted record is not found
    assert {r.envelope.key_id for r in found.records} == {new_key}


def unpublished(manifest: Manifest, key_id: str, version: int) -> Manifest:
    """``manifest`` at ``version`` without the signing key ``key_id`` (no longer published)."""
    partner = manifest.partner(key_id.partition("/")[0])
    keys = tuple(k for k in partner.keys if k.key_id != key_id)
    return dataclasses.replace(manifest, version=version,
                               partners={**manifest.partners, partner.code: dataclasses.replace(partner, keys=keys)})


@pytest.mark.parametrize("change", ["compromised", "no longer published"])
def test_a_sighting_whose_key_is_compromised_or_dropped_is_hidden_without_an_integrity_event(
    fed: Federation, tmp_path: Path, change: str,
) -> None:
    """Sightings are verified again as users read them (exchange/node/sightings.held_on): one
    whose key was marked compromised, or is no longer in the manifest, cannot be verified and is
    left out, and is not reported as an edited row: nothing in the database changed."""
    from exchange.store.events import security_events
    from exchange.v1 import liaison_pb2, liaison_pb2_grpc

    jpn, usa = fed.start_node(J, tmp_path / J), fed.start_node(U, tmp_path / U)
    jmiller = UserClient.of(fed.user_channel(usa, U, "jmiller"))
    marking = records_pb2.Marking(classification="RESTRICTED", releasable_to=[J], tlp="GREEN")
    ref = jmiller.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(title="a US record JPN-NPA saw too", marking=marking)), timeout=10).receipt.ref
    pull_along({J: jpn, U: usa}, [(J, U)])
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(fed.user_channel(jpn, J, "suzuki"))
    rchen = liaison_pb2_grpc.LiaisonServiceStub(fed.user_channel(usa, U, "rchen"))
    suzuki.ReportSighting(liaison_pb2.ReportSightingRequest(ref=ref, verdict=records_pb2.VERDICT_SEEN), timeout=10)
    pull_along({J: jpn, U: usa}, [(J, U)])

    def shown(stub: liaison_pb2_grpc.LiaisonServiceStub) -> list[str]:
        return [s.reporter for s in stub.Sightings(liaison_pb2.SightingsRequest(ref=ref), timeout=10).sightings]

    assert shown(suzuki) == [J] and shown(rchen) == [J]
    proposed, _, old_key = rotate(fed, J)
    changed = (compromised if change == "compromised" else unpublished)(proposed, old_key, proposed.version + 1)
    assert old_key not in {k.key_id for k in changed.partner(J).keys if not k.compromised}
    for node in (jpn, usa):
        node.adopt(changed)
    assert shown(suzuki) == [] and shown(rchen) == []
    assert [e for node in (jpn, usa) for e in security_events(node.store) if e.kind == "integrity"] == []
