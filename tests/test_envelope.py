"""The signed envelope: known answers, negative cases, and properties."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.manifest import Manifest, Partner, SigningKey
from exchange.errors import VerificationError
from exchange.records.envelope import (
    RECORD_TYPE,
    WITHDRAWAL_TYPE,
    Signer,
    open_record,
    pae,
    verify_envelope,
)
from exchange.v1 import records_pb2

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KEYS = {agency: Ed25519PrivateKey.generate() for agency in ("JPN-NPA", "USA-DTSF")}


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _manifest(compromised: bool = False) -> Manifest:
    partners = {
        agency: Partner(
            code=agency, name=agency, country=agency[:3], address="127.0.0.1:1", accreditation="SECRET",
            ca_cert_pem="", keys=(SigningKey(f"{agency}/k1", _public(key), NOW, NOW + dt.timedelta(days=1),
                                             NOW if compromised and agency == "JPN-NPA" else None),),
        )
        for agency, key in KEYS.items()
    }
    return Manifest(version=1, partners=partners)


MANIFEST = _manifest()
JPN = Signer("JPN-NPA", "JPN-NPA/k1", KEYS["JPN-NPA"])


def _record(originator: str = "JPN-NPA", title: str = "素材技術者を狙うSNS接触") -> bytes:
    return records_pb2.Record(
        ref=records_pb2.RecordRef(originator=originator, record_id="6f1c1a52-7d0e-4a53-9a38-1b0f0b2f2f11"),
        version=1, content=records_pb2.RecordDraft(title=title),
    ).SerializeToString()


def test_pae_known_answer() -> None:
    # DSSE v1: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
    assert pae("t", b"hello") == b"DSSEv1 1 t 5 hello"
    assert pae(RECORD_TYPE, b"") == b"DSSEv1 %d %s 0 " % (len(RECORD_TYPE), RECORD_TYPE.encode())


def test_round_trip_and_stored_bytes_are_the_signed_bytes() -> None:
    payload = _record()
    envelope = JPN.seal(RECORD_TYPE, payload)
    received = records_pb2.Envelope.FromString(envelope.SerializeToString())
    record = open_record(received, MANIFEST)
    assert received.payload == payload
    assert record.content.title == "素材技術者を狙うSNS接触"


def test_flipped_payload_byte_fails() -> None:
    envelope = JPN.seal(RECORD_TYPE, _record())
    tampered = bytearray(envelope.payload)
    tampered[len(tampered) // 2] ^= 0x01
    envelope.payload = bytes(tampered)
    with pytest.raises(VerificationError, match="bad signature"):
        open_record(envelope, MANIFEST)


def test_signature_by_another_agencys_key_fails() -> None:
    # USA-DTSF signs a record claiming JPN-NPA's key id, and one naming its own key id.
    forged = Signer("USA-DTSF", "JPN-NPA/k1", KEYS["USA-DTSF"]).seal(RECORD_TYPE, _record())
    with pytest.raises(VerificationError, match="bad signature"):
        open_record(forged, MANIFEST)
    claimed = Signer("USA-DTSF", "USA-DTSF/k1", KEYS["USA-DTSF"]).seal(RECORD_TYPE, _record("JPN-NPA"))
    with pytest.raises(VerificationError, match="claims originator 'JPN-NPA' but is signed by USA-DTSF"):
        open_record(claimed, MANIFEST)
    with pytest.raises(VerificationError, match="not a signing key of JPN-NPA"):
        verify_envelope(claimed, "JPN-NPA", MANIFEST)


def test_different_payload_type_fails() -> None:
    envelope = JPN.seal(RECORD_TYPE, _record())
    envelope.payload_type = WITHDRAWAL_TYPE  # a signature over a record replayed as a withdrawal
    with pytest.raises(VerificationError, match="bad signature"):
        verify_envelope(envelope, "JPN-NPA", MANIFEST)
    envelope.payload_type = "application/json"
    with pytest.raises(VerificationError, match="unknown payload type"):
        verify_envelope(envelope, "JPN-NPA", MANIFEST)


def test_compromised_key_invalidates_every_signature() -> None:
    envelope = JPN.seal(RECORD_TYPE, _record())
    with pytest.raises(VerificationError, match="compromised"):
        open_record(envelope, _manifest(compromised=True))


def test_truncated_signature_and_unknown_key_id_fail() -> None:
    envelope = JPN.seal(RECORD_TYPE, _record())
    envelope.signature = envelope.signature[:-1]
    with pytest.raises(VerificationError):
        open_record(envelope, MANIFEST)
    envelope = JPN.seal(RECORD_TYPE, _record())
    envelope.key_id = "JPN-NPA/k2"
    with pytest.raises(VerificationError, match="not a signing key"):
        open_record(envelope, MANIFEST)


@pytest.mark.parametrize("length", [0, 32, 63, 65, 128])
def test_a_signature_of_any_length_but_64_bytes_is_refused_by_name(length: int) -> None:
    # libsodium takes signature and signed bytes as one string: the length is checked first,
    # so no byte of the signed bytes can be read as part of the signature, nor the reverse.
    envelope = JPN.seal(RECORD_TYPE, _record())
    signed = pae(envelope.payload_type, envelope.payload)
    envelope.signature = (envelope.signature + envelope.signature + signed)[:length]
    with pytest.raises(VerificationError, match=f"{length} bytes, not 64"):
        open_record(envelope, MANIFEST)


@settings(max_examples=60, deadline=None)
@given(title=st.text(max_size=200), data=st.data())
def test_any_single_byte_change_is_rejected(title: str, data: st.DataObject) -> None:
    envelope = JPN.seal(RECORD_TYPE, _record(title=title))
    assert open_record(envelope, MANIFEST).content.title == title  # round trip
    wire = bytearray(envelope.SerializeToString())
    index = data.draw(st.integers(0, len(wire) - 1), label="index")
    delta = data.draw(st.integers(1, 255), label="delta")
    wire[index] = (wire[index] + delta) % 256
    try:
        changed = records_pb2.Envelope.FromString(bytes(wire))
    except Exception:
        return  # no longer an envelope at all: refused before verification
    with pytest.raises(VerificationError):
        open_record(changed, MANIFEST)

