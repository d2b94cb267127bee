"""Known answers and negative cases for the seals (exchange/store/integrity.py): no database."""

from __future__ import annotations

import hashlib
import hmac
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exchange.errors import ConfigError
from exchange.store.integrity import Integrity

KEY = bytes(range(32))
RID = "00000000-0000-4000-8000-000000000001"
RECORDS = ("JPN-NPA", RID, 2, 7, "active", "actor", "SECRET", "USA-DTSF", "RED", "ORCON")
LOG = (7, "JPN-NPA", RID, 2, "application/vnd.exchange.record+protobuf", "JPN-NPA/k1", "JPN-NPA USA-DTSF", "SECRET",
       "USA-DTSF", "RED", "ORCON", b"\x11" * 32, "USA-DTSF", 1_767_225_600_000_001)
LOG_BEFORE_0017 = LOG[:12]  # without the receipt (received_from, received_at)


def _by_hand(tag: bytes, fields: tuple[object, ...], key: bytes = KEY) -> bytes:
    """The documented encoding, written out: a tag, then each field as 4-byte length and bytes
    (text as UTF-8, numbers as their decimal text), under the standard library's HMAC."""
    message = tag
    for value in fields:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        message += len(data).to_bytes(4, "big") + data
    return hmac.new(key, message, hashlib.sha256).digest()


def test_known_answers() -> None:
    seal = Integrity(KEY)
    assert seal.records_mac(*RECORDS).hex() == "53d0e598c66598bd59339c561fcb0cb98a5798aeda38eb1b0a3db5c70b1499aa"
    assert seal.records_mac(*RECORDS) == _by_hand(b"records\x00", RECORDS)
    assert seal.log_mac(*LOG).hex() == "33930c46ea491a797e6a9f0f3c98f6725bb6bf9bd325be58f990e92c4ab4bcfe"
    assert seal.log_mac(*LOG) == _by_hand(b"log\x00", LOG)
    # Revisions 0003 to 0016 sealed log entries without their receipt: the upgrade to 0017
    # checks each entry's seal the way it was made (sealcheck.seal_receipts).
    assert seal.log_mac_before_0017(*LOG_BEFORE_0017).hex() == (
        "13bd5d3bcc06cd682a824a9eeffb118bfa35daae80e6c99bdadf77de1f58c4a8")
    assert seal.disclosure_mac("JPN-NPA", RID, 3, 2, False, "USA-DTSF").hex() == (
        "f71696d31b1550bd1431fc0fd83b95be215318a3f6d79a9b9a51b90036597296")
    assert seal.chain(b"\x00" * 32, b"[1,2]") == hmac.new(KEY, b"audit\x00" + b"\x00" * 32 + b"[1,2]",
                                                          hashlib.sha256).digest()


@pytest.mark.parametrize("position", range(len(RECORDS)))
def test_every_sealed_field_counts(position: int) -> None:
    seal = Integrity(KEY)
    changed: list[object] = list(RECORDS)
    value = changed[position]
    changed[position] = value + 1 if isinstance(value, int) else f"{value}X"
    assert seal.records_mac(*changed) != seal.records_mac(*RECORDS)  # type: ignore[arg-type]


def test_a_boundary_moved_between_fields_changes_the_seal() -> None:
    """Length prefixes: 'USA-DTSF' + 'RED' is not 'USA-DTSFR' + 'ED'."""
    seal = Integrity(KEY)
    moved = (*RECORDS[:7], "USA-DTSFR", "ED", "ORCON")
    assert seal.records_mac(*moved) != seal.records_mac(*RECORDS)


def test_another_key_or_kind_of_row_never_matches() -> None:
    assert Integrity(bytes(32)).records_mac(*RECORDS) != Integrity(KEY).records_mac(*RECORDS)
    # The same values as a disclosure_index row and as a records row: tagged apart.
    seal = Integrity(KEY)
    assert seal.disclosure_mac("JPN-NPA", RID, 2, 7, False, "x") != _by_hand(
        b"records\x00", ("JPN-NPA", RID, 2, 7, 0, "x"))


@pytest.mark.parametrize("position", range(1, len(LOG)))
def test_every_field_of_a_log_entry_counts(position: int) -> None:
    """The receipt included: an insider who edits where or when an entry came from breaks its seal."""
    seal = Integrity(KEY)
    changed: list[object] = list(LOG)
    value = changed[position]
    changed[position] = (value + 1 if isinstance(value, int) else value + b"X" if isinstance(value, bytes)
                         else f"{value}X")
    assert seal.log_mac(*changed) != seal.log_mac(*LOG)  # type: ignore[arg-type]


texts = st.text(max_size=40)


@given(key=st.binary(min_size=32, max_size=32), seq=st.integers(min_value=0, max_value=2**62),
       version=st.integers(min_value=0, max_value=2**31), words=st.lists(texts, min_size=10, max_size=10),
       digest=st.binary(max_size=64), received_at=st.integers(min_value=0, max_value=2**62))
def test_a_log_seal_is_the_hmac_of_its_encoded_fields(
    key: bytes, seq: int, version: int, words: list[str], digest: bytes, received_at: int,
) -> None:
    """Seals are stored data: however they are computed (the key's pads hashed once), they are
    the bytes the format defines, for every key and value."""
    originator, record_id, *marking, received_from = words
    fields = (seq, originator, record_id, version, *marking, digest, received_from, received_at)
    assert Integrity(key).log_mac(*fields) == _by_hand(b"log\x00", fields, key)  # type: ignore[arg-type]


@given(key=st.binary(min_size=32, max_size=32), audit_seq=st.integers(min_value=0, max_value=2**62),
       withdrawal=st.booleans(), partner=texts, prev=st.binary(min_size=32, max_size=32),
       body=st.binary(max_size=300))
def test_disclosure_seals_and_audit_links_are_hmacs_of_their_fields(
    key: bytes, audit_seq: int, withdrawal: bool, partner: str, prev: bytes, body: bytes,
) -> None:
    seal = Integrity(key)
    assert seal.disclosure_mac("JPN-NPA", RID, audit_seq, 3, withdrawal, partner) == _by_hand(
        b"disclosure\x00", ("JPN-NPA", RID, audit_seq, 3, int(withdrawal), partner), key)
    assert seal.chain(prev, body) == hmac.new(key, b"audit\x00" + prev + body, hashlib.sha256).digest()


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_a_key_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        Integrity(bytes(length))


# --- current_problem remembers the rows that passed (integrity.PASSED_ROWS) -----------------

_CHECKED = ("originator", "record_id", "version", "seq", "status", "kind", "classification", "releasable_to", "tlp",
            "caveats", "mac", "log_payload_type", "log_key_id", "log_audience", "log_classification",
            "log_releasable_to", "log_tlp", "log_caveats", "log_content_hash", "received_from", "received_at",
            "log_mac", "envelope")


def _row(seal: Integrity, n: int = 0) -> SimpleNamespace:
    """A sealed row of ``select_current``, as the read paths see it."""
    from exchange.v1 import records_pb2

    payload = f"record {n}".encode()
    envelope = records_pb2.Envelope(payload=payload, payload_type=LOG[4], key_id=LOG[5]).SerializeToString()
    originator, record_id, version, seq, status, kind, classification, releasable_to, tlp, caveats = RECORDS
    row = SimpleNamespace(
        originator=originator, record_id=f"{record_id[:-3]}{n:03d}", version=version, seq=seq + n, status=status,
        kind=kind, classification=classification, releasable_to=releasable_to, tlp=tlp, caveats=caveats,
        log_payload_type=LOG[4], log_key_id=LOG[5], log_audience=LOG[6], log_classification=classification,
        log_releasable_to=releasable_to, log_tlp=tlp, log_caveats=caveats,
        log_content_hash=hashlib.sha256(payload).digest(), received_from=LOG[12], received_at=LOG[13] + n,
        envelope=envelope)
    row.mac = seal.records_mac(row.originator, row.record_id, version, row.seq, status, kind, classification,
                               releasable_to, tlp, caveats)
    row.log_mac = seal.log_mac(row.seq, row.originator, row.record_id, version, LOG[4], LOG[5], LOG[6],
                               classification, releasable_to, tlp, caveats, row.log_content_hash, row.received_from,
                               row.received_at)
    return row


def _changed(value: object, junk: int) -> object:
    if isinstance(value, bytes):
        return bytes([value[0] ^ (junk % 255 + 1)]) + value[1:] if value else b"\x00"
    if isinstance(value, int):
        return value + 1 + junk
    return f"{value}{chr(0x41 + junk % 26)}"


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(_CHECKED), junk=st.integers(min_value=0, max_value=1000))
@example(field="envelope", junk=844)  # a field's tag changed: the same payload, no problem
def test_a_remembered_row_changed_in_any_checked_value_is_checked_afresh(field: str, junk: int) -> None:
    seal = Integrity(KEY)
    row = _row(seal)
    assert seal.current_problem(row) is None  # passed, and remembered
    edited = SimpleNamespace(**{**vars(row), field: _changed(getattr(row, field), junk)})
    # What a check that never saw the row says. (A byte of the envelope outside its payload,
    # such as a field's tag, may leave the payload and so its hash as they were: no problem.)
    assert seal.current_problem(edited) == Integrity(KEY).current_problem(edited)
    if field != "envelope":
        assert seal.current_problem(edited) is not None
    assert seal.current_problem(row) is None


@settings(max_examples=50, deadline=None)
@given(junk=st.binary(min_size=1, max_size=40))
def test_a_remembered_row_under_another_payload_is_refused(junk: bytes) -> None:
    from exchange.v1 import records_pb2

    seal = Integrity(KEY)
    row = _row(seal)
    assert seal.current_problem(row) is None  # passed, and remembered
    envelope = records_pb2.Envelope.FromString(row.envelope)
    envelope.payload = envelope.payload + junk
    edited = SimpleNamespace(**{**vars(row), "envelope": envelope.SerializeToString()})
    assert seal.current_problem(edited) == "the envelope stored at log entry 7 is not the one sealed"


def test_rows_that_failed_are_not_remembered_and_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange.store import integrity

    monkeypatch.setattr(integrity, "PASSED_ROWS", 3)
    seal = Integrity(KEY)
    bad = SimpleNamespace(**{**vars(_row(seal)), "classification": "UNCLASSIFIED"})
    for _ in range(2):
        assert seal.current_problem(bad) == "its current-version row (records) does not match its seal"
    rows = [_row(seal, n) for n in range(5)]
    for row in rows:
        assert seal.current_problem(row) is None
    assert len(seal._passed) == 3  # the oldest two forgotten
    assert all(seal.current_problem(row) is None for row in rows)  # forgotten ones are checked again
    # A key the seals were not made with: nothing passes, remembered or not.
    assert all(Integrity(bytes(32)).current_problem(row) is not None for row in rows)
