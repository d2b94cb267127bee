"""The protocol: generated code is current, every RPC has an entry in the role table, and the protos
pass buf's lint and breaking-change checks (scripts/buf_check.py, as `make test` runs it)."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import exchange.v1
from exchange.node.rpc import ROLES
from tests.buf import require_buf

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


def _exchange_rpcs() -> set[str]:
    """Every RPC of every generated module in exchange/v1, found rather than listed, so a new
    .proto file is covered without editing this test."""
    modules = [importlib.import_module(f"exchange.v1.{info.name}")
               for info in pkgutil.iter_modules(exchange.v1.__path__) if info.name.endswith("_pb2")]
    return {
        f"/{service.full_name}/{method.name}"
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_every_rpc_is_in_the_role_table() -> None:
    methods = _exchange_rpcs()
    assert "/exchange.v1.LiaisonService/WatchHits" in methods  # the discovery finds every file
    assert methods <= set(ROLES)
    # And the table names no RPC that does not exist (a renamed service leaves no stale entry).
    assert {name for name in ROLES if name.startswith("/exchange.")} == methods


# --- buf: lint and breaking changes -------------------------------------------------------------

RECORDS = Path("proto/exchange/v1/records.proto")
BASELINE = Path("proto/baseline.txtpb")


def buf_check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    require_buf()
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "buf_check.py"), "--root", str(root), *args],
        capture_output=True, text=True, check=False,
    )


def _checkout(tmp_path: Path) -> Path:
    """A copy of the repository's protos, buf.yaml and baseline, to change."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", root / "proto")
    shutil.copy(ROOT / "buf.yaml", root / "buf.yaml")
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_protos_pass_buf_lint_and_breaking_against_the_baseline() -> None:
    result = buf_check(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_deleted_field_fails_until_the_break_is_accepted_deliberately(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _edit(root / RECORDS, "  string received_from = 2;", "")
    refused = buf_check(root)
    assert refused.returncode == 1
    assert 'Previously present field "2" with name "received_from" on message "HeldRecord"' in refused.stderr
    # Recording the new protos as the baseline is refused too, unless the break is asked for.
    before = (root / BASELINE).read_text(encoding="utf-8")
    assert buf_check(root, "--update-baseline").returncode == 1
    assert (root / BASELINE).read_text(encoding="utf-8") == before
    assert buf_check(root, "--update-baseline", "--allow-breaking").returncode == 0
    assert buf_check(root).returncode == 0


def test_an_added_field_joins_the_baseline_and_is_protected_from_then_on(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    # A number far from the ones in use, so the test holds as fields are added.
    _edit(root / RECORDS, "  bool equivocated = 4;", "  bool equivocated = 4;\n  string note = 99;")
    stale = buf_check(root)
    assert stale.returncode == 1 and "does not match the protos" in stale.stderr  # not a break, but unrecorded
    assert buf_check(root, "--update-baseline").returncode == 0
    assert buf_check(root).returncode == 0
    # Once recorded, renumbering the new field is a break like any other.
    _edit(root / RECORDS, "string note = 99;", "string note = 98;")
    renumbered = buf_check(root)
    assert renumbered.returncode == 1 and 'field "99" with name "note"' in renumbered.stderr


def test_lint_refuses_a_service_name_without_the_suffix(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _edit(root / "proto/exchange/v1/sync.proto", "service SyncService {", "service Sync {")
    result = buf_check(root)
    assert result.returncode == 1
    assert 'Service name "Sync" should be suffixed with "Service"' in result.stderr
