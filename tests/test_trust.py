"""The signed manifest, table-driven: one row per scenario of issue 11 (items 1, 2, 5, 6),
each with its negative twin. Real nodes over mutual TLS on loopback, real keys: the PKI
is the session's (made by `pki init`, root keys included), each node with its own copy
of it, so that a manifest reaches a node only the way the row says (its operator's file,
or a pull from a partner that trusts it).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import shutil
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.cli.main import main
from exchange.config import NodeConfig, PeerEntry, UserEntry
from exchange.core.identity import Role
from exchange.errors import ConfigError
from exchange.node.server import Node
from exchange.pki import init_federation, load_private_key, make_ca
from exchange.records.manifests import SignedManifest, from_tables, parse_document, sign
from exchange.store.current import current_record
from exchange.store.events import security_events
from exchange.store.manifests import keep_manifest, stored_manifests
from exchange.v1 import records_pb2, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft, free_port

J, U, K, G, F = "JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA", "FRA-DGSI"
ANALYSTS = {J: "sato", U: "jmiller", K: "kimjh", G: "hwright", F: "dubois"}
USAGE = 2
_PORTS: set[int] = set()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Kit:
    """One row's federation: the session's signed PKI, a copy per node, nodes started on demand."""

    federation: Federation
    root: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    extra_pki: dict[str, Path] = field(default_factory=dict)  # agencies outside the session's PKI

    @property
    def base(self) -> Path:
        return self.federation.pki_dir

    def pki(self, agency: str) -> Path:
        """``agency``'s node's own PKI folder (a copy: its manifest file is its own)."""
        own = self.root / agency / "pki"
        if not own.exists():
            shutil.copytree(self.extra_pki.get(agency, self.base), own, ignore=shutil.ignore_patterns("roots"))
        return own

    def start(self, agency: str, *, peers: Iterable[str] = (), address: str | None = None,
              schedule: bool = False) -> Node:
        data_dir = self.root / agency / "data"
        self.federation.backend.migrated(data_dir)
        users = {ANALYSTS[agency]: UserEntry(ANALYSTS[agency], Role.ANALYST, "SECRET")}
        config = NodeConfig(
            path=data_dir / "node.toml", agency=agency,
            listen=address or self.federation.manifest.partner(agency).address,
            data_dir=data_dir, database_url=self.federation.backend.url(data_dir), pki_dir=self.pki(agency),
            users=users, peers=tuple(PeerEntry(p, 0.2 if schedule else 300) for p in peers),
        )
        node = Node(config, schedule=schedule)  # no manifest passed: the node trusts its signed chain
        node.start()
        self.federation.nodes.append(node)
        self.nodes[agency] = node
        return node

    def document(self, agency: str | None = None) -> SignedManifest:
        """The manifest ``agency``'s node trusts (the session's first one if None)."""
        if agency is None:
            return parse_document((self.base / "manifest.toml").read_bytes())
        document = self.nodes[agency].document
        assert document is not None
        return document

    def install(self, agency: str, document: SignedManifest | bytes) -> bool:
        """What an operator does: write the signed manifest into the node's PKI folder."""
        data = document if isinstance(document, bytes) else document.render()
        (self.pki(agency) / "manifest.toml").write_bytes(data)
        return self.nodes[agency].check_manifest_file()

    def events(self, agency: str) -> list[str]:
        return [e.kind for e in security_events(self.nodes[agency].store)]

    def submit(self, agency: str, **marking: Any) -> str:
        node = self.nodes[agency]
        base = self.extra_pki.get(agency, self.base) / agency / "users" / ANALYSTS[agency]
        channel = self.federation.channel(node.port, server_agency=agency, key=base.with_suffix(".key").read_bytes(),
                                          cert=base.with_suffix(".crt").read_bytes(),
                                          roots=(self.pki(agency) / agency / "ca.crt").read_bytes())
        analyst = UserClient.of(channel)
        receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(
            draft=draft(marking=records_pb2.Marking(**marking))), timeout=10).receipt
        channel.close()
        return str(receipt.ref.record_id)


def propose(document: SignedManifest, change: Callable[[dict[str, Any]], None] | None = None, *,
            version: int | None = None, expires: dt.datetime | None = None) -> SignedManifest:
    """The next version of ``document`` (unsigned), changed by ``change``."""
    body = copy.deepcopy(dict(document.body))
    body["version"] = version if version is not None else document.version + 1
    body["expires"] = (expires or dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(timespec="seconds")
    if change is not None:
        change(body)
    return from_tables(body)


def signed(kit: Kit, document: SignedManifest, *agencies: str) -> SignedManifest:
    for agency in agencies:
        key = load_private_key(kit.extra_pki.get(agency, kit.base) / "roots" / agency / "root.key")
        assert isinstance(key, Ed25519PrivateKey)
        document = sign(document, key)
    return document


def renamed(name: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        next(p for p in body["partners"] if p["code"] == J)["name"] = name
    return change


def accreditation(agency: str, level: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        next(p for p in body["partners"] if p["code"] == agency)["accreditation"] = level
    return change


# --- the rows -----------------------------------------------------------------------------


def rollback_refused(kit: Kit) -> None:
    jpn = kit.start(J)
    first = kit.document()
    second = signed(kit, propose(first, renamed("NPA v2")), J, U, K)
    assert kit.install(J, second)  # twin: the valid next version is adopted
    assert jpn.manifest.version == first.version + 1
    assert not kit.install(J, first)  # the older one, validly signed: refused
    assert jpn.manifest.version == first.version + 1
    assert "manifest-rollback" in kit.events(J)


def expired_refused(kit: Kit) -> None:
    jpn = kit.start(J)
    first = kit.document()
    stale = signed(kit, propose(first, renamed("NPA v2"), expires=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)),
                   J, U, K, G)
    assert not kit.install(J, stale)
    assert jpn.manifest.version == first.version and kit.events(J) == ["manifest-expired"]
    fresh = signed(kit, propose(first, renamed("NPA v2")), J, U, K, G)  # twin: the same change, not expired
    assert kit.install(J, fresh) and jpn.manifest.version == first.version + 1


def below_threshold_refused(kit: Kit) -> None:
    jpn = kit.start(J)
    first = kit.document()
    assert first.manifest.threshold == 3  # a majority of four
    proposal = propose(first, accreditation(G, "SECRET"))
    assert not kit.install(J, signed(kit, proposal, J, U))
    assert jpn.manifest.partner(G).accreditation == "CONFIDENTIAL" and kit.events(J) == ["manifest-threshold"]
    # Two signatures by one agency count once.
    assert not kit.install(J, signed(kit, proposal, J, U).with_signature(signed(kit, proposal, U).signatures[0]))
    assert kit.install(J, signed(kit, proposal, J, U, K))  # twin: a third agency signs
    assert jpn.manifest.partner(G).accreditation == "SECRET"


def wrong_signer_refused(kit: Kit) -> None:
    jpn = kit.start(J)
    first = kit.document()
    proposal = propose(first, accreditation(G, "SECRET"))
    strangers = proposal
    for _ in range(4):
        strangers = sign(strangers, Ed25519PrivateKey.generate())  # keys of no agency's root
    assert not kit.install(J, strangers)
    good = signed(kit, proposal, J, U, K)
    tampered = good.render().replace(b'accreditation = "SECRET"', b'accreditation = "TOP SECRET"', 1)
    assert tampered != good.render()
    assert not kit.install(J, tampered)  # one changed field: no root signature verifies
    assert kit.events(J) == ["manifest-signer", "manifest-signer"]
    assert jpn.manifest.partner(G).accreditation == "CONFIDENTIAL"
    assert kit.install(J, good)  # twin: the same document, unchanged
    assert jpn.manifest.partner(G).accreditation == "SECRET"


def adopted_by_every_node_through_sync(kit: Kit) -> None:
    nodes = {J: kit.start(J), U: kit.start(U, peers=[J]), K: kit.start(K, peers=[U]), G: kit.start(G, peers=[K])}
    first = kit.document()
    refused = signed(kit, propose(first, renamed("NPA v2")), J, U)  # twin: below threshold, at its source
    assert not kit.install(J, refused)
    for puller, peer in ((U, J), (K, U), (G, K)):
        assert not nodes[puller].puller.pull(peer).error
    assert {n.manifest.version for n in nodes.values()} == {first.version}
    assert kit.install(J, signed(kit, propose(first, renamed("NPA v2")), J, U, K))  # installed at JPN-NPA only
    # A puller that says it trusts the older version is served nothing until it has the newer one.
    channel = kit.federation.node_channel(nodes[J], U)
    with pytest.raises(grpc.RpcError) as behind:
        list(sync_pb2_grpc.SyncServiceStub(channel).Pull(  # type: ignore[no-untyped-call]
            sync_pb2.PullRequest(manifest_version=first.version), timeout=10))
    channel.close()
    assert behind.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (behind.value.details() or "").startswith(f"newer manifest: version {first.version + 1} is trusted here")
    for puller, peer in ((U, J), (K, U), (G, K)):  # each pull: told to update, fetches, adopts, pulls
        report = nodes[puller].puller.pull(peer)
        assert not report.error, report.error
        assert nodes[puller].manifest.version == first.version + 1
        assert nodes[puller].manifest.partner(J).name == "NPA v2"
        assert [m.source for m in stored_manifests(nodes[puller].store)] == ["file", peer]
        # Its manifest file follows: what reads the file before the store sees the same version.
        assert parse_document((kit.pki(puller) / "manifest.toml").read_bytes()).version == first.version + 1


def learnt_from_a_puller(kit: Kit) -> None:
    """USA-DTSF only serves JPN-NPA, never pulls from it: it learns of the newer manifest
    from JPN-NPA's pull (which states its version) and fetches it from JPN-NPA."""
    jpn, usa = kit.start(J, peers=[U]), kit.start(U)
    first = kit.document()
    assert not jpn.puller.pull(U).error
    assert usa.manifest.version == first.version  # twin: a puller on the same version teaches nothing
    assert kit.install(J, signed(kit, propose(first, renamed("NPA v2")), J, U, K))
    assert not jpn.puller.pull(U).error  # served at once; USA-DTSF fetches in the background
    wait_for(lambda: usa.manifest.version == first.version + 1, "USA-DTSF to fetch JPN-NPA's manifest")
    assert [m.source for m in stored_manifests(usa.store)] == ["file", J]


def fifth_agency_joins(kit: Kit) -> None:
    fra_pki = kit.root / "onboard"
    kit.extra_pki[F] = fra_pki
    address = f"127.0.0.1:{free_port(_PORTS)}"
    onboard = kit.root / "onboard-nodes"
    (onboard / F).mkdir(parents=True)
    (onboard / "federation.toml").write_text(textwrap.dedent(f"""\
        version = 1

        [[partners]]
        code = "{F}"
        name = "Direction générale de la sécurité intérieure"
        country = "FRA"
        address = "{address}"
        accreditation = "SECRET"
        """), encoding="utf-8")
    (onboard / F / "node.toml").write_text(
        f'agency = "{F}"\nlisten = "{address}"\n\n[[users]]\nhandle = "dubois"\nrole = "analyst"\n'
        'clearance = "SECRET"\n', encoding="utf-8")
    joining = parse_document(init_federation(onboard, fra_pki).read_bytes())

    jpn = kit.start(J, peers=["*"], schedule=True)  # pulls from every partner in the manifest
    first = kit.document()

    def join(body: dict[str, Any]) -> None:
        body["partners"].append(dict(joining.body["partners"][0]))
        body["roots"].append(dict(joining.body["roots"][0]))

    second = signed(kit, propose(first, join), J, U, K, F)
    (kit.pki(F) / "manifest.toml").write_bytes(second.render())  # the new partner starts from v2
    fra = kit.start(F, peers=[J], address=address)
    # Twin: JPN-NPA has not adopted v2 yet: FRA-DGSI's handshake is refused.
    assert "UNAVAILABLE" in fra.puller.pull(J).error
    assert kit.install(J, second)  # no restart: JPN-NPA serves FRA-DGSI from its next handshake
    released = kit.submit(J, classification="CONFIDENTIAL", releasable_to=[F, U], tlp="GREEN")
    withheld = kit.submit(J, classification="CONFIDENTIAL", releasable_to=[U], tlp="GREEN")
    report = fra.puller.pull(J)
    assert not report.error, report.error
    assert current_record(fra.store, J, released) is not None
    assert current_record(fra.store, J, withheld) is None
    assert jpn.manifest.version == fra.manifest.version == first.version + 1
    # And the other way, with no restart: JPN-NPA's schedule now pulls from FRA-DGSI too.
    french = kit.submit(F, classification="RESTRICTED", releasable_to=[J], tlp="GREEN")
    wait_for(lambda: current_record(jpn.store, F, french) is not None, "JPN-NPA to pull FRA-DGSI's record")


def partner_removed(kit: Kit) -> None:
    jpn = kit.start(J, peers=[G])
    gbr = kit.start(G, peers=[J])
    british = kit.submit(G, classification="RESTRICTED", releasable_to=[J], tlp="GREEN")
    assert not jpn.puller.pull(G).error and current_record(jpn.store, G, british) is not None
    kit.submit(J, classification="RESTRICTED", releasable_to=[G], tlp="GREEN")
    assert not gbr.puller.pull(J).error
    current, proposal = str(kit.base / "manifest.toml"), str(kit.root / "proposal.toml")
    # The runbook's commands: propose, sign at three agencies, check, install.
    assert main(["manifest", "propose", "--manifest", current, "--remove-partner", G, "--out", proposal]) == 0
    for agency in (J, U):
        assert main(["manifest", "sign", proposal, "--key", str(kit.base / "roots" / agency / "root.key")]) == 0
    assert main(["manifest", "status", proposal, "--trusted", current]) == 1  # two of three: not ready
    assert not kit.install(J, Path(proposal).read_bytes())  # twin: refused, GBR-NPSA still served
    assert not gbr.puller.pull(J).error
    assert main(["manifest", "sign", proposal, "--key", str(kit.base / "roots" / K / "root.key")]) == 0
    assert main(["manifest", "status", proposal, "--trusted", current]) == 0
    assert kit.install(J, Path(proposal).read_bytes())
    removed = jpn.manifest.partner(G)
    assert removed.removed_at is not None and all(k.not_after <= dt.datetime.now(dt.UTC) for k in removed.keys)
    # No longer served: on the connection it had open, refused at its next call...
    assert gbr.puller.pull(J).error == f"UNAUTHENTICATED: {G} is not a federation agency"
    gbr.puller._forget(J)
    assert gbr.puller.pull(J).error.startswith("UNAVAILABLE")  # ...and at the handshake of a new one
    assert current_record(jpn.store, G, british) is not None  # what it shared stays readable
    with pytest.raises(grpc.RpcError) as refused:  # nothing new is released to it
        kit.submit(J, classification="RESTRICTED", releasable_to=[G], tlp="GREEN")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pull" not in jpn.puller.pull(G).error and G in jpn.puller.pull(G).error  # and not pulled from


def accreditation_lowered_purges(kit: Kit) -> None:
    usa = kit.start(U)
    kor = kit.start(K, peers=[U])
    secret = kit.submit(U, classification="SECRET", releasable_to=[K, J], tlp="GREEN")
    confidential = kit.submit(U, classification="CONFIDENTIAL", releasable_to=[K, J], tlp="GREEN")
    assert not kor.puller.pull(U).error
    assert current_record(kor.store, U, secret) is not None
    first = kit.document()
    lowered = propose(first, accreditation(K, "CONFIDENTIAL"))
    assert not kit.install(U, signed(kit, lowered, U, K))  # twin: not enough signatures, nothing purged
    assert not kor.puller.pull(U).error and current_record(kor.store, U, secret) is not None
    assert kit.install(U, signed(kit, lowered, U, K, J))
    report = kor.puller.pull(U)  # told, fetches, adopts: purges what it may no longer hold
    assert not report.error, report.error
    assert kor.manifest.partner(K).accreditation == usa.manifest.partner(K).accreditation == "CONFIDENTIAL"
    assert current_record(kor.store, U, secret) is None
    assert current_record(kor.store, U, confidential) is not None


def restart_keeps_the_trusted_chain(kit: Kit) -> None:
    jpn = kit.start(J)
    first = kit.document()
    second = signed(kit, propose(first, renamed("NPA v2")), J, U, K)
    assert kit.install(J, second)
    jpn.stop(grace=0)
    (kit.pki(J) / "manifest.toml").write_bytes(first.render())  # an old file put back: not a rollback at start
    again = kit.start(J)
    assert again.manifest.version == second.version and again.manifest.partner(J).name == "NPA v2"
    again.stop(grace=0)
    # Twins: another document under a trusted version number, and a version planted in the database.
    other = signed(kit, propose(first, renamed("NPA other v2")), J, U, K)
    (kit.pki(J) / "manifest.toml").write_bytes(other.render())
    with pytest.raises(ConfigError, match="differs from the version 2 this node trusts"):
        kit.start(J)
    (kit.pki(J) / "manifest.toml").write_bytes(second.render())
    third = kit.start(J)
    forged = propose(second, renamed("NPA forged"))
    for _ in range(3):
        forged = sign(forged, Ed25519PrivateKey.generate())
    keep_manifest(third.store, forged.version, forged.render(), "planted")
    third.stop(grace=0)
    with pytest.raises(ConfigError, match="stored manifest version 3 does not follow version 2"):
        kit.start(J)


def pki_init_twice_changes_nothing(kit: Kit) -> None:
    nodes = kit.root / "nodes"
    (nodes / J).mkdir(parents=True)
    (nodes / "federation.toml").write_text(
        f'version = 1\n\n[[partners]]\ncode = "{J}"\nname = "NPA"\ncountry = "JPN"\naddress = "127.0.0.1:1"\n'
        'accreditation = "SECRET"\n', encoding="utf-8")
    (nodes / J / "node.toml").write_text(f'agency = "{J}"\nlisten = "127.0.0.1:1"\n', encoding="utf-8")
    out = kit.root / "out"
    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes)]) == 0

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}

    before = snapshot()
    assert any(name.endswith("roots/JPN-NPA/root.key") for name in before)
    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes)]) == USAGE
    assert snapshot() == before
    shutil.rmtree(out / J)  # the root key alone is a PKI worth keeping
    kept = snapshot()
    assert main(["pki", "init", "--out", str(out), "--nodes", str(nodes)]) == USAGE
    assert snapshot() == kept


def node_refuses_a_ca_the_manifest_disagrees_with(kit: Kit) -> None:
    kit.start(J)  # twin: its own CA, as published
    other = kit.pki(U)
    (other / U / "ca.crt").write_bytes(make_ca(U, now=dt.datetime.now(dt.UTC)).cert_pem)  # `pki init --force`d
    with pytest.raises(ConfigError, match="is not USA-DTSF's CA in the manifest it trusts"):
        kit.start(U)


ROWS: dict[str, Callable[[Kit], None]] = {
    "rollback refused": rollback_refused,
    "expired refused": expired_refused,
    "below threshold refused": below_threshold_refused,
    "wrong signer refused": wrong_signer_refused,
    "v+1 adopted by every node of four through sync alone": adopted_by_every_node_through_sync,
    "v+1 learnt from a partner that pulls": learnt_from_a_puller,
    "a fifth agency joins and receives what is released to it": fifth_agency_joins,
    "a partner removed": partner_removed,
    "an accreditation lowered, and the purge": accreditation_lowered_purges,
    "a restart keeps the adopted version and refuses a planted one": restart_keeps_the_trusted_chain,
    "pki init twice without --force changes nothing": pki_init_twice_changes_nothing,
    "a node refuses to start when its CA disagrees with the manifest": node_refuses_a_ca_the_manifest_disagrees_with,
}


@pytest.mark.parametrize("row", list(ROWS))
def test_trust(row: str, federation: Federation, tmp_path: Path) -> None:
    ROWS[row](Kit(federation, tmp_path))



def test_peers_star_names_every_partner_in_node_toml(tmp_path: Path) -> None:
    from exchange.config import load_node_config

    path = tmp_path / "node.toml"
    path.write_text('agency = "JPN-NPA"\nlisten = "127.0.0.1:1"\n\n[[peers]]\nagency = "*"\ninterval_seconds = 60\n',
                    encoding="utf-8")
    assert load_node_config(path).peers == (PeerEntry("*", 60.0),)
    path.write_text('agency = "JPN-NPA"\nlisten = "127.0.0.1:1"\n\n[[peers]]\nagency = "**"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed agency code"):
        load_node_config(path)


def test_a_version_issued_after_its_agency_left_is_refused(federation: Federation) -> None:
    """A relay serving a record its (removed) originator signed after the removal: refused.
    What it signed before stays acceptable (the negative twin)."""
    from exchange.core.trust import Trust
    from exchange.node.server import load_signer
    from exchange.records.envelope import RECORD_TYPE
    from exchange.store.refusals import Refusal
    from exchange.sync.verifier import Verifier
    from tests.fill import make_record

    manifest = federation.manifest
    signer = load_signer(G, federation.pki_dir / G / "signing.key", manifest)
    marking = records_pb2.Marking(classification="RESTRICTED", releasable_to=[J, U], tlp="GREEN")
    before = signer.seal(RECORD_TYPE, make_record(G, 0, marking).SerializeToString())
    left = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    after = signer.seal(RECORD_TYPE, make_record(G, 1, marking).SerializeToString())
    partners = dict(manifest.partners)
    partners[G] = dataclasses.replace(partners[G], removed_at=left)
    verifier = Verifier(J, Trust(dataclasses.replace(manifest, version=manifest.version + 1, partners=partners)))
    refused = verifier.check(after, U)
    assert isinstance(refused, Refusal) and "left the federation" in refused.reason
    assert not isinstance(verifier.check(before, U), Refusal)


@pytest.mark.parametrize(("args", "message"), [
    (["manifest", "sign", "{doc}", "--key", "{missing}"], "cannot read key"),
    (["manifest", "propose", "--manifest", "{doc}", "--out", "{out}", "--accreditation", "KOR-KNPA"],
     "expected AGENCY=LEVEL"),
    (["manifest", "propose", "--manifest", "{doc}", "--out", "{out}", "--remove-partner", "XXX-NONE"],
     "XXX-NONE is not a partner"),
    (["manifest", "propose", "--manifest", "{doc}", "--out", "{out}", "--accreditation", "KOR-KNPA=SECRETISH"],
     "unknown classification"),
    (["manifest", "status", "{missing}"], "cannot read"),
])
def test_manifest_commands_refuse_in_one_line(
    pki: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str,
) -> None:
    names = {"doc": str(pki.pki_dir / "manifest.toml"), "missing": str(tmp_path / "missing"),
             "out": str(tmp_path / "proposal.toml")}
    before = (pki.pki_dir / "manifest.toml").read_bytes()
    assert main([a.format(**names) for a in args]) == USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "proposal.toml").exists()
    assert (pki.pki_dir / "manifest.toml").read_bytes() == before


def test_a_partner_that_never_answers_holds_one_manifest_fetch(federation: Federation, tmp_path: Path) -> None:
    """A partner's pull that claims a newer manifest makes this node fetch it from that
    partner, at most once every 10 s. A partner whose node accepts the connection and never
    answers kept each fetch waiting up to the pull deadline (600 s): one more thread and call
    every 10 s, 60 at a time. One fetch per partner is in flight at most."""
    import socket

    kit = Kit(federation, tmp_path)
    jpn = kit.start(J)
    host, port = kit.federation.manifest.partner(G).address.rsplit(":", 1)
    silent = socket.create_server((host, int(port)))  # GBR-NPSA's address: accepts, says nothing
    try:
        def fetching() -> int:
            return sum(t.is_alive() and t.name == f"manifest-{G}" for t in jpn._learners)

        for _ in range(5):
            jpn._learning.clear()  # as if the 10 s had passed since the last claim
            jpn._learn_from(G, jpn.manifest.version + 1)
        assert fetching() == 1
        jpn._learning.clear()
        jpn._learn_from(U, jpn.manifest.version + 1)  # another partner is fetched from meanwhile
        assert sum(t.is_alive() for t in jpn._learners) >= 1
    finally:
        jpn.puller.close()  # the fetch in flight ends
        silent.close()
