"""Search answers the same whichever plan the store picks (issue 5's query latency work).

A single-observable lookup walks ix_observables_newest (observables carry their record's
issued_at); a text search on SQLite either collects the rids FTS5 names (a rare word) or
walks records newest first and filters each chunk through FTS5 (a common word); on
PostgreSQL the same two plans run on record_terms (GIN). Every
plan must give the records, order and pages of the plain definition: every record that
matches, newest issued first, then rid.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import inspect, text

from exchange.records import textindex
from exchange.records.envelope import RECORD_TYPE, content_hash
from exchange.store import SearchFilter, Store, StoredRecord, textsearch
from exchange.store.integrity import Integrity
from exchange.store.received import Incoming, apply_batch
from exchange.store.schema import observables
from exchange.store.search import SCAN_CHUNK, search
from exchange.v1 import records_pb2
from tests.backends import Backend

AGENCY = "JPN-NPA"
TITLES = ("先端技術の流出", "半導体の迂回調達", "반도체 기술 유출", "Front company procurement", "技術者へのSNS接触")


def _record(i: int, rng: random.Random, *, issued_us: int, record_id: str | None = None,
            version: int = 1, value: str = "") -> records_pb2.Record:
    ts = Timestamp()
    ts.FromMicroseconds(issued_us)
    hs = "8542.31" if i % 3 == 0 else f"8471.{i % 7:02d}"
    return records_pb2.Record(
        ref=records_pb2.RecordRef(originator=AGENCY, record_id=record_id or str(uuid.UUID(int=rng.getrandbits(128)))),
        version=version,
        status=records_pb2.STATUS_ACTIVE,
        created_at=ts,
        issued_at=ts,
        content=records_pb2.RecordDraft(
            kind=records_pb2.KIND_ACTOR,
            title=rng.choice(TITLES) + (f" {value}" if value else ""),
            summary=rng.choice(TITLES),
            observables=[records_pb2.Observable(type="hs_code", value=hs)],
            marking=records_pb2.Marking(
                classification=rng.choice(("RESTRICTED", "SECRET")), releasable_to=["USA-DTSF"], tlp="GREEN"
            ),
        ),
    )


def _store(url: str, records: list[records_pb2.Record]) -> Store:
    store = Store.open(url, agency=AGENCY, seal=Integrity(b"\x01" * 32))
    batch: list[Incoming | object] = []
    for record in records:
        payload = record.SerializeToString()
        envelope = records_pb2.Envelope(payload_type=RECORD_TYPE, payload=payload, key_id="k", signature=b"s")
        batch.append(Incoming(envelope, content_hash(payload), frozenset({AGENCY}), record=record))
    apply_batch(store, AGENCY, batch, None)  # type: ignore[arg-type]
    return store


def _pages(store: Store, criteria: SearchFilter, size: int) -> list[list[int]]:
    pages: list[list[int]] = []
    after = None
    while True:
        page: list[StoredRecord] = []
        more = False
        for record in search(store, criteria, after=after, first_chunk=size + 1):
            if len(page) == size:
                more = True
                break
            page.append(record)
        pages.append([r.rid for r in page])
        if not more:
            return pages
        after = page[-1].position


def _expected(store: Store, keep: object) -> list[int]:
    everything = list(search(store, SearchFilter(classifications=("UNCLASSIFIED", "RESTRICTED"))))
    return [r.rid for r in everything if keep(r)]  # type: ignore[operator]


@pytest.fixture
def store(backend: Backend, tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    # Issued out of arrival order, with ties, as pulls from several partners bring them.
    records = [_record(i, rng, issued_us=1_700_000_000_000_000 + rng.randrange(300) * 1_000_000)
               for i in range(600)]
    s = _store(backend.migrated(tmp_path / "db"), records)
    yield s
    s.close()


@pytest.mark.parametrize("collect_limit", [1, 10_000])
def test_both_text_plans_give_the_same_pages(store: Store, monkeypatch: pytest.MonkeyPatch,
                                             collect_limit: int) -> None:
    monkeypatch.setattr(textsearch, "COLLECT_LIMIT", collect_limit)
    # One term, and several (every one must be in a row's terms: a CJK run's bigrams, two words).
    for word in ("技術", "반도체", "procurement", "流出", "技術の流出", "front procurement"):
        criteria = SearchFilter(text=word, text_terms=tuple(textindex.query_terms(word)),
                                classifications=("UNCLASSIFIED", "RESTRICTED"))
        expected = _expected(store, lambda r, w=word: textindex.matches(w, r.title + "\n" + r.summary))
        assert expected, word
        for size in (1, 7, 50):
            pages = _pages(store, criteria, size)
            assert [rid for page in pages for rid in page] == expected, (word, size)
            assert all(len(page) == size for page in pages[:-1])
        # Read to the end with a small first chunk: the walk reads a few matches a round and
        # resumes after the last one read, missing and repeating none.
        assert [r.rid for r in search(store, criteria, first_chunk=3)] == expected, word


@pytest.mark.parametrize("collect_limit", [1, 10_000])
def test_a_row_whose_marking_was_lowered_is_found_by_no_plan(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                             collect_limit: int) -> None:
    """An insider lowers a SECRET record's classification in ``records``: neither text plan (on
    PostgreSQL the common word's walk runs prepared in a session of its own; on SQLite its chunk
    filter reads the FTS5 content), nor an observable's walk, ever yields it."""
    monkeypatch.setattr(textsearch, "COLLECT_LIMIT", collect_limit)
    cleared = ("UNCLASSIFIED", "RESTRICTED")
    word = SearchFilter(text="技術", text_terms=tuple(textindex.query_terms("技術")), classifications=cleared)
    before = [r.rid for r in search(store, word)]
    with store.engine.connect() as conn:
        secret = conn.execute(text(
            "SELECT rid, observables.value FROM records JOIN observables USING (rid) "
            "WHERE records.classification = 'SECRET' AND (title LIKE '%技術%' OR summary LIKE '%技術%') "
            "ORDER BY rid LIMIT 1")).one()
    hs = SearchFilter(observables=(("hs_code", secret.value),), classifications=cleared)
    hs_before = [r.rid for r in search(store, hs)]
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE records SET classification = 'RESTRICTED' WHERE rid = :rid"), {"rid": secret.rid})
    for _ in range(2):  # the second time from the prepared statement, on PostgreSQL
        assert [r.rid for r in search(store, word)] == before
        assert [r.rid for r in search(store, hs)] == hs_before
    assert secret.rid not in before and secret.rid not in hs_before


def test_text_plan_follows_the_number_of_matches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    if store.engine.dialect.name == "postgresql":  # the plan follows the planner's statistics there
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE record_terms")
    assert textsearch.plan(store.engine, ["技術"]).few  # fewer than COLLECT_LIMIT: the index names them
    monkeypatch.setattr(textsearch, "COLLECT_LIMIT", 5)
    many = textsearch.plan(store.engine, ["技術"])
    assert not many.few  # many: the records walked are judged (PostgreSQL in SQL, SQLite by chunk)
    assert (many.condition is None) == (store.engine.dialect.name == "sqlite")
    assert textsearch.plan(store.engine, ["zzzz"]).few


def test_one_observable_walks_newest_first_and_pages(store: Store) -> None:
    criteria = SearchFilter(observables=(("hs_code", "854231"),), classifications=("UNCLASSIFIED", "RESTRICTED"))
    expected = _expected(store, lambda r: r.rid in _carriers(store, "854231"))
    assert expected
    for size in (1, 3, 50):
        assert [rid for page in _pages(store, criteria, size) for rid in page] == expected
    # Two observables (any matches) take the other plan and agree with it.
    both = SearchFilter(observables=(("hs_code", "854231"), ("hs_code", "847101")),
                        classifications=("UNCLASSIFIED", "RESTRICTED"))
    either = _carriers(store, "854231") | _carriers(store, "847101")
    assert [r.rid for r in search(store, both)] == _expected(store, lambda r: r.rid in either)


def test_a_walk_runs_prepared_where_nothing_sorts(store: Store) -> None:
    """PostgreSQL: a walk runs on a connection of the walks' own, in a session that plans without
    sorting, prepared on a generic plan (planning the search statement cost three times its
    execution, at every search) and in autocommit (psycopg drops what it prepared at a ROLLBACK).
    Other reads (``Store.read``) sort, and are in autocommit too. SQLite: one pool for all."""
    criteria = SearchFilter(observables=(("hs_code", "854231"),), classifications=("UNCLASSIFIED", "RESTRICTED"))
    for _ in range(3):
        assert list(search(store, criteria))
    with store.walk() as walker, store.walk(False) as other:
        if store.engine.dialect.name == "sqlite":
            assert walker.engine.pool is other.engine.pool is store.engine.pool
            return
        prepared = walker.exec_driver_sql(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements").all()
        walks = [row for row in prepared if "JOIN observables" in row.statement]
        assert len(walks) == 1, [r.statement[:200] for r in prepared]  # one statement, prepared once, run three times
        assert walks[0].generic_plans == 3 and walks[0].custom_plans == 0
        assert walker.exec_driver_sql("SHOW enable_sort").scalar() == "off"
        assert other.exec_driver_sql("SHOW enable_sort").scalar() == "on"
        # Both in autocommit: no BEGIN and ROLLBACK round trips around a read.
        assert walker.connection.driver_connection.autocommit  # type: ignore[union-attr]
        assert other.connection.driver_connection.autocommit  # type: ignore[union-attr]
        assert not other.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()


def _carriers(store: Store, value: str) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(observables.select().where(observables.c.value == value)
                                .with_only_columns(observables.c.rid)).scalars())


def test_a_revision_moves_the_record_in_observable_order(backend: Backend, tmp_path: Path) -> None:
    rng = random.Random(3)
    first = [_record(3 * i, rng, issued_us=1_700_000_000_000_000 + i * 1_000_000) for i in range(5)]
    store = _store(backend.migrated(tmp_path / "db"), first)
    try:
        criteria = SearchFilter(observables=(("hs_code", "854231"),))
        before = [r.record_id for r in search(store, criteria)]
        assert before == [r.ref.record_id for r in reversed(first)]
        # The oldest record is revised with a newer issued_at: it is now the newest.
        revised = _record(0, rng, issued_us=1_800_000_000_000_000, record_id=first[0].ref.record_id, version=2)
        apply_batch(store, AGENCY, [Incoming(
            records_pb2.Envelope(payload_type=RECORD_TYPE, payload=revised.SerializeToString(), key_id="k"),
            content_hash(revised.SerializeToString()), frozenset({AGENCY}), record=revised)], None)
        with store.engine.connect() as conn:
            issued = set(conn.execute(observables.select().with_only_columns(observables.c.issued_at)
                                      .where(observables.c.value == "854231")).scalars())
        assert 1_800_000_000_000_000 in issued
        after = [r.record_id for r in search(store, criteria)]
        assert after[0] == first[0].ref.record_id and sorted(after) == sorted(before)
    finally:
        store.close()


def test_the_index_rows_carry_the_current_classification_and_only_narrow(backend: Backend, tmp_path: Path) -> None:
    rng = random.Random(5)
    cleared = SearchFilter(observables=(("hs_code", "854231"),), classifications=("UNCLASSIFIED", "RESTRICTED"))
    secret = _record(0, rng, issued_us=1_700_000_000_000_000)
    secret.content.marking.classification = "SECRET"
    store = _store(backend.migrated(tmp_path / "db"), [secret])
    ref = secret.ref.record_id

    def copies() -> set[str]:
        with store.engine.connect() as conn:
            return set(conn.execute(observables.select().with_only_columns(observables.c.classification)
                                    .where(observables.c.value == "854231")).scalars())

    def revise(version: int, classification: str) -> None:
        revised = _record(0, rng, issued_us=1_700_000_000_000_000 + version, record_id=ref, version=version)
        revised.content.marking.classification = classification
        payload = revised.SerializeToString()
        apply_batch(store, AGENCY, [Incoming(
            records_pb2.Envelope(payload_type=RECORD_TYPE, payload=payload, key_id="k"),
            content_hash(payload), frozenset({AGENCY}), record=revised)], None)

    try:
        assert copies() == {"SECRET"} and [r.record_id for r in search(store, cleared)] == []
        # A revision down to RESTRICTED rewrites the index rows: a RESTRICTED user's lookup finds it.
        revise(2, "RESTRICTED")
        assert copies() == {"RESTRICTED"} and [r.record_id for r in search(store, cleared)] == [ref]
        # Up to SECRET again: gone from the lookup.
        revise(3, "SECRET")
        assert copies() == {"SECRET"} and [r.record_id for r in search(store, cleared)] == []
        # The copy is not sealed and only narrows: lowered by a database writer, it shows nothing
        # more (the record's own row, sealed, is still prefiltered and then decided on).
        with store.engine.begin() as conn:
            conn.execute(observables.update().values(classification="RESTRICTED"))
        assert [r.record_id for r in search(store, cleared)] == []
    finally:
        store.close()


def test_a_long_walk_pauses_between_chunks_and_a_short_one_never(store: Store) -> None:
    """The node's search lane gives way at these pauses (exchange/node/lane.py)."""
    criteria = SearchFilter(classifications=("UNCLASSIFIED", "RESTRICTED"))
    pauses: list[int] = []
    seen: list[int] = []

    def pause() -> None:
        pauses.append(len(seen))  # how many candidates had been yielded at the pause

    for record in search(store, criteria, pause=pause):
        seen.append(record.rid)
    assert seen == _expected(store, lambda r: True)
    assert len(seen) > SCAN_CHUNK and pauses  # several chunks: a pause before each but the first
    assert pauses[0] == SCAN_CHUNK  # after the first chunk was yielded, before the next is read
    assert len(pauses) == len(seen) // SCAN_CHUNK
    short: list[int] = []
    assert len(list(search(store, criteria, first_chunk=5, pause=lambda: short.append(1)))) == len(seen)
    first = list(search(store, SearchFilter(observables=(("hs_code", "854231"),),
                                            classifications=("RESTRICTED",)), first_chunk=1000,
                        pause=lambda: short.append(2)))
    assert first and 2 not in short  # one chunk held everything: no pause


def test_the_observables_key_holds_the_classification_on_postgresql(postgres: Backend, tmp_path: Path) -> None:
    """Revision 0015: a lookup's walk reads the clearance prefilter's column from the key itself
    (an index-only scan), not from the heap row of each entry it passes."""
    url = postgres.migrated(tmp_path / "db")
    definition = postgres.rows(tmp_path / "db", "SELECT indexdef FROM pg_indexes WHERE tablename = 'observables' "
                                                "AND indexname = 'observables_pkey' AND schemaname = current_schema()")
    assert url and len(definition) == 1
    assert definition[0][0].endswith("(type, value, issued_at, rid) INCLUDE (classification)")


def test_the_newest_first_index_holds_the_classification(backend: Backend, tmp_path: Path) -> None:
    """Revision 0016: a walk of records newest first applies the clearance prefilter to the index
    entry (SQLite reads the row only for entries that pass)."""
    url = backend.migrated(tmp_path / "db")
    store = Store.open(url, agency=AGENCY, seal=Integrity(b"\x01" * 32))
    try:
        indexes = {i["name"]: i["column_names"] for i in inspect(store.engine).get_indexes("records")}
    finally:
        store.close()
    assert indexes["ix_records_issued"] == ["issued_at", "rid", "classification"]


def test_searches_of_one_shape_share_a_statement_and_each_gets_its_own_answer(store: Store) -> None:
    """The statement of a shape of criteria is built once (search._statement) and its values
    go as parameters: a second search of the same shape with other values must answer for its
    own values, never the first one's."""
    from exchange.store import search as searching

    searching._statement.cache_clear()
    restricted = ("UNCLASSIFIED", "RESTRICTED")
    for value in ("854231", "847101", "847102", "854231"):
        for classifications in (restricted, ("UNCLASSIFIED",), ()):
            criteria = SearchFilter(observables=(("hs_code", value),), classifications=classifications)
            carriers = _carriers(store, value)
            everything = list(search(store, SearchFilter(classifications=restricted)))
            expected = [r.rid for r in everything if r.rid in carriers and r.marking.classification in classifications]
            assert [rid for page in _pages(store, criteria, 7) for rid in page] == expected, (value, classifications)
    # One shape (one observable, a clearance): one statement; the empty clearance is the same shape.
    assert searching._statement.cache_info().currsize == 2  # that one, and _expected's
    assert searching._statement.cache_info().hits >= 10
