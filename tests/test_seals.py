"""Known answers and negative cases for the seals (exchange/store/integrity.py): no database."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from exchange.errors import ConfigError
from exchange.store.integrity import Integrity

KEY = bytes(range(32))
RID = "00000000-0000-4000-8000-000000000001"
RECORDS = ("JPN-NPA", RID, 2, 7, "active", "actor", "SECRET", "USA-DTSF", "RED", "ORCON")
LOG = (7, "JPN-NPA", RID, 2, "application/vnd.exchange.record+protobuf", "JPN-NPA/k1", "JPN-NPA USA-DTSF", "SECRET",
       "USA-DTSF", "RED", "ORCON", b"\x11" * 32)


def _by_hand(tag: bytes, fields: tuple[object, ...]) -> bytes:
    """The documented encoding, written out: a tag, then each field as 4-byte length and bytes."""
    message = tag
    for value in fields:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        message += len(data).to_bytes(4, "big") + data
    return hmac.new(KEY, message, hashlib.sha256).digest()


def test_known_answers() -> None:
    seal = Integrity(KEY)
    assert seal.records_mac(*RECORDS).hex() == "53d0e598c66598bd59339c561fcb0cb98a5798aeda38eb1b0a3db5c70b1499aa"
    assert seal.records_mac(*RECORDS) == _by_hand(b"records\x00", RECORDS)
    assert seal.log_mac(*LOG).hex() == "13bd5d3bcc06cd682a824a9eeffb118bfa35daae80e6c99bdadf77de1f58c4a8"
    assert seal.log_mac(*LOG) == _by_hand(b"log\x00", LOG)
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


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_a_key_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        Integrity(bytes(length))
