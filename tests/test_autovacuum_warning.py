"""A node on PostgreSQL with autovacuum off says so once at start (exchange/node/server.py):
statistics and the visibility map go stale after a large change until someone vacuums."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.federation import Federation

WARNING = "PostgreSQL runs with autovacuum off"


def test_a_node_says_once_at_start_whether_autovacuum_is_off(
    federation: Federation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "jpn"
    with caplog.at_level(logging.WARNING, logger="exchange.node"):
        federation.start_node("JPN-NPA", data_dir)
    warned = [r for r in caplog.records if r.getMessage().startswith(WARNING)]
    if federation.backend.name == "sqlite":
        assert warned == []
        return
    engine = federation.backend.engine(data_dir)
    try:
        with engine.connect() as conn:
            off = conn.execute(text("SHOW autovacuum")).scalar_one() != "on"
    finally:
        engine.dispose()
    assert len(warned) == (1 if off else 0)
