"""`exchange sync` and `exchange events`, in process, against a real serving node."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.store import Store
from exchange.store.received import apply_batch
from exchange.store.refusals import Refusal
from exchange.v1 import records_pb2
from tests.federation import Federation
from tests.fill import fill


def write_config(federation: Federation, path: Path, agency: str, data_dir: Path, limits: str = "") -> Path:
    """A node.toml like an operator's: agency, listen, pki_dir, data_dir, the back end's
    database_url (SQLite's is the default) and optional [limits]."""
    path.write_text(
        f'agency = "{agency}"\nlisten = "127.0.0.1:0"\npki_dir = "{federation.pki_dir}"\n'
        f'data_dir = "{data_dir}"\n{federation.backend.config_line(data_dir)}{limits}',
        encoding="utf-8",
    )
    return path


def held(federation: Federation, data_dir: Path) -> set[tuple[str, str]]:
    engine = federation.backend.engine(data_dir)
    with engine.connect() as conn:
        rows = {(o, r) for o, r in conn.exec_driver_sql("SELECT originator, record_id FROM records")}
    engine.dispose()
    return rows


def _marking(releasable_to: list[str]) -> records_pb2.Marking:
    return records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=releasable_to, tlp="AMBER")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def usa_config(federation: Federation, tmp_path: Path) -> Path:
    return write_config(federation, tmp_path / "usa.toml", "USA-DTSF", tmp_path / "usa")


@pytest.fixture
def usa_node(usa_config: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """USA-DTSF's node.toml, its database made by `exchange db upgrade`."""
    assert main(["db", "upgrade", "--config", str(usa_config)]) == 0
    assert capsys.readouterr().out.startswith("schema upgraded from nothing to revision ")
    return usa_config


def test_sync_refuses_a_database_without_the_schema_in_one_line(
    usa_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(usa_config)]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("exchange: ") and "run `exchange db upgrade --config node.toml`" in err
    assert err.count("\n") == 1


def test_sync_stores_what_was_released_and_prints_a_summary(
    federation: Federation, tmp_path: Path, usa_node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    released = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 5, marking=_marking(["USA-DTSF"]))
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 3, marking=_marking(["KOR-KNPA"]))

    assert main(["sync", "--peer", "JPN-NPA", "--config", str(usa_node)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("pull from JPN-NPA: received 5, stored 5, duplicates 0, older 0, refused 0, ")
    assert out.rstrip().endswith("repair: no") and out.count("\n") == 1
    assert err == ""  # stderr is not a terminal here: no progress line
    assert held(federation, tmp_path / "usa") == {(r.originator, r.record_id) for r in released}

    # Nothing new the second time.
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(usa_node)]) == 0
    assert "received 0, stored 0," in capsys.readouterr().out


def test_sync_shows_progress_on_a_terminal(
    federation: Federation, tmp_path: Path, usa_node: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 1200, marking=_marking(["USA-DTSF"]))
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(usa_node)]) == 0
    shown = terminal.getvalue()
    assert "pulling from JPN-NPA" in shown and "1,200 entries" in shown and "entries/s" in shown
    assert "received 1,200, stored 1,200," in capsys.readouterr().out


def test_sync_uses_data_dir_override(
    federation: Federation, tmp_path: Path, usa_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 2, marking=_marking(["USA-DTSF"]))
    other = tmp_path / "elsewhere"
    if federation.backend.name == "postgresql":  # the database is named by database_url, not the folder
        usa_config = write_config(federation, usa_config, "USA-DTSF", other)
    assert main(["db", "upgrade", "--config", str(usa_config), "--data-dir", str(other)]) == 0
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(usa_config), "--data-dir", str(other)]) == 0
    assert len(held(federation, other)) == 2
    assert not (tmp_path / "usa").exists()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("XYZ-NONE", "exchange: agency 'XYZ-NONE' is not in the federation manifest"),
        ("USA-DTSF", "exchange: USA-DTSF is this node's own agency; name a partner to pull from"),
    ],
)
def test_sync_refuses_a_bad_peer_in_one_line(
    tmp_path: Path, usa_config: Path, capsys: pytest.CaptureFixture[str], peer: str, expected: str
) -> None:
    assert main(["sync", "--peer", peer, "--config", str(usa_config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == expected + "\n"
    assert not (tmp_path / "usa").exists()  # refused before any database was made


def test_sync_with_an_unreadable_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(missing)]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"exchange: cannot read {missing}") and err.count("\n") == 1

    broken = tmp_path / "broken.toml"
    broken.write_text("agency = [", encoding="utf-8")
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(broken)]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"exchange: {broken}:") and err.count("\n") == 1


def test_sync_from_a_peer_that_is_down_fails_in_one_line(
    federation: Federation, usa_node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No KOR-KNPA node is running: its manifest address refuses connections.
    assert main(["sync", "--peer", "KOR-KNPA", "--config", str(usa_node)]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no summary: "received 0, stored 0" would read as a pull that worked
    assert err.startswith("exchange: pull from KOR-KNPA failed: UNAVAILABLE: ") and err.count("\n") == 1


def test_events_lists_a_security_event_newest_last(
    federation: Federation, tmp_path: Path, usa_node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 1, marking=_marking(["USA-DTSF"]))
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(usa_node)]) == 0  # makes the puller's store
    assert main(["events", "--config", str(usa_node)]) == 0
    assert capsys.readouterr().out.endswith("no security events\n")

    store = Store.open(federation.backend.url(tmp_path / "usa"), agency="USA-DTSF",
                       seal=federation.seal("USA-DTSF", tmp_path / "usa"))
    try:
        for reason in ("first reason", "test reason\u202e"):  # a bidi override, as a hostile partner might send
            apply_batch(store, "JPN-NPA", [Refusal(b"\x00" * 32, reason, violation=True)], None)
    finally:
        store.close()

    assert main(["events", "--config", str(usa_node)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "first reason" in lines[0]
    assert "  #2  refused-not-holdable  JPN-NPA  " in lines[1]
    assert '"reason": "test reason\N{REPLACEMENT CHARACTER}"' in lines[1]
    assert lines[1][:4].isdigit() and lines[1][19] == "Z"  # 2025-01-01T00:00:00Z

    assert main(["events", "--config", str(usa_node), "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in events] == [1, 2]
    assert events[1]["kind"] == "refused-not-holdable" and events[1]["peer"] == "JPN-NPA"
    assert events[1]["detail"] == {"content_hashes": ["00" * 32], "count": 1, "reason": "test reason\u202e"}
    assert events[1]["at"].endswith("Z")


def test_events_without_a_database_is_one_line(
    federation: Federation, usa_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["events", "--config", str(usa_config)]) == 2
    _, err = capsys.readouterr()
    # SQLite: the file is missing; PostgreSQL: the database is there, the schema is not.
    expected = "exchange: no database at " if federation.backend.name == "sqlite" else "exchange: the database has no"
    assert err.startswith(expected) and err.count("\n") == 1
