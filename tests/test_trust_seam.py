"""The manifest is replaceable while a node runs: Node.adopt, read at call time everywhere.

Real nodes, real mutual TLS: a partner the node's manifest did not name cannot complete a
handshake; after adopt() names it, it can, with no restart; one removed by adopt() cannot
connect again, and a connection it opened before is refused on its next call.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from exchange.core.manifest import Manifest
from exchange.errors import ConfigError
from exchange.node.server import Node
from exchange.v1 import sync_pb2, sync_pb2_grpc
from tests.federation import Federation


def without(manifest: Manifest, agency: str, version: int) -> Manifest:
    partners = {code: p for code, p in manifest.partners.items() if code != agency}
    return dataclasses.replace(manifest, version=version, partners=partners)


def digest(federation: Federation, node: Node, agency: str) -> grpc.StatusCode:
    """A partner node's Digest call on a fresh channel: OK, or the status it failed with."""
    channel = federation.node_channel(node, agency)
    try:
        stub = sync_pb2_grpc.SyncServiceStub(channel)  # type: ignore[no-untyped-call]
        stub.Digest(sync_pb2.DigestRequest(), timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    finally:
        channel.close()


def test_partner_added_by_adopt_connects_without_restart(federation: Federation, tmp_path: Path) -> None:
    full = federation.manifest
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    jpn.adopt(without(full, "GBR-NPSA", full.version + 1))
    # GBR-NPSA's CA is no longer a client root: its node's handshake fails.
    assert digest(federation, jpn, "GBR-NPSA") == grpc.StatusCode.UNAVAILABLE
    assert digest(federation, jpn, "USA-DTSF") == grpc.StatusCode.OK
    jpn.adopt(dataclasses.replace(full, version=full.version + 2))
    assert jpn.manifest.version == full.version + 2
    assert digest(federation, jpn, "GBR-NPSA") == grpc.StatusCode.OK


def test_partner_removed_by_adopt_cannot_connect(federation: Federation, tmp_path: Path) -> None:
    full = federation.manifest
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    open_channel = federation.node_channel(jpn, "KOR-KNPA")
    stub = sync_pb2_grpc.SyncServiceStub(open_channel)  # type: ignore[no-untyped-call]
    stub.Digest(sync_pb2.DigestRequest(), timeout=5)  # connected while KOR-KNPA is a partner
    jpn.adopt(without(full, "KOR-KNPA", full.version + 1))
    assert digest(federation, jpn, "KOR-KNPA") == grpc.StatusCode.UNAVAILABLE  # no new handshake
    with pytest.raises(grpc.RpcError) as refused:  # the open connection: refused on its next call
        stub.Digest(sync_pb2.DigestRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    open_channel.close()
    assert digest(federation, jpn, "USA-DTSF") == grpc.StatusCode.OK  # the others are untouched


def test_adopt_refuses_a_manifest_without_this_agency(federation: Federation, tmp_path: Path) -> None:
    full = federation.manifest
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    with pytest.raises(ConfigError, match="does not name JPN-NPA"):
        jpn.adopt(without(full, "JPN-NPA", full.version + 1))
    assert jpn.manifest is full
