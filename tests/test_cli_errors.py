"""Every error a person can cause or meet is one line, ``exchange: ...``, with the right exit status.

Checked at the file-descriptor level (``capfd``), so a line gRPC's C core writes
itself would be caught too; the last test runs the installed command in a
process of its own, where gRPC starts with the command's own settings.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.node.server import Node
from exchange.pki import write_profile
from tests.federation import Federation

SAMPLE = Path(__file__).resolve().parent.parent / "nodes" / "JPN-NPA" / "samples" / "sns-approach.json"
USAGE, FAILURE = 2, 1


def one_error_line(capfd: pytest.CaptureFixture[str]) -> str:
    """The single line on stderr, without its prefix; fails on anything else there."""
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("exchange: "), err
    return err[len("exchange: ") : -1]


def profile(federation: Federation) -> Path:
    return federation.pki_dir / "JPN-NPA" / "users" / "sato.profile.toml"


def draft_file(tmp_path: Path, **changes: object) -> Path:
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    data.update(changes)
    path = tmp_path / "draft.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


# --- certificate and key files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "what"),
    [("--cert", "certificate"), ("--key", "private key"), ("--ca", "CA certificate")],
)
def test_a_missing_certificate_or_key_file_is_named(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str], flag: str, what: str
) -> None:
    missing = tmp_path / "nowhere.pem"
    assert main(["submit", str(SAMPLE), "--profile", str(profile(federation)), flag, str(missing)]) == USAGE
    assert one_error_line(capfd) == f"cannot read {what} {missing}: No such file or directory"


def test_a_profile_moved_without_its_files_names_the_certificate(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sato.profile.toml"
    write_profile(path, "JPN-NPA", "127.0.0.1:50101", "sato")
    assert main(["submit", str(SAMPLE), "--profile", str(path)]) == USAGE
    assert one_error_line(capfd) == f"cannot read certificate {tmp_path / 'sato.crt'}: No such file or directory"


def test_an_unreadable_or_garbled_file_is_named(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    base = ["submit", str(SAMPLE), "--profile", str(profile(federation))]
    assert main([*base, "--key", str(tmp_path)]) == USAGE  # a folder where the key should be
    assert one_error_line(capfd) == f"cannot read private key {tmp_path}: Is a directory"
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("not a certificate\n", encoding="utf-8")
    assert main([*base, "--cert", str(garbled)]) == USAGE
    assert one_error_line(capfd) == f"{garbled} is not a PEM certificate"
    assert main([*base, "--key", str(garbled)]) == USAGE
    assert one_error_line(capfd) == f"{garbled} is not an unencrypted PEM private key"
    missing = tmp_path / "missing.profile.toml"
    assert main(["submit", str(SAMPLE), "--profile", str(missing)]) == USAGE
    assert one_error_line(capfd) == f"cannot read profile {missing}: No such file or directory"


# --- a node that is down ---------------------------------------------------------------------


def test_a_node_that_is_down_is_named_by_its_address(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    address = federation.manifest.partner("JPN-NPA").address  # no node started: nothing listens
    assert main(["submit", str(SAMPLE), "--profile", str(profile(federation))]) == FAILURE
    message = one_error_line(capfd)
    assert message.startswith(f"node at {address} is unreachable: ")
    assert "failed to connect to all addresses" not in message  # gRPC's preamble is dropped

    bulk = tmp_path / "records.jsonl"
    bulk.write_text(SAMPLE.read_text(encoding="utf-8").replace("\n", "") + "\n", encoding="utf-8")
    assert main(["submit", "--bulk", str(bulk), "--profile", str(profile(federation))]) == FAILURE
    assert one_error_line(capfd).startswith(f"stopped at line 1: node at {address} is unreachable: ")


# --- a record file with a bad field ----------------------------------------------------------


def test_a_bad_field_found_locally_names_the_file_and_json_path(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = draft_file(tmp_path, observables=[{"type": "email", "value": "a@example.net"}, {"type": "domain"}])
    assert main(["submit", str(path)]) == USAGE  # found before any profile or node is needed
    assert one_error_line(capfd) == f"{path}: observables[1].value: missing"
    path.write_text('{\n  "kind": "actor",\n  "title": oops\n}\n', encoding="utf-8")
    assert main(["submit", str(path)]) == USAGE
    assert one_error_line(capfd).startswith(f"{path}: invalid JSON at line 3 column 12: ")
    path.write_text("[" * 100_000, encoding="utf-8")  # deep enough to exhaust json's recursion
    assert main(["submit", str(path)]) == USAGE
    assert one_error_line(capfd) == f"{path}: invalid JSON: nested too deeply"


def test_a_bad_field_the_node_refuses_names_the_file_and_field(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    federation.start_node("JPN-NPA", tmp_path / "jpn")
    marking = {"classification": "CONFIDENTIAL", "releasable_to": ["USA-DTSF"], "tlp": "WHITE"}
    path = draft_file(tmp_path, marking=marking, reference="ERR-1")
    assert main(["submit", str(path), "--profile", str(profile(federation))]) == USAGE
    assert one_error_line(capfd) == f"{path}: draft.marking.tlp: unknown TLP label 'WHITE'"

    good = draft_file(tmp_path, reference="ERR-2")
    assert main(["submit", str(good), "--profile", str(profile(federation)), "--json"]) == 0
    ref = json.loads(capfd.readouterr().out)["ref"]
    bad = draft_file(tmp_path, observables=[{"type": "email", "value": "not an address"}])
    command = ["revise", f"{ref['originator']}/{ref['record_id']}", "--base-version", "1", str(bad)]
    assert main([*command, "--profile", str(profile(federation))]) == USAGE
    assert one_error_line(capfd).startswith(f"{bad}: draft.observables[0]")


# --- manifests and node configuration --------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('code = "KOR-KNPA"', 'code = "kor-knpa"', "partners[2].code: malformed agency code 'kor-knpa'"),
        ('code = "KOR-KNPA"', "code = 7", "partners[2].code: expected str, got 7"),
        ('accreditation = "CONFIDENTIAL"', 'accreditation = "SEKRIT"',
         "partners[3].accreditation: unknown classification 'SEKRIT'"),
    ],
)
def test_a_manifest_template_with_a_bad_agency_names_file_and_entry(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], old: str, new: str, message: str
) -> None:
    nodes = tmp_path / "nodes"
    shutil.copytree(SAMPLE.parent.parent.parent, nodes)
    template = nodes / "federation.toml"
    text = template.read_text(encoding="utf-8")
    assert old in text
    template.write_text(text.replace(old, new, 1), encoding="utf-8")
    assert main(["pki", "init", "--out", str(tmp_path / "out"), "--nodes", str(nodes)]) == USAGE
    assert one_error_line(capfd) == f"{template}: {message}"
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _node_toml(path: Path, pki_dir: Path, *, agency: str = "JPN-NPA", peers: tuple[str, ...] = ()) -> Path:
    body = f'agency = "{agency}"\nlisten = "127.0.0.1:0"\npki_dir = "{pki_dir}"\ndata_dir = "{path.parent / "data"}"\n'
    body += "".join(f'\n[[peers]]\nagency = "{peer}"\n' for peer in peers)
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def never_serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """If a bad configuration were accepted, fail instead of serving forever.

    ``node serve`` sets up logging to the stderr of the moment (here, the capture's),
    so the root logger is put back afterwards: later tests must not log to a closed file.
    """

    def refuse(self: Node, listen: str | None = None) -> int:
        raise AssertionError("the node started with a configuration it should have refused")

    monkeypatch.setattr(Node, "start", refuse)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("never_serve")
def test_a_node_manifest_with_a_malformed_agency_is_refused(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    manifest = pki / "manifest.toml"
    text = (federation.pki_dir / "manifest.toml").read_text(encoding="utf-8")
    manifest.write_text(text.replace('code = "USA-DTSF"', 'code = "USA_DTSF"', 1), encoding="utf-8")
    config = _node_toml(tmp_path / "node.toml", pki)
    assert main(["node", "serve", str(config)]) == USAGE
    assert one_error_line(capfd) == f"{manifest}: partners[1].code: malformed agency code 'USA_DTSF'"


@pytest.mark.usefixtures("never_serve")
def test_a_node_of_an_agency_the_manifest_does_not_list_is_refused(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = _node_toml(tmp_path / "node.toml", federation.pki_dir, agency="FRA-DGSI")
    assert main(["node", "serve", str(config)]) == USAGE
    manifest = federation.pki_dir / "manifest.toml"
    assert one_error_line(capfd) == f"FRA-DGSI is not in the federation manifest {manifest}"
    assert not (tmp_path / "data").exists()


@pytest.mark.usefixtures("never_serve")
def test_a_peer_the_manifest_does_not_list_is_refused_at_start(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = _node_toml(tmp_path / "node.toml", federation.pki_dir, peers=("USA-DTSF", "KOR-XXXX"))
    manifest = federation.pki_dir / "manifest.toml"
    expected = f"{config}: peers[1].agency: KOR-XXXX is not in the federation manifest {manifest}"
    assert main(["node", "serve", str(config)]) == USAGE
    assert one_error_line(capfd) == expected
    assert main(["sync", "--peer", "USA-DTSF", "--config", str(config)]) == USAGE
    assert one_error_line(capfd) == expected
    assert not (tmp_path / "data").exists()  # refused before the store was created


# --- the installed command, in a process of its own ------------------------------------------


def test_the_command_itself_prints_one_line_for_a_node_that_is_down(
    federation: Federation, tmp_path: Path
) -> None:
    address = federation.manifest.partner("JPN-NPA").address
    done = subprocess.run(
        [sys.executable, "-m", "exchange.cli.main", "submit", str(SAMPLE), "--profile", str(profile(federation))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == FAILURE
    assert done.stderr.startswith(f"exchange: node at {address} is unreachable: ")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
