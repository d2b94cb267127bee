"""The protocol: generated code is current, and every RPC has an entry in the role table."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import exchange.v1
from exchange.node.rpc import ROLES

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
