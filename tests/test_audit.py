"""The audit log is hash-chained: deleting or editing one row is detected."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.store import Store, audit
from exchange.v1 import query_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft


def _filled_node(federation: Federation, tmp_path: Path) -> Path:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    analyst = UserClient.of(federation.user_channel(node, "JPN-NPA", "sato"))
    liaison = UserClient.of(federation.user_channel(node, "JPN-NPA", "suzuki"))
    for i in range(4):
        receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft(title=f"監査 {i}"))).receipt
        liaison.query.Get(query_pb2.GetRequest(ref=receipt.ref))
    liaison.query.Search(query_pb2.SearchRequest(text="監査"))
    actions = [e.action for e in audit.read_entries(node.store)]
    assert actions == ["submit", "get"] * 4 + ["search"]
    federation.stop()
    config = tmp_path / "node.toml"
    config.write_text(
        f'agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\npki_dir = "{federation.pki_dir}"\n'
        f'data_dir = "{tmp_path / "jpn"}"\n{federation.backend.config_line(tmp_path / "jpn")}',
        encoding="utf-8",
    )
    return config


def test_intact_log_verifies(federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _filled_node(federation, tmp_path)
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "intact: 9 entries" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("DELETE FROM audit WHERE seq = 3", "entry 3 is missing"),
        ("UPDATE audit SET actor = 'urn:exchange:JPN-NPA:user:kato' WHERE seq = 2", "entry 2 was altered"),
        ("UPDATE audit SET detail = replace(detail, '\"version\":1', '\"version\":2') WHERE seq = 1",
         "entry 1 was altered"),
        ("DELETE FROM audit WHERE seq = 9", "the chain ends at entry 8"),
    ],
)
def test_deleting_or_editing_one_row_is_detected(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str, expected: str
) -> None:
    config = _filled_node(federation, tmp_path)
    engine = federation.backend.engine(tmp_path / "jpn")
    with engine.begin() as conn:
        assert conn.exec_driver_sql(tamper).rowcount == 1
    engine.dispose()
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert expected in capsys.readouterr().out
    store = Store.open(federation.backend.url(tmp_path / "jpn"), agency="JPN-NPA",
                       seal=federation.seal("JPN-NPA", tmp_path / "jpn"))
    assert any(expected in problem for problem in audit.verify_store(store))
    store.close()
