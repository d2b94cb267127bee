"""The objects every Exchange bundle shares: OASIS TLP 2.0 markings, Exchange's identity and
its marking extension-definition, the originators' identities, and the deterministic ids.

Ids are UUIDv5 under one fixed namespace, over (originator, record_id, role): the same
record gives the same ids on every export and every node. The record's version is not in
the id on purpose: STIX keeps one id across an object's versions and tells them apart by
``modified`` (here the version's ``issued_at``), and a link to another record (which names
no version) must resolve to that record's object whatever version the reader holds.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

StixObject = dict[str, Any]

# Fixed for ever: changing it changes every id every node ever exported.
NAMESPACE = uuid.UUID("4e2f1f7a-6c2e-5b1e-9d5a-0c8f3e1a7b21")

# The OASIS TLP 2.0 marking definitions (STIX 2.1 TLP 2.0 extension), verbatim.
TLP_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP_IDS = {
    "CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
TLP_BY_ID = {v: k for k, v in TLP_IDS.items()}

# Exchange's own marking extension, published in docs/stix/ (a test keeps them equal).
EXTENSION_ID = "extension-definition--7c1f5d3e-2a4b-5c6d-8e9f-0a1b2c3d4e5f"
EXCHANGE_IDENTITY = "identity--0d6f1c9a-3b2e-5f4a-8c7d-6e5f4a3b2c1d"
PUBLISHED = "2026-12-01T00:00:00.000Z"
# STIX allows the schema as a URL or as text; the repository has no public URL, so text naming the file.
SCHEMA = ("The JSON schema docs/stix/exchange-marking.schema.json in the Exchange repository: classification, "
          "releasable_to and caveats of the record's Exchange marking; originator, record_id and record_version; on "
          "the record's main object kind, countries, sectors, observables without a STIX object, related, and the "
          "originator's signed envelope (base64).")


def tlp_marking(level: str) -> StixObject:
    return {
        "type": "marking-definition", "spec_version": "2.1", "id": TLP_IDS[level],
        "created": "2022-10-01T00:00:00.000Z", "name": f"TLP:{level}",
        "extensions": {TLP_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level.lower()}},
    }


def exchange_identity() -> StixObject:
    return {
        "type": "identity", "spec_version": "2.1", "id": EXCHANGE_IDENTITY,
        "created": PUBLISHED, "modified": PUBLISHED, "name": "Exchange", "identity_class": "system",
        "description": "The federation's record exchange; publisher of the Exchange marking extension.",
    }


def extension_definition() -> StixObject:
    return {
        "type": "extension-definition", "spec_version": "2.1", "id": EXTENSION_ID,
        "created_by_ref": EXCHANGE_IDENTITY, "created": PUBLISHED, "modified": PUBLISHED,
        "name": "Exchange marking and provenance",
        "description": "The Exchange marking (classification, releasable_to, caveats) of the record an object "
                       "comes from, the record's identity, and on its main object the originator's signed "
                       "envelope.",
        "schema": SCHEMA, "version": "1.0.0", "extension_types": ["property-extension"],
    }


@functools.cache
def agency_identity_id(agency: str) -> str:
    """The id of an agency's identity object (every object of its records names it: computed once)."""
    return object_id("identity", "agency", agency)


def agency_identity(agency: str) -> StixObject:
    return {
        "type": "identity", "spec_version": "2.1", "id": agency_identity_id(agency),
        "created": PUBLISHED, "modified": PUBLISHED, "name": agency, "identity_class": "organization",
        "description": f"{agency}, an agency of the Exchange federation (originator of the records it signed).",
    }


def object_id(stix_type: str, *parts: str) -> str:
    """``type--UUIDv5(NAMESPACE, parts joined by '/')``: agency codes and UUIDs hold no '/',
    so the joined name is unambiguous."""
    return f"{stix_type}--{uuid.uuid5(NAMESPACE, '/'.join(parts))}"


def shared_objects(tlp_levels: set[str], agencies: set[str]) -> list[StixObject]:
    """The fixed objects a bundle needs for the given TLP levels and originators, in a fixed order."""
    out = [exchange_identity(), extension_definition()]
    out += [tlp_marking(level) for level in TLP_IDS if level in tlp_levels]
    out += [agency_identity(agency) for agency in sorted(agencies)]
    return out
