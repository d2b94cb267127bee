"""The storage back ends every storage test runs against: SQLite and PostgreSQL.

``EXCHANGE_TEST_BACKENDS`` picks them (default ``sqlite,postgresql``; asking for
``sqlite`` alone is the explicit way to test without PostgreSQL). PostgreSQL comes
from ``EXCHANGE_TEST_POSTGRES_URL``, else the server on 127.0.0.1:5432 (database
``test``), else a throwaway cluster this session starts from the installed
binaries (initdb, pg_ctl) in a temporary folder. With none to be had the run stops
with one line saying what to do: a storage test never skips silently.

Each node's database is its own: a SQLite file in its data folder, or a PostgreSQL
schema named after that folder (so a node restarted on the same folder finds its data).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from exchange.store import migrate
from exchange.store.engine import make_engine
from exchange.store.pgschema import create_schema, drop_schemas

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NO_POSTGRES = (
    "PostgreSQL is needed by the storage tests and none was found (EXCHANGE_TEST_POSTGRES_URL, 127.0.0.1:5432, "
    "or initdb/pg_ctl to start one): install it (apt-get install postgresql) or test SQLite only, explicitly, "
    "with EXCHANGE_TEST_BACKENDS=sqlite"
)


def selected() -> list[str]:
    names = [n.strip() for n in os.environ.get("EXCHANGE_TEST_BACKENDS", "sqlite,postgresql").split(",") if n.strip()]
    unknown = set(names) - {"sqlite", "postgresql"}
    if unknown or not names:
        raise pytest.UsageError(f"EXCHANGE_TEST_BACKENDS: expected sqlite and/or postgresql, got {names}")
    return names


@dataclass
class Backend:
    """One back end: makes a node's database URL from its data folder, and what tests do to it."""

    name: str
    server_url: str = ""  # PostgreSQL: the database the schemas live in
    # PostgreSQL: this session's prefix of schema names (a rerun never finds old data), with the
    # hour it started, so a later session can drop what a killed one left behind.
    prefix: str = field(default_factory=lambda: f"t_{int(time.time()) // 3600}_{secrets.token_hex(4)}_")

    def url(self, data_dir: Path) -> str:
        if self.name == "sqlite":
            return f"sqlite:///{data_dir / 'node.db'}"
        return create_schema(self.server_url, self._schema(data_dir))

    def config_line(self, data_dir: Path) -> str:
        """The node.toml line that puts a node on this back end (SQLite is the default)."""
        return "" if self.name == "sqlite" else f'database_url = "{self.url(data_dir)}"\n'

    def migrated(self, data_dir: Path) -> str:
        url = self.url(data_dir)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a node refuses a folder others can read
        migrate.upgrade_url(url, data_dir=data_dir)
        return url

    def rows(self, data_dir: Path, sql: str, **params: object) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (named :params) run on a node's database."""
        with _admin(self.url(data_dir)) as engine, engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]

    def stored_bytes(self, data_dir: Path) -> bytes:
        """Everything a node's database holds, as bytes to search: SQLite's files (free pages
        and the WAL included); on PostgreSQL every value of every table of its schema."""
        if self.name == "sqlite":
            return b"".join(p.read_bytes() for p in data_dir.glob("node.db*"))
        chunks: list[bytes] = []
        with _admin(self.url(data_dir)) as engine, engine.connect() as conn:
            tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars()
            for table in list(tables):
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    chunks += [v if isinstance(v, bytes) else str(v).encode() for v in row]
        return b"\x00".join(chunks)

    def engine(self, data_dir: Path) -> Engine:
        return make_engine(self.url(data_dir))

    def backup(self, data_dir: Path, into: Path) -> None:
        """A copy of a stopped node's database, as an operator's backup would be."""
        if self.name == "sqlite":
            into.mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / "node.db", into / "backup.db")  # stopped: the WAL is checkpointed
            return
        source, copy = self._schema(data_dir), self._schema(into)
        with _admin(self.server_url) as admin, admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{copy}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{copy}"'))
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": source}
            ).scalars().all()
            for table in tables:
                conn.execute(text(f'CREATE TABLE "{copy}"."{table}" (LIKE "{source}"."{table}" INCLUDING ALL)'))
                conn.execute(text(f'INSERT INTO "{copy}"."{table}" SELECT * FROM "{source}"."{table}"'))
            # LIKE copies a serial column's default as a call to the *source's* sequence, which a
            # restore (dropping that schema) would take away: give the copy sequences of its own,
            # at the values the source's had, as a dump would.
            serials = conn.execute(text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = :s AND column_default LIKE 'nextval(%'"), {"s": source}).all()
            for table, column in serials:
                original = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                        {"t": f'"{source}"."{table}"', "c": column}).scalar_one()
                last, called = conn.execute(text(f"SELECT last_value, is_called FROM {original}")).one()
                sequence = f'"{copy}"."{table}_{column}_seq"'
                conn.execute(text(f"CREATE SEQUENCE {sequence} OWNED BY \"{copy}\".\"{table}\".\"{column}\""))
                conn.execute(text("SELECT setval(:q, :v, :c)"), {"q": sequence, "v": last, "c": called})
                conn.execute(text(f'ALTER TABLE "{copy}"."{table}" ALTER COLUMN "{column}" '
                                  f"SET DEFAULT nextval('{sequence}'::regclass)"))

    def restore(self, data_dir: Path, backup_from: Path) -> None:
        """Put a stopped node's database back to the copy :meth:`backup` made."""
        if self.name == "sqlite":
            for suffix in ("-wal", "-shm"):
                (data_dir / f"node.db{suffix}").unlink(missing_ok=True)
            shutil.copy(backup_from / "backup.db", data_dir / "node.db")
            return
        target, copy = self._schema(data_dir), self._schema(backup_from)
        with _admin(self.server_url) as admin, admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{target}" CASCADE'))
            conn.execute(text(f'ALTER SCHEMA "{copy}" RENAME TO "{target}"'))

    def integrity_problems(self, data_dir: Path) -> list[str]:
        """What the database's own checker finds wrong (SQLite integrity_check, PostgreSQL amcheck)."""
        if self.name == "sqlite":
            with _admin(f"sqlite:///{data_dir / 'node.db'}") as engine, engine.connect() as conn:
                rows = conn.exec_driver_sql("PRAGMA integrity_check").scalars().all()
            return [] if rows == ["ok"] else [str(r) for r in rows]
        schema = self._schema(data_dir)
        problems: list[str] = []
        with _admin(self.server_url) as admin, admin.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
            indexes = conn.execute(text(
                "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
                "WHERE n.nspname = :s AND a.amname = 'btree'"), {"s": schema}).all()
            for oid, name in indexes:
                try:
                    with conn.begin_nested():
                        conn.execute(text("SELECT bt_index_check(:oid, true)"), {"oid": oid})
                except Exception as exc:  # amcheck reports corruption as an error
                    problems.append(f"{name}: {exc}")
        return problems

    def _schema(self, data_dir: Path) -> str:
        return self.prefix + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:20]

    def drop_schemas(self, *, stale: bool = False) -> None:
        """Drop every schema this session made (one transaction each: a lock per table); with
        ``stale``, those of sessions that started more than a day ago instead (killed ones)."""
        with _admin(self.server_url) as admin, admin.connect() as conn:
            names = conn.execute(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")).scalars()
            schemas = [n for n in names if (_stale(n) if stale else n.startswith(self.prefix))]
        drop_schemas(self.server_url, schemas)

    def make_unusable(self, data_dir: Path) -> None:
        """Take the database away from a running node (and :meth:`make_usable` gives it back)."""
        if self.name == "sqlite":
            data_dir.rename(data_dir.with_name(data_dir.name + ".away"))
            return
        schema = self._schema(data_dir)
        with _admin(self.server_url) as admin, admin.begin() as conn:
            conn.execute(text(f'ALTER SCHEMA "{schema}" RENAME TO "{schema}_away"'))

    def make_usable(self, data_dir: Path) -> None:
        if self.name == "sqlite":
            data_dir.with_name(data_dir.name + ".away").rename(data_dir)
            return
        schema = self._schema(data_dir)
        with _admin(self.server_url) as admin, admin.begin() as conn:
            conn.execute(text(f'ALTER SCHEMA "{schema}_away" RENAME TO "{schema}"'))




def _stale(schema: str) -> bool:
    hour = schema.split("_")[1]
    return hour.isdigit() and int(hour) < int(time.time()) // 3600 - 24


@contextlib.contextmanager
def _admin(url: str) -> Iterator[Engine]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def _reachable(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


class Throwaway:
    """A PostgreSQL cluster in a temporary folder, for a machine with the binaries but no server."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="exchange-pg-"))
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else ""

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.user:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> str:
        if self.user:
            shutil.chown(self.dir, self.user)
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "start",
            "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F",
        )
        url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 30
        while not _reachable(url):
            if time.monotonic() > deadline:
                raise RuntimeError("the throwaway PostgreSQL did not start")
            time.sleep(0.2)
        return url

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin() -> Path:
    for pattern in ("/usr/lib/postgresql/*/bin/initdb", "/usr/local/pgsql/bin/initdb"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError("initdb")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_postgres() -> tuple[str, Throwaway | None]:
    """The PostgreSQL to test against, and the throwaway cluster to stop afterwards (if one)."""
    from_env = os.environ.get("EXCHANGE_TEST_POSTGRES_URL")
    if from_env:
        if not _reachable(from_env):
            raise pytest.UsageError(f"EXCHANGE_TEST_POSTGRES_URL={from_env} cannot be reached")
        return from_env, None
    if _reachable(DEFAULT_POSTGRES):
        return DEFAULT_POSTGRES, None
    try:
        cluster = Throwaway()
        return cluster.start(), cluster
    except (FileNotFoundError, subprocess.CalledProcessError, RuntimeError):
        raise pytest.UsageError(NO_POSTGRES) from None
