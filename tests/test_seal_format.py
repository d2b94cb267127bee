"""The seals' format is stored data: every database holds rows sealed under it, so a faster
way of computing a seal must give the very bytes the format defines (HMAC-SHA256 of a tag
and length-prefixed fields), for every key and value."""

from __future__ import annotations

import hmac
import struct

from hypothesis import given
from hypothesis import strategies as st

from exchange.store.integrity import KEY_BYTES, Integrity


def _reference(key: bytes, tag: bytes, fields: tuple[object, ...]) -> bytes:
    """The format as documented: tag, then per field its 4-byte big-endian length and its
    bytes (text as UTF-8, numbers and booleans as their decimal text), keyed by the standard
    library's HMAC."""
    encoded = tag
    for value in fields:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        encoded += struct.pack(">I", len(data)) + data
    return hmac.digest(key, encoded, "sha256")


keys = st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES)
texts = st.text(max_size=40)


@given(key=keys, seq=st.integers(min_value=0, max_value=2**62), originator=texts, record_id=texts,
       version=st.integers(min_value=0, max_value=2**31), words=st.lists(texts, min_size=7, max_size=7),
       digest=st.binary(max_size=64))
def test_a_log_seal_is_the_hmac_of_its_encoded_fields(
    key: bytes, seq: int, originator: str, record_id: str, version: int, words: list[str], digest: bytes,
) -> None:
    seal = Integrity(key)
    fields = (seq, originator, record_id, version, *words, digest)
    assert seal.log_mac(*fields) == _reference(key, b"log\x00", fields)  # type: ignore[arg-type]


@given(key=keys, audit_seq=st.integers(min_value=0, max_value=2**62), withdrawal=st.booleans(), partner=texts)
def test_a_disclosure_seal_is_the_hmac_of_its_encoded_fields(
    key: bytes, audit_seq: int, withdrawal: bool, partner: str,
) -> None:
    seal = Integrity(key)
    expected = _reference(key, b"disclosure\x00", ("JPN-NPA", "r-1", audit_seq, 3, int(withdrawal), partner))
    assert seal.disclosure_mac("JPN-NPA", "r-1", audit_seq, 3, withdrawal, partner) == expected


@given(key=keys, prev=st.binary(min_size=32, max_size=32), body=st.binary(max_size=300))
def test_an_audit_link_is_the_hmac_of_the_previous_hash_and_body(key: bytes, prev: bytes, body: bytes) -> None:
    assert Integrity(key).chain(prev, body) == hmac.digest(key, b"audit\x00" + prev + body, "sha256")


def test_seals_made_before_stay_valid() -> None:
    """Known answers, computed by the code that sealed the databases in use: a change of
    format would leave every stored row failing its check."""
    seal = Integrity(bytes(range(32)))
    log_mac = seal.log_mac(7, "JPN-NPA", "r-1", 2, "type", "key", "JPN-NPA USA-DTSF", "RESTRICTED", "USA-DTSF",
                           "AMBER", "", b"\x01" * 32)
    assert log_mac.hex() == "c7506209d27d547ffd8aa952d536862f09eea64193c50912f4522b2021e4f9a1"
    assert seal.chain(b"\x00" * 32, b"body").hex() == (
        "c358a930d54e68d556120288df27d5cb93ac6422a62e053ae2fd903ef8f273ef")
    assert seal.disclosure_mac("JPN-NPA", "r-1", 5, 2, True, "USA-DTSF").hex() == (
        "50b70d9222c1dfefb3892532b616abde8b97ecbd12c4c91b32ffd2581c45c636")


def test_another_key_gives_another_seal() -> None:
    fields = (1, "JPN-NPA", "r-1", 1, "t", "k", "a", "c", "r", "tlp", "", b"h")
    one, other = Integrity(b"\x01" * KEY_BYTES), Integrity(b"\x02" * KEY_BYTES)
    assert one.log_mac(*fields) != other.log_mac(*fields)  # type: ignore[arg-type]
