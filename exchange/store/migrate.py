"""The schema's migrations: applying them, and refusing a database they don't describe.

The schema is whatever the Alembic revisions in ``exchange/store/migrations`` build,
applied by ``exchange db upgrade``. A node opens only a database at the newest
revision this software knows: an un-migrated one would be created behind the
operator's back, and a newer one was written by software that may store things
this version would misread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

from exchange.errors import ConfigError
from exchange.store import files
from exchange.store.engine import WRITE, make_engine, serialise_writers

if TYPE_CHECKING:
    from exchange.store.integrity import Integrity

SCRIPTS = "exchange.store:migrations"
FIRST_REVISION = "0001"
UNSEALED = {"0001", "0002"}  # revisions whose rows 0003 seals (exchange/store/sealcheck.py)
RECEIPTS = "0017"  # log seals cover the receipt from this revision on (sealcheck.seal_receipts)


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this software knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:
        raise ConfigError(f"no schema migrations in {SCRIPTS}: the installation is incomplete")
    return revision


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head", *, seal: Integrity | None = None) -> tuple[str | None, str]:
    """Apply the migrations up to ``revision``; returns (revision before, revision after).

    One transaction, so a failure leaves the schema as it was; on PostgreSQL the
    writers' lock is taken first, so replicas upgrading at once run one after another.
    Rows written before revision 0003 are sealed with ``seal`` (the node's integrity key),
    in the same transaction; so are, anew, log entries sealed before 0017 (which covers where
    and when each came from). Either needs the key once the database holds rows.
    """
    before = current(engine)
    if before is not None and before not in known_revisions():
        raise ConfigError(_newer(before))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines narrate every step
    with seal.anchoring() if seal is not None else nullcontext(), engine.execution_options(**WRITE).begin() as conn:
        serialise_writers(conn)
        unsealed = before in UNSEALED
        if before is None and "log" in inspect(conn).get_table_names():
            _adopt(conn)
            unsealed = True
        receipts_unsealed = before is not None and not unsealed and _earlier(before, RECEIPTS)
        command.upgrade(_config(conn), revision)
        if unsealed and revision == "head":
            _seal(conn, seal)
        elif receipts_unsealed and revision == "head":
            _seal_receipts(conn, seal)
    return before, current(engine) or ""


def _earlier(revision: str, than: str) -> bool:
    """Whether ``revision`` comes before ``than`` (this software's revisions are numbered in order)."""
    return int(revision) < int(than)


def _seal_receipts(conn: Connection, seal: Integrity | None) -> None:
    from exchange.store import sealcheck

    if seal is not None:
        sealcheck.seal_receipts(conn, seal)
        return
    if conn.exec_driver_sql("SELECT 1 FROM log LIMIT 1").first() is not None:
        raise ConfigError("revision 0017 seals where each log entry came from: the log's seals must be renewed "
                          "with the node's integrity key: run `exchange db upgrade --config node.toml` where "
                          "the key is")


def _seal(conn: Connection, seal: Integrity | None) -> None:
    from exchange.store import sealcheck

    if seal is not None:
        sealcheck.seal_existing(conn, seal)
        return
    for table in ("log", "audit", "disclosure_index"):
        if conn.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first() is not None:
            raise ConfigError("the rows already in the database must be sealed with the node's integrity key: "
                              "run `exchange db upgrade --config node.toml` where the key is (make it first with "
                              "`exchange pki integrity-key --config node.toml` if the node has none)")


def _adopt(conn: Connection) -> None:
    """A node's SQLite database made before migrations (schema_version 1 in ``meta``): its
    tables are exactly what revision 0001 builds, so it is stamped 0001 and upgraded."""
    marker = conn.exec_driver_sql("SELECT value FROM meta WHERE key = 'schema_version'").scalar_one_or_none()
    if conn.dialect.name != "sqlite" or marker is None or bytes(marker) != b"1":
        raise ConfigError("the database has tables that no Exchange migration made: "
                          "point database_url at an empty database or schema")
    command.stamp(_config(conn), FIRST_REVISION)
    conn.exec_driver_sql("DELETE FROM meta WHERE key = 'schema_version'")  # Alembic keeps the revision now


def upgrade_url(url: str, *, data_dir: Path | None = None, seal: Integrity | None = None) -> tuple[str | None, str]:
    """:func:`upgrade` for a database URL; a SQLite file (0600) and, given ``data_dir``, its
    folder (0700) are made if missing, and refused if group or others may use them."""
    if url.startswith("sqlite:///") and data_dir is not None:
        data_dir.mkdir(mode=files.PRIVATE_DIR, parents=True, exist_ok=True)
    files.create_private(url, make_folder=data_dir is not None)
    with database_errors(url):
        engine = make_engine(url)
        try:
            return upgrade(engine, seal=seal)
        finally:
            engine.dispose()


def current_url(url: str) -> str | None:
    with database_errors(url):
        engine = make_engine(url)
        try:
            return current(engine)
        finally:
            engine.dispose()


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database that cannot be reached or a URL that names none: one ConfigError line."""
    try:
        yield
    except (ArgumentError, NoSuchModuleError):
        raise ConfigError(f"database_url: not a database URL this node can use: {_shown(url)}") from None
    except (OperationalError, ProgrammingError) as exc:
        # Unreachable, refused, or (ProgrammingError) e.g. a search_path naming no schema, no privilege.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise ConfigError(f"cannot use the database {_shown(url)}: {reason}") from None
    except CommandError as exc:  # Alembic: a revision it cannot find or apply
        raise ConfigError(f"cannot migrate the database {_shown(url)}: {exc}") from None


def refuse_missing_sqlite(url: str) -> None:
    """Refuse a SQLite file that does not exist: connecting to it would create an empty one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # database_errors says so
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not Path(database).exists():
        raise ConfigError(f"no database at {database} (check --data-dir or the config's data_dir): "
                          "run `exchange db upgrade --config node.toml` first")


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _newer(revision: str) -> str:
    return (f"the database's schema revision {revision} is newer than this software knows (newest {head()}): "
            "run the version of Exchange that wrote it")


def check(engine: Engine) -> None:
    """Refuse a database that is not at this software's head revision."""
    revision = current(engine)
    if revision == head():
        return
    if revision is None:
        tables = set(inspect(engine).get_table_names())
        what = "has an Exchange schema made before migrations" if "log" in tables else "has no Exchange schema"
        # (``exchange db upgrade`` adopts a SQLite database made before migrations.)
        raise ConfigError(f"the database {what}: run `exchange db upgrade --config node.toml` first")
    if revision not in known_revisions():
        raise ConfigError(_newer(revision))
    raise ConfigError(
        f"the database's schema is at revision {revision}, not {head()}: run `exchange db upgrade --config node.toml`"
    )
