"""PostgreSQL connections the server dropped while they sat in the pool are replaced, not failed
on (exchange/store/engine.py: a connection idle for a while is pinged before it is used)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from exchange.store import engine as engines
from tests.backends import Backend


def _pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(server_url: str, pid: int) -> None:
    admin = create_engine(server_url)
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


@pytest.fixture
def engine(postgres: Backend, tmp_path: Path):  # type: ignore[no-untyped-def]
    made = engines.make_engine(postgres.url(tmp_path / "db"))
    yield made
    made.dispose()


def test_a_connection_dropped_while_idle_is_replaced(postgres: Backend, engine: Engine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = _pid(engine)
    _terminate(postgres.server_url, first)
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 0.0)  # idle long enough to be pinged
    assert _pid(engine) != first  # the dead connection was found by the ping and replaced


def test_a_connection_back_a_moment_ago_is_used_without_a_ping(postgres: Backend, engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the trade: within the idle allowance no round trip is spent, so a
    connection killed in that moment fails its next statement (and is replaced after it)."""
    first = _pid(engine)
    _terminate(postgres.server_url, first)
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 3600.0)
    with pytest.raises(OperationalError):
        _pid(engine)
    assert _pid(engine) != first
