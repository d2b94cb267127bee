"""The schema is built by migrations; a node opens only a database at this software's head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from exchange.cli.main import main
from exchange.errors import ConfigError
from exchange.records import textindex
from exchange.store import Store, audit, migrate
from exchange.store.current import seal_problems
from exchange.store.engine import make_engine
from exchange.store.integrity import Integrity
from exchange.store.schema import metadata
from exchange.store.search import SearchFilter, search
from exchange.v1 import records_pb2
from tests.backends import Backend
from tests.federation import Federation
from tests.fill import fill

TABLES = ("log", "records", "observables", "record_countries", "record_sectors", "analyst_refs", "audit", "meta",
          "peers", "quarantine", "security_events", "withdrawn")
SEAL = Integrity(b"\x02" * 32)  # these databases' integrity key (anchoring left out: no node host here)


def first_revision() -> str:
    base = ScriptDirectory.from_config(migrate._config()).get_base()
    assert base is not None
    return base


# Columns added after revision 0001: 0003's seals, 0004's validity and confidence.
LATER_COLUMNS = {"mac", "confidence", "valid_from", "valid_until"}


def snapshot(backend: Backend, data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables revision 0001 made, in the columns it made them with."""
    # Revision 0003 keys the audit chain: its hashes, and the head in meta, change (and must verify).
    columns = {"observables": "type, value, rid", "audit": "seq, at, actor, action, detail", "meta": "key",
               **{t: ", ".join(c.name for c in metadata.tables[t].columns if c.name not in LATER_COLUMNS)
                  for t in ("log", "records")}}
    return {t: sorted(backend.rows(data_dir, f"SELECT {columns.get(t, '*')} FROM {t}"), key=repr) for t in TABLES}


def test_the_migrations_build_exactly_the_tables_the_code_uses(backend: Backend, tmp_path: Path) -> None:
    engine = make_engine(backend.migrated(tmp_path / "db"))
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    # The text index is per dialect, outside the metadata (exchange/store/textsearch.py): SQLite's
    # FTS5 virtual table with its shadow tables, PostgreSQL's record_terms with its GIN index.
    def text_index(difference: tuple[Any, ...]) -> bool:
        kind, item = difference[0], difference[1]
        table = item.name if kind == "remove_table" else item.table.name if kind == "remove_index" else ""
        return table.startswith("record_text") or table == "record_terms"

    assert [d for d in differences if not text_index(d)] == []


def copy_into_first_revision(source: Engine, target: Engine) -> None:
    """Fill a database at revision 0001 with what ``source`` (at head) holds, as the code of
    0001 would have written it: the columns 0001 has, and its text index (FTS5 on SQLite,
    a (term, rid) row per term elsewhere)."""
    skip = {"alembic_version", "terms"}
    with source.connect() as src, target.begin() as dst:
        present = set(inspect(target).get_table_names()) - skip
        # Parents first: the index tables last, as revision 0001 made them with a foreign key to
        # records that the metadata no longer has (revision 0013), so it does not order them.
        index_tables = ("observables", "record_countries", "record_sectors")
        order = [t.name for t in metadata.sorted_tables if t.name not in index_tables] + list(index_tables)
        for table in [t for t in order if t in present]:
            columns = [c["name"] for c in inspect(target).get_columns(table)]
            rows = [dict(r._mapping) for r in src.execute(text(f"SELECT {', '.join(columns)} FROM {table}"))]
            dst.execute(text(f"DELETE FROM {table}"))  # meta: 0001 made its own keys
            if rows:
                marks = ", ".join(f":{c}" for c in columns)
                dst.execute(text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"), rows)
        _unkey_audit_chain(dst)
        if target.dialect.name == "sqlite":
            index = src.exec_driver_sql("SELECT rowid, terms FROM record_text").all()
            dst.exec_driver_sql("INSERT INTO record_text (rowid, terms) VALUES (?, ?)", [tuple(r) for r in index])
        else:
            terms = [{"rid": rid, "term": term}
                     for rid, words in src.execute(text("SELECT rid, terms FROM record_terms")) for term in words]
            dst.execute(text("INSERT INTO terms (term, rid) VALUES (:term, :rid)"), terms)


def _unkey_audit_chain(conn: Any) -> None:
    """The audit chain as the code before revision 0003 hashed it (plain SHA-256)."""
    prev = audit.GENESIS
    rows = conn.execute(text("SELECT seq, at, actor, action, detail FROM audit ORDER BY seq")).all()
    for row in rows:
        digest = audit.unkeyed_hash(prev, *row)
        conn.execute(text("UPDATE audit SET prev_hash = :p, hash = :h WHERE seq = :s"),
                     {"p": prev, "h": digest, "s": row.seq})
        prev = digest
    conn.execute(text("UPDATE meta SET value = :v WHERE key = 'audit_head'"),
                 {"v": len(rows).to_bytes(8, "big") + prev})


def test_a_database_made_by_the_first_migration_upgrades_to_head_with_nothing_lost(
    federation: Federation, tmp_path: Path
) -> None:
    backend, data_dir = federation.backend, tmp_path / "old"
    source = Store.open(backend.migrated(tmp_path / "source"), agency="JPN-NPA", seal=SEAL)
    refs = fill(source, federation.manifest, federation.pki_dir, "JPN-NPA", 50)
    fill(source, federation.manifest, federation.pki_dir, "KOR-KNPA", 20)
    for i in range(5):
        audit.record(source, actor="urn:exchange:JPN-NPA:user:suzuki", action="search", detail={"page": i})

    url = backend.url(data_dir)
    data_dir.mkdir()
    engine = make_engine(url)
    migrate.upgrade(engine, first_revision())
    assert migrate.current(engine) == first_revision() != migrate.head()
    copy_into_first_revision(source.engine, engine)
    source.close()
    # Revision 0004 computes every record's terms again (English stems): start it from none.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM record_text" if backend.name == "sqlite" else "DELETE FROM terms"))
    before = snapshot(backend, data_dir)
    assert len(before["records"]) == 70 and len(before["audit"]) == 5 and len(before["observables"]) == 140

    with pytest.raises(ConfigError, match="run `exchange db upgrade"):
        Store.open(url, agency="JPN-NPA", seal=SEAL)  # not at head: refused
    with pytest.raises(ConfigError, match="must be sealed with the node's integrity key"):
        migrate.upgrade(engine)  # the rows there need the key to be sealed
    assert migrate.upgrade(engine, seal=SEAL) == (first_revision(), migrate.head())
    engine.dispose()

    after = snapshot(backend, data_dir)
    assert {t: rows for t, rows in after.items() if t != "observables"} == {
        t: rows for t, rows in before.items() if t != "observables"}
    # observables gained issued_at (0002), backfilled from each record.
    issued = dict(backend.rows(data_dir, "SELECT rid, issued_at FROM records"))
    assert sorted((t, v, rid, issued[rid]) for t, v, rid in before["observables"]) == sorted(
        backend.rows(data_dir, "SELECT type, value, rid, issued_at FROM observables"))
    store = Store.open(url, agency="JPN-NPA", seal=SEAL)
    try:
        assert audit.verify_store(store) == []
        assert seal_problems(store) == []  # every row sealed at the upgrade
        found = list(search(store, SearchFilter(originators=("JPN-NPA",),
                                               observables=(("company_name", "sample trading 7 llc"),))))
        assert [(r.originator, r.record_id) for r in found] == [("JPN-NPA", refs[7].record_id)]
        # The text index came along (on PostgreSQL 0002 moved it into another table).
        words = "迂回調達"
        by_text = list(search(store, SearchFilter(text=words, text_terms=tuple(textindex.query_terms(words)))))
        assert len(by_text) == 70
        # 0004 re-indexed with stems (microcontroller finds "microcontrollers") and copied
        # each record's confidence out of its envelope.
        singular = "microcontroller"
        stemmed = SearchFilter(text=singular, text_terms=tuple(textindex.query_terms(singular)))
        assert len(list(search(store, stemmed))) == 70
        assert set(backend.rows(data_dir, "SELECT confidence, valid_until FROM records")) == {(60, None)}
        fill(store, federation.manifest, federation.pki_dir, "JPN-NPA", 5)  # and it goes on working
        assert len(backend.rows(data_dir, "SELECT rid FROM records")) == 75
    finally:
        store.close()


def _named(problems: list[str]) -> set[str]:
    """The record ids that seal problems name ("record KOR-KNPA/<id>...")."""
    return {p.split("/", 1)[1].split(":")[0].split(" ")[0] for p in problems}


def _store_at_0016(federation: Federation, data_dir: Path, count: int, *, audited: bool = True,
                   ) -> tuple[str, list[records_pb2.RecordRef]]:
    """A database holding ``count`` of KOR-KNPA's records as revision 0016 left it: every log
    seal without the receipt (and, if ``audited``, one entry in the audit chain); its URL and
    the records' refs."""
    url = federation.backend.migrated(data_dir)
    store = Store.open(url, agency="JPN-NPA", seal=SEAL)
    refs = fill(store, federation.manifest, federation.pki_dir, "KOR-KNPA", count)
    if audited:
        audit.record(store, actor="urn:exchange:JPN-NPA:user:ito", action="search", detail={"page": 1})
    store.close()
    engine = make_engine(url)
    try:
        _seal_as_before_0017(engine)
    finally:
        engine.dispose()
    return url, refs


def _seal_as_before_0017(engine: Engine) -> None:
    """Every log entry's seal as revisions 0003 to 0016 made it (no receipt), and the schema at 0016."""
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT seq, originator, record_id, version, payload_type, key_id, audience, "
                                 "classification, releasable_to, tlp, caveats, content_hash FROM log")).all()
        for row in rows:
            conn.execute(text("UPDATE log SET mac = :mac WHERE seq = :seq"),
                         {"mac": SEAL.log_mac_before_0017(*row), "seq": row.seq})
        conn.execute(text("UPDATE alembic_version SET version_num = '0016'"))


def test_log_seals_made_before_0017_are_renewed_to_cover_the_receipt(
    federation: Federation, tmp_path: Path
) -> None:
    url, refs = _store_at_0016(federation, tmp_path / "db", 12)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # an insider's edit before the upgrade: it must not be blessed
            conn.execute(text("UPDATE log SET classification = 'UNCLASSIFIED' WHERE record_id = :r"),
                         {"r": refs[0].record_id})
        with pytest.raises(ConfigError, match=r"0017 seals where each log entry came from.*exchange db upgrade"):
            migrate.upgrade(engine)  # the key is needed
        assert migrate.current(engine) == "0016"  # and nothing changed
        with pytest.raises(ConfigError, match="does not open this database's seals"):
            migrate.upgrade(engine, seal=Integrity(b"\x09" * 32))  # another node's key
        assert migrate.current(engine) == "0016"
        assert migrate.upgrade(engine, seal=SEAL) == ("0016", migrate.head())
    finally:
        engine.dispose()
    store = Store.open(url, agency="JPN-NPA", seal=SEAL)
    try:
        assert _named(seal_problems(store)) == {refs[0].record_id}  # still reported
        assert len(list(search(store, SearchFilter(originators=("KOR-KNPA",))))) == 11  # the rest renewed
        # From now on the receipt is sealed: rewriting where an entry came from is detected.
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE log SET received_from = 'USA-DTSF' WHERE record_id = :r"),
                         {"r": refs[1].record_id})
        assert _named(seal_problems(store)) == {refs[0].record_id, refs[1].record_id}
    finally:
        store.close()


def test_the_0017_upgrade_refuses_a_key_that_opens_no_seal(federation: Federation, tmp_path: Path) -> None:
    """No audit chain to try the key on: a key under which not one log entry's seal matches is
    refused too, and the database is left as it was (its seals, at 0016)."""
    backend, data_dir = federation.backend, tmp_path / "db"
    url, _ = _store_at_0016(federation, data_dir, 3, audited=False)
    engine = make_engine(url)
    try:
        macs = backend.rows(data_dir, "SELECT seq, mac FROM log ORDER BY seq")
        assert backend.rows(data_dir, "SELECT count(*) FROM audit") == [(0,)]
        with pytest.raises(ConfigError, match="does not open this database's seals"):
            migrate.upgrade(engine, seal=Integrity(b"\x09" * 32))
        assert migrate.current(engine) == "0016"
        assert backend.rows(data_dir, "SELECT seq, mac FROM log ORDER BY seq") == macs
    finally:
        engine.dispose()


def test_the_0017_upgrade_under_the_right_key_goes_on_over_edited_entries(
    federation: Federation, tmp_path: Path
) -> None:
    """With an audit chain that opens under the key, entries whose seals all fail are edits, not a
    wrong key: the upgrade completes and every one of them stays reported."""
    url, refs = _store_at_0016(federation, tmp_path / "db", 3)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE log SET tlp = 'CLEAR'"))
        assert migrate.upgrade(engine, seal=SEAL) == ("0016", migrate.head())
    finally:
        engine.dispose()
    store = Store.open(url, agency="JPN-NPA", seal=SEAL)
    try:
        assert _named(seal_problems(store)) == {ref.record_id for ref in refs}
    finally:
        store.close()


def test_a_node_refuses_a_database_without_the_schema(backend: Backend, tmp_path: Path) -> None:
    url = backend.url(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    # SQLite: no file (and refusing makes none); PostgreSQL: the schema is there, its tables are not.
    what = "no database at .*" if backend.name == "sqlite" else "the database has no Exchange schema"
    with pytest.raises(ConfigError, match=f"{what}: run `exchange db upgrade --config node.toml`"):
        Store.open(url, agency="JPN-NPA", seal=SEAL)
    assert list((tmp_path / "empty").iterdir()) == []
    assert migrate.current_url(url) is None  # refusing made nothing


def test_a_database_made_before_migrations_is_adopted_or_refused(backend: Backend, tmp_path: Path) -> None:
    """Before migrations a node made its SQLite tables itself (exactly revision 0001's, with
    schema_version 1 in meta): `db upgrade` stamps and upgrades it. Anything else with tables
    but no revision is refused in one line (PostgreSQL nodes never existed before migrations)."""
    url = backend.url(tmp_path / "old")
    (tmp_path / "old").mkdir(mode=0o700)
    engine = make_engine(url)
    migrate.upgrade(engine, first_revision())
    with engine.begin() as conn:  # what the code before migrations left
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', :v)"), {"v": b"1"})
    engine.dispose()
    with pytest.raises(ConfigError, match="has an Exchange schema made before migrations: run `exchange db upgrade"):
        Store.open(url, agency="JPN-NPA", seal=SEAL)
    if backend.name == "sqlite":
        assert migrate.upgrade_url(url) == (None, migrate.head())
        Store.open(url, agency="JPN-NPA", seal=SEAL).close()
        assert backend.rows(tmp_path / "old", "SELECT key FROM meta WHERE key = 'schema_version'") == []
    else:
        with pytest.raises(ConfigError, match="has tables that no Exchange migration made"):
            migrate.upgrade_url(url)


def test_upgrade_refuses_in_one_line(backend: Backend, tmp_path: Path) -> None:
    url = backend.migrated(tmp_path / "db")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(ConfigError, match="revision 0099 is newer than this software knows"):
        migrate.upgrade_url(url)
    if backend.name == "postgresql":  # a search_path naming no schema: nowhere to create the tables
        missing = backend.server_url + ("&" if "?" in backend.server_url else "?") + "options=-csearch_path%3Dnone_here"
        with pytest.raises(ConfigError, match=r"cannot use the database .*no schema has been selected"):
            migrate.upgrade_url(missing)


def test_a_node_refuses_a_schema_newer_than_it_knows(backend: Backend, tmp_path: Path) -> None:
    url = backend.migrated(tmp_path / "db")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(ConfigError, match=r"revision 0099 is newer than this software knows"):
        Store.open(url, agency="JPN-NPA", seal=SEAL)


def test_db_upgrade_and_status_commands(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        f'agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\npki_dir = "{federation.pki_dir}"\n'
        f'data_dir = "{tmp_path / "jpn"}"\n{federation.backend.config_line(tmp_path / "jpn")}',
        encoding="utf-8",
    )
    assert main(["node", "serve", str(config)]) == 2
    assert "run `exchange db upgrade --config node.toml` first" in capsys.readouterr().err

    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"schema upgraded from nothing to revision {migrate.head()}\n"
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"schema already at revision {migrate.head()}\n"
    assert main(["db", "status", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"database: revision {migrate.head()}; software: revision {migrate.head()}\n"


def test_an_unreachable_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text(  # port 9 (discard) on loopback: nothing listens there
        'agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\n'
        'database_url = "postgresql+psycopg://nobody:secret@127.0.0.1:9/none?connect_timeout=3"\n',
        encoding="utf-8",
    )
    assert main(["db", "upgrade", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exchange: cannot use the database postgresql+psycopg://nobody:***@127.0.0.1:9/none")
    assert err.count("\n") == 1 and "secret" not in err
