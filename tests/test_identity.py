"""Identity comes only from the verified certificate; everything else is refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.core.identity import Identity
from exchange.pki import issue, make_ca
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def jpn(federation: Federation, tmp_path: Path):  # type: ignore[no-untyped-def]
    return federation.start_node("JPN-NPA", tmp_path / "jpn")


def _health(channel: grpc.Channel) -> grpc.StatusCode | None:
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return None
    except grpc.RpcError as error:
        return error.code()


def test_known_user_is_served(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    assert _health(federation.user_channel(jpn, "JPN-NPA", "suzuki")) is None


def test_client_without_certificate_is_refused(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    channel = federation.channel(jpn.port, server_agency="JPN-NPA", key=None, cert=None)
    assert _health(channel) == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


def test_certificate_from_a_ca_outside_the_federation_is_refused(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    rogue_ca = make_ca("JPN-NPA", now=NOW)  # same agency name, not the federation's CA
    rogue = issue(rogue_ca, Identity("JPN-NPA", "suzuki"), now=NOW)
    channel = federation.channel(jpn.port, server_agency="JPN-NPA", key=rogue.key_pem, cert=rogue.cert_pem)
    assert _health(channel) == grpc.StatusCode.UNAVAILABLE


def test_expired_certificate_is_refused(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    key, cert = federation.issue_cert("JPN-NPA", Identity("JPN-NPA", "suzuki"),
                                      not_before=NOW - dt.timedelta(days=60), lifetime=dt.timedelta(days=30))
    channel = federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert)
    assert _health(channel) == grpc.StatusCode.UNAVAILABLE


def test_certificate_claiming_another_agency_than_its_issuer_is_refused(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    # KOR-KNPA's CA (a federation CA, so TLS accepts it) vouches for a JPN-NPA user.
    key, cert = federation.issue_cert("KOR-KNPA", Identity("JPN-NPA", "suzuki"))
    channel = federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert)
    assert _health(channel) == grpc.StatusCode.UNAUTHENTICATED
    client = UserClient.of(channel)
    with pytest.raises(grpc.RpcError) as refused:
        client.query.Search(query_pb2.SearchRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not issued by JPN-NPA's CA" in (refused.value.details() or "")
    # The same for a node identity: KOR-KNPA's CA cannot make a USA-DTSF node.
    key, cert = federation.issue_cert("KOR-KNPA", Identity("USA-DTSF", None))
    channel = federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert)
    assert _health(channel) == grpc.StatusCode.UNAUTHENTICATED


def test_unregistered_user_of_the_right_agency_is_refused(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    key, cert = federation.issue_cert("JPN-NPA", Identity("JPN-NPA", "mallory"))
    channel = federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert)
    assert _health(channel) == grpc.StatusCode.PERMISSION_DENIED


def test_user_of_another_agency_is_refused_at_this_node(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    usa = UserClient.of(federation.user_channel(jpn, "USA-DTSF", "rchen"))
    with pytest.raises(grpc.RpcError) as refused:
        usa.query.Search(query_pb2.SearchRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "served only by USA-DTSF's node" in (refused.value.details() or "")


def test_request_fields_never_change_who_the_caller_is(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    """A liaison sending metadata and fields that name an analyst is still a liaison;
    an analyst cannot make a record of another originator by naming it."""
    liaison = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    spoof = [("x-exchange-identity", "urn:exchange:JPN-NPA:user:sato"), ("x-role", "analyst")]
    with pytest.raises(grpc.RpcError) as denied:
        liaison.submission.Submit(submission_pb2.SubmitRequest(draft=draft()), metadata=spoof, timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft()), metadata=spoof, timeout=5).receipt
    assert receipt.ref.originator == "JPN-NPA"
    # The request has no field for originator, record id or version: the node decides them.
    fields = {f.name for f in submission_pb2.SubmitRequest.DESCRIPTOR.fields}
    assert fields == {"draft", "reference"}
    assert not {"originator", "ref", "version"} & {f.name for f in records_pb2.RecordDraft.DESCRIPTOR.fields}
    # A revise naming another agency's record id under JPN-NPA's ref is just NOT_FOUND.
    with pytest.raises(grpc.RpcError) as missing:
        analyst.submission.Revise(submission_pb2.ReviseRequest(
            ref=records_pb2.RecordRef(originator="USA-DTSF", record_id=receipt.ref.record_id),
            base_version=1, draft=draft()), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
