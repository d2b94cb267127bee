"""A throwaway federation for tests: real PKI, real nodes on loopback, real TLS.

Nothing is mocked: ``make_federation`` runs the same ``pki.init_federation``
as ``exchange pki init``, nodes are real gRPC servers on 127.0.0.1 with
SQLite files or PostgreSQL schemas (tests/backends.py), and clients connect with certificates the test made.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from exchange.config import Limits, NodeConfig, PeerEntry, UserEntry, load_manifest
from exchange.core.identity import Identity, Role
from exchange.core.manifest import Manifest, node_dns_name
from exchange.core.review import ReviewPolicy
from exchange.demo.federation import free_port as free_port  # one picker of loopback ports
from exchange.node.server import Node
from exchange.pki import Issued, init_federation, issue, load_cert, load_private_key
from exchange.store.integrity import Integrity, for_node
from exchange.v1 import query_pb2_grpc, records_pb2, submission_pb2_grpc
from tests.backends import Backend

AGENCIES = ("JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA")

TEMPLATE = """\
version = 1

[[partners]]
code = "JPN-NPA"
name = "National Police Agency"
country = "JPN"
address = "127.0.0.1:1"
accreditation = "SECRET"

[[partners]]
code = "USA-DTSF"
name = "Disruptive Technology Strike Force"
country = "USA"
address = "127.0.0.1:1"
accreditation = "TOP SECRET"

[[partners]]
code = "KOR-KNPA"
name = "Korean National Police Agency"
country = "KOR"
address = "127.0.0.1:1"
accreditation = "SECRET"

[[partners]]
code = "GBR-NPSA"
name = "National Protective Security Authority"
country = "GBR"
address = "127.0.0.1:1"
accreditation = "CONFIDENTIAL"
"""

# handle -> (role, clearance), per agency
USERS: dict[str, dict[str, tuple[Role, str]]] = {
    "JPN-NPA": {
        "sato": (Role.ANALYST, "SECRET"),
        "kato": (Role.ANALYST, "SECRET"),
        "suzuki": (Role.LIAISON, "SECRET"),
        "ito": (Role.LIAISON, "RESTRICTED"),
        # Disclosure officers (release review, tests/test_review.py); the node reviews only
        # when started with a review policy.
        "tanaka": (Role.DISCLOSURE_OFFICER, "SECRET"),
        "yamada": (Role.DISCLOSURE_OFFICER, "SECRET"),
        "mori": (Role.DISCLOSURE_OFFICER, "RESTRICTED"),
    },
    "USA-DTSF": {"jmiller": (Role.ANALYST, "TOP SECRET"), "rchen": (Role.LIAISON, "SECRET")},
    "KOR-KNPA": {"kimjh": (Role.ANALYST, "SECRET"), "parksy": (Role.LIAISON, "SECRET")},
    "GBR-NPSA": {"hwright": (Role.ANALYST, "SECRET"), "ebrooks": (Role.LIAISON, "CONFIDENTIAL")},
}


@dataclass
class Federation:
    pki_dir: Path
    manifest: Manifest
    nodes: list[Node] = field(default_factory=list)
    backend: Backend = field(default_factory=lambda: Backend("sqlite"))

    def ca(self, agency: str) -> Issued:
        key = load_private_key(self.pki_dir / agency / "ca.key")
        assert not isinstance(key, type(None))
        return Issued(key, load_cert(self.pki_dir / agency / "ca.crt"))  # type: ignore[arg-type]

    def node_config(self, agency: str, data_dir: Path, *, limits: Limits | None = None) -> NodeConfig:
        return NodeConfig(
            path=data_dir / "node.toml",
            agency=agency,
            listen="127.0.0.1:0",
            data_dir=data_dir,
            database_url=self.backend.url(data_dir),
            pki_dir=self.pki_dir,
            users={h: UserEntry(h, role, clearance) for h, (role, clearance) in USERS[agency].items()},
            peers=(),
            limits=limits or Limits(),
        )

    def start_node(
        self, agency: str, data_dir: Path, *, limits: Limits | None = None, peers: tuple[str, ...] = (),
        schedule: bool = False, interval: float = 0.2, review: ReviewPolicy | None = None,
    ) -> Node:
        """Start ``agency``'s node on its manifest address; it pulls from ``peers`` if ``schedule``."""
        self.backend.migrated(data_dir)
        config = self.node_config(agency, data_dir, limits=limits)
        config = dataclasses.replace(
            config, listen=self.manifest.partner(agency).address,
            peers=tuple(PeerEntry(p, interval) for p in peers), review=review,
        )
        node = Node(config, manifest=self.manifest, schedule=schedule)
        node.start()
        self.nodes.append(node)
        return node

    def seal(self, agency: str, data_dir: Path) -> Integrity:
        """The seal of ``agency``'s node whose database is in ``data_dir`` (as ``Node`` makes it)."""
        return for_node(self.pki_dir, agency, self.backend.url(data_dir))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(grace=0)
        self.nodes.clear()

    def user_files(self, agency: str, handle: str) -> tuple[bytes, bytes]:
        base = self.pki_dir / agency / "users" / handle
        return base.with_suffix(".key").read_bytes(), base.with_suffix(".crt").read_bytes()

    def channel(
        self,
        port: int,
        *,
        server_agency: str,
        key: bytes | None,
        cert: bytes | None,
        roots: bytes | None = None,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> grpc.Channel:
        root = roots if roots is not None else (self.pki_dir / server_agency / "ca.crt").read_bytes()
        credentials = grpc.ssl_channel_credentials(root, key, cert)
        return grpc.secure_channel(
            f"127.0.0.1:{port}",
            credentials,
            options=[("grpc.ssl_target_name_override", node_dns_name(server_agency)), *options],
        )

    def node_channel(
        self, node: Node, agency: str, *, options: Sequence[tuple[str, int | str]] = ()
    ) -> grpc.Channel:
        """A channel to ``node`` presenting ``agency``'s own node certificate (a partner node)."""
        base = self.pki_dir / agency
        return self.channel(node.port, server_agency=node.config.agency, key=(base / "node.key").read_bytes(),
                            cert=(base / "node.crt").read_bytes(), options=options)

    def user_channel(self, node: Node, agency: str, handle: str) -> grpc.Channel:
        key, cert = self.user_files(agency, handle)
        return self.channel(node.port, server_agency=node.config.agency, key=key, cert=cert)

    def issue_cert(
        self,
        ca_agency: str,
        identity: Identity,
        *,
        not_before: dt.datetime | None = None,
        lifetime: dt.timedelta = dt.timedelta(days=30),
    ) -> tuple[bytes, bytes]:
        """A certificate issued by ``ca_agency``'s CA for any identity (honest or not)."""
        issued = issue(self.ca(ca_agency), identity, now=dt.datetime.now(dt.UTC), lifetime=lifetime,
                       not_before=not_before)
        return issued.key_pem, issued.cert_pem


def make_federation(root: Path) -> Federation:
    """A federation whose nodes listen on fixed loopback ports chosen for this session."""
    nodes_dir = root / "nodes"
    nodes_dir.mkdir(parents=True)
    template = TEMPLATE
    taken: set[int] = set()
    while 'address = "127.0.0.1:1"' in template:
        template = template.replace('address = "127.0.0.1:1"', f'address = "127.0.0.1:{free_port(taken)}"', 1)
    (nodes_dir / "federation.toml").write_text(template, encoding="utf-8")
    for agency, users in USERS.items():
        (nodes_dir / agency).mkdir()
        body = "".join(
            textwrap.dedent(
                f"""
                [[users]]
                handle = "{handle}"
                role = "{role.value}"
                clearance = "{clearance}"
                """
            )
            for handle, (role, clearance) in users.items()
        )
        (nodes_dir / agency / "node.toml").write_text(
            f'agency = "{agency}"\nlisten = "127.0.0.1:0"\n{body}', encoding="utf-8"
        )
    pki_dir = root / "pki"
    manifest_path = init_federation(nodes_dir, pki_dir)
    return Federation(pki_dir=pki_dir, manifest=load_manifest(manifest_path))


@dataclass
class UserClient:
    """Stubs for one user connected to one node."""

    channel: grpc.Channel
    submission: submission_pb2_grpc.SubmissionServiceStub
    query: query_pb2_grpc.QueryServiceStub

    @classmethod
    def of(cls, channel: grpc.Channel) -> UserClient:
        return cls(channel, submission_pb2_grpc.SubmissionServiceStub(channel),
                   query_pb2_grpc.QueryServiceStub(channel))


def draft(**overrides: object) -> records_pb2.RecordDraft:
    """A valid record draft; keyword arguments replace fields."""
    marking = records_pb2.Marking(
        classification="CONFIDENTIAL", releasable_to=["USA-DTSF", "KOR-KNPA"], tlp="AMBER"
    )
    values: dict[str, object] = {
        "kind": records_pb2.KIND_TECHNIQUE,
        "title": "素材技術者を狙うSNS接触",
        "summary": "偽のリクルーターがSNSで素材メーカーの技術者に接触し、タッチパネル材料のデータを求める。",
        "countries": ["CHN"],
        "sectors": ["advanced-materials"],
        "observables": [records_pb2.Observable(type="platform_handle", value="@Recruit_Tanaka")],
        "confidence": 70,
        "marking": marking,
    }
    values.update(overrides)
    return records_pb2.RecordDraft(**values)  # type: ignore[arg-type]
