"""Server reflection in both versions (v1 and v1alpha), and buf curl as the README shows it.

Real nodes on loopback with the test federation's certificates (tests/federation.py).
A Python client lists the services through each version; buf curl, an independent
client, lists them through each version too and runs the README's commands as written
(only the certificate folder and the port are this test's).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2

from exchange.drafts import read_draft
from exchange.node.reflection import V1, V1ALPHA, v1_file
from exchange.node.server import Node
from exchange.v1 import records_pb2, submission_pb2
from tests.buf import ROOT, require_buf
from tests.federation import Federation, UserClient

RENAMED = ["exchange.v1.LiaisonService", "exchange.v1.QueryService", "exchange.v1.ReviewService",
           "exchange.v1.SubmissionService", "exchange.v1.SyncService"]
SERVED = sorted([*RENAMED, "grpc.health.v1.Health", V1, V1ALPHA])

# grpc/reflection/v1/reflection.proto upstream (grpc-proto): each message's fields by number.
UPSTREAM_V1 = {
    "ServerReflectionRequest": {"host": 1, "file_by_filename": 3, "file_containing_symbol": 4,
                                "file_containing_extension": 5, "all_extension_numbers_of_type": 6,
                                "list_services": 7},
    "ExtensionRequest": {"containing_type": 1, "extension_number": 2},
    "ServerReflectionResponse": {"valid_host": 1, "original_request": 2, "file_descriptor_response": 4,
                                 "all_extension_numbers_response": 5, "list_services_response": 6,
                                 "error_response": 7},
    "FileDescriptorResponse": {"file_descriptor_proto": 1},
    "ExtensionNumberResponse": {"base_type_name": 1, "extension_number": 2},
    "ListServiceResponse": {"service": 1},
    "ServiceResponse": {"name": 1},
    "ErrorResponse": {"error_code": 1, "error_message": 2},
}


def _v1_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1_file())
    return pool


def test_the_v1_descriptor_is_upstreams_v1() -> None:
    pool = _v1_pool()  # adding it resolves every type it names
    file = pool.FindFileByName("grpc/reflection/v1/reflection.proto")
    assert file.package == "grpc.reflection.v1"
    assert {name: {f.name: f.number for f in message.fields} for name, message in file.message_types_by_name.items()
            } == UPSTREAM_V1
    method = pool.FindServiceByName(V1).methods_by_name["ServerReflectionInfo"]
    assert (method.input_type.full_name, method.output_type.full_name) == (
        "grpc.reflection.v1.ServerReflectionRequest", "grpc.reflection.v1.ServerReflectionResponse")
    assert method.client_streaming and method.server_streaming


def _message_types(version: str) -> tuple[Any, Any]:
    """The request and response classes of ``version``: v1alpha's from grpcio-reflection, v1's
    built from the v1 descriptor (a client of the v1 protocol, not v1alpha's under another path)."""
    if version == V1ALPHA:
        return reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    pool = _v1_pool()
    request = pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
    response = pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
    return message_factory.GetMessageClass(request), message_factory.GetMessageClass(response)


def list_services(channel: grpc.Channel, version: str) -> list[str]:
    request_type, response_type = _message_types(version)
    call = channel.stream_stream(f"/{version}/ServerReflectionInfo",
                                 request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=response_type.FromString)
    [response] = list(call(iter([request_type(list_services="")]), timeout=10))
    return [s.name for s in response.list_services_response.service]


@pytest.mark.parametrize("version", [V1, V1ALPHA])
def test_both_versions_list_the_renamed_services_to_federation_identities(
    federation: Federation, tmp_path: Path, version: str
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    liaison = federation.user_channel(jpn, "JPN-NPA", "suzuki")
    assert sorted(list_services(liaison, version)) == SERVED
    # A partner node's identity may ask too, over its own mutual TLS.
    key, cert = (federation.pki_dir / "USA-DTSF" / "node.key").read_bytes(), \
        (federation.pki_dir / "USA-DTSF" / "node.crt").read_bytes()
    partner = federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert)
    assert sorted(list_services(partner, version)) == SERVED
    # Without a federation certificate the handshake fails, whichever version is asked for.
    anonymous = federation.channel(jpn.port, server_agency="JPN-NPA", key=None, cert=None)
    with pytest.raises(grpc.RpcError) as refused:
        list_services(anonymous, version)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


# --- buf curl ------------------------------------------------------------------------------------


def _buf_curl(node: Node, federation: Federation, *args: str) -> subprocess.CompletedProcess[str]:
    pki = federation.pki_dir / "JPN-NPA"
    return subprocess.run(
        [str(require_buf()), "curl", "--protocol", "grpc", "--servername", "jpn-npa.node.exchange",
         "--cacert", str(pki / "ca.crt"), "--cert", str(pki / "users" / "suzuki.crt"),
         "--key", str(pki / "users" / "suzuki.key"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_lists_the_services_through_each_reflection_version(
    federation: Federation, tmp_path: Path, protocol: str
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    result = _buf_curl(jpn, federation, "--reflect-protocol", protocol, "--list-services",
                       f"https://127.0.0.1:{jpn.port}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == SERVED


def _readme_blocks() -> list[list[str]]:
    """The README's indented code blocks, each as its lines without the indent."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif line.strip() or not current:
            if current:
                blocks.append(current)
            current = []
    return blocks


def _readme_buf_curl() -> list[tuple[list[str], list[str]]]:
    """Each `buf curl` command in the README (as argv), with the block shown after it."""
    blocks = _readme_blocks()
    found = []
    for block, after in itertools.pairwise(blocks):
        if block[0].startswith("node_modules/.bin/buf curl"):
            found.append((shlex.split(" ".join(line.rstrip("\\") for line in block)), after))
    return found


def _here(argv: list[str], federation: Federation, node: Node) -> list[str]:
    """The README's command pointed at this test's PKI and node: nothing else changes."""
    return [re.sub(r"127\.0\.0\.1:50101", f"127.0.0.1:{node.port}", arg.replace("certs/out", str(federation.pki_dir)))
            for arg in argv]


def test_the_readmes_buf_curl_commands_print_what_the_readme_says(federation: Federation, tmp_path: Path) -> None:
    require_buf()
    commands = _readme_buf_curl()
    assert [argv[-1].rpartition("/")[2] for argv, _ in commands] == ["127.0.0.1:50101", "Search"]
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    # What the README's analyst submitted (For analysts), as sato.
    draft, reference = read_draft(str(ROOT / "nodes" / "JPN-NPA" / "samples" / "sns-approach.json"))
    UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato")).submission.Submit(
        submission_pb2.SubmitRequest(draft=draft, reference=reference), timeout=10)

    (list_argv, listed), (search_argv, shown) = commands
    result = subprocess.run(_here(list_argv, federation, jpn), cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == listed == SERVED

    result = subprocess.run(_here(search_argv, federation, jpn), cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)["records"]
    # The shape the README shows, with its elided values filled in by this run.
    expected = json.loads("\n".join(shown).replace("…", ""))["records"][0]
    assert set(record) == set(expected) and set(record["envelope"]) == set(expected["envelope"])
    assert record["receivedFrom"] == expected["receivedFrom"] == "JPN-NPA"
    assert record["envelope"]["payloadType"] == expected["envelope"]["payloadType"]
    assert record["envelope"]["keyId"].startswith(expected["envelope"]["keyId"])
    payload = base64.b64decode(record["envelope"]["payload"])
    assert record["envelope"]["payload"].startswith(expected["envelope"]["payload"])
    assert records_pb2.Record.FromString(payload).content.title == draft.title
