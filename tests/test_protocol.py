"""The protocol: generated code is current, and every RPC has an entry in the role table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from exchange.node.rpc import ROLES
from exchange.v1 import query_pb2, submission_pb2, sync_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_rpc_is_in_the_role_table() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (submission_pb2, query_pb2, sync_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods, "no services found"
    assert methods <= set(ROLES)
