"""buf, installed from npm into node_modules/ by `make` (package.json, package-lock.json).

A test that needs it skips on a machine where it was never installed, but fails under CI
(``CI`` set), where `make test` installs it before pytest runs: there a skip would hide a
missing install step.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"


def installed_buf() -> Path | None:
    """buf, or None where it was never installed; under CI a missing buf fails the test."""
    if BUF.exists():
        return BUF
    if os.environ.get("CI"):
        pytest.fail(f"{BUF} is missing: `make test` installs it (npm ci) before running pytest")
    return None


def require_buf() -> Path:
    """buf, or the test skips (fails under CI)."""
    found = installed_buf()
    if found is None:
        pytest.skip("buf is not installed: run `make install`")
    return found
