"""A bundle of signed records, and checking one offline against the federation manifest.

Verification never trusts what the bundle says about itself: it verifies each record's
envelope with its originator's key from the manifest, recomputes that record's objects
from the verified bytes, and requires the bundle to hold exactly those objects (and the
shared ones those records need), byte for byte once parsed. Anything else in the bundle,
or any difference, fails.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from exchange.core.manifest import Manifest
from exchange.errors import ExchangeError, clip
from exchange.records.envelope import open_record
from exchange.stix.common import EXTENSION_ID, NAMESPACE, TLP_IDS, StixObject, shared_objects
from exchange.stix.mapping import main_id, record_objects
from exchange.v1 import records_pb2

__all__ = ["Checked", "make_bundle", "verify_bundle"]

Signed = tuple[records_pb2.Record, records_pb2.Envelope]


def _resolver(signed: Iterable[Signed]) -> dict[tuple[str, str], str]:
    return {(r.ref.originator, r.ref.record_id): main_id(r) for r, _ in signed}


def _expected(signed: Sequence[Signed]) -> tuple[list[StixObject], list[list[StixObject]]]:
    """The shared objects, and each record's objects, for these records."""
    mains = _resolver(signed)
    per_record = [record_objects(r, e, lambda o, i: mains.get((o, i))) for r, e in signed]
    levels = {r.content.marking.tlp for r, _ in signed if r.content.marking.tlp in TLP_IDS}
    return shared_objects(levels, {r.ref.originator for r, _ in signed}), per_record


def make_bundle(signed: Sequence[Signed]) -> StixObject:
    """A STIX 2.1 bundle of the (active) records; its id is derived from its objects' ids."""
    shared, per_record = _expected(signed)
    objects = [*shared, *(obj for objs in per_record for obj in objs)]
    bundle_id = uuid.uuid5(NAMESPACE, "bundle/" + "/".join(o["id"] for o in objects))
    return {"type": "bundle", "id": f"bundle--{bundle_id}", "objects": objects}


@dataclass(frozen=True)
class Checked:
    """One line of the verdict: a record (or a stray object) and what was found."""

    ok: bool
    subject: str
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.subject}: {self.detail}"


def _envelope_of(obj: StixObject) -> records_pb2.Envelope | None:
    ext = obj.get("extensions", {})
    ext = ext.get(EXTENSION_ID) if isinstance(ext, dict) else None
    text = ext.get("envelope") if isinstance(ext, dict) else None
    if not isinstance(text, str):
        return None
    try:
        return records_pb2.Envelope.FromString(base64.b64decode(text, validate=True))
    except (binascii.Error, DecodeError):
        raise ExchangeError("the envelope is not base64 of an Envelope") from None


def _subject(obj: StixObject) -> str:
    extensions = obj.get("extensions")
    ext = extensions.get(EXTENSION_ID) if isinstance(extensions, dict) else None
    if isinstance(ext, dict) and isinstance(ext.get("originator"), str) and isinstance(ext.get("record_id"), str):
        return clip(f"{ext['originator']}/{ext['record_id']}")
    return clip(str(obj.get("id", "?")))


def verify_bundle(bundle: Any, manifest: Manifest) -> list[Checked]:
    """One verdict per record in the bundle, then one per object no verified record accounts for."""
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle" or not isinstance(bundle.get("objects"), list):
        return [Checked(False, "bundle", "not a STIX bundle (an object of type 'bundle' with 'objects')")]
    objects: list[Any] = bundle["objects"]
    by_id: dict[str, StixObject] = {}
    verdicts: list[Checked] = []
    for obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            verdicts.append(Checked(False, "bundle", "an object without an id"))
            continue
        if obj["id"] in by_id:
            verdicts.append(Checked(False, clip(obj["id"]), "appears twice"))
        by_id[obj["id"]] = obj

    signed: list[Signed] = []
    refused: set[str] = set()  # records whose envelope failed: one line each, not one per object
    for obj in by_id.values():
        try:
            envelope = _envelope_of(obj)
            if envelope is None:
                continue
            record = open_record(envelope, manifest)
        except ExchangeError as exc:
            refused.add(_subject(obj))
            verdicts.append(Checked(False, _subject(obj), str(exc)))
            continue
        signed.append((record, envelope))

    shared, per_record = _expected(signed)
    claimed: set[str] = set()
    for (record, _), expected in zip(signed, per_record, strict=True):
        subject = f"{record.ref.originator}/{record.ref.record_id} v{record.version}"
        differs = [o["id"] for o in expected if by_id.get(o["id"]) != o]
        claimed.update(o["id"] for o in expected)
        if differs:
            verdicts.append(Checked(False, subject, f"{len(differs)} object(s) differ from the signed record, "
                                                    f"first {clip(differs[0])}"))
        else:
            verdicts.append(Checked(True, subject, f"signature good, {len(expected)} object(s) match"))
    for obj in shared:
        claimed.add(obj["id"])
        if by_id.get(obj["id"]) != obj:
            verdicts.append(Checked(False, obj["id"], "differs from the standard object (or is missing)"))
    verdicts += [Checked(False, clip(i), "is not part of any verified record") for i, obj in by_id.items()
                 if i not in claimed and _subject(obj) not in refused]
    return verdicts
