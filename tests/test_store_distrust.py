"""A store distrusts the keys it was opened with, whoever opens it (docs/design.md "Signing").

The compromised keys are an argument of ``Store.open``, not something a node sets
afterwards: a store opened outside ``Node`` (a tool, a test, a replica) serves none of
the entries those keys signed, through any read (log chunks, search, current version).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from exchange.core.manifest import Manifest
from exchange.store import SearchFilter, Store
from exchange.store.current import current_record
from exchange.store.integrity import Integrity
from exchange.store.log import log_after
from exchange.store.search import search
from tests.backends import Backend
from tests.federation import Federation
from tests.fill import fill

JPN, USA, KOR = "JPN-NPA", "USA-DTSF", "KOR-KNPA"

SEAL = Integrity(b"\x02" * 32)  # the node's integrity key (exchange/store/integrity.py)


def _compromised(manifest: Manifest, agency: str) -> Manifest:
    """``manifest`` with every signing key of ``agency`` marked compromised."""
    partner = manifest.partner(agency)
    keys = tuple(dataclasses.replace(k, compromised_since=k.not_before) for k in partner.keys)
    partners = {**manifest.partners, agency: dataclasses.replace(partner, keys=keys)}
    return dataclasses.replace(manifest, partners=partners)


def test_a_store_opened_with_a_distrusted_key_serves_nothing_it_signed(
    pki: Federation, backend: Backend, tmp_path: Path
) -> None:
    url = backend.migrated(tmp_path / "kor")
    writer = Store.open(url, agency=KOR, seal=SEAL)
    try:
        jpn_refs = fill(writer, pki.manifest, pki.pki_dir, JPN, 3)
        usa_refs = fill(writer, pki.manifest, pki.pki_dir, USA, 2)
        # Opened without distrust, the store serves both originators' entries.
        assert {e.originator for e in log_after(writer, 0)} == {JPN, USA}
        assert {r.originator for r in search(writer, SearchFilter())} == {JPN, USA}
        assert current_record(writer, JPN, jpn_refs[0].record_id) is not None
    finally:
        writer.close()

    distrusted = _compromised(pki.manifest, JPN).compromised_keys
    assert distrusted == {k.key_id for k in pki.manifest.partner(JPN).keys} and distrusted
    store = Store.open(url, agency=KOR, seal=SEAL, distrusted_keys=distrusted)
    try:
        assert store.distrusted_keys == distrusted
        assert [(e.originator, e.record_id) for e in log_after(store, 0)] == [
            (USA, ref.record_id) for ref in usa_refs
        ]
        assert {(r.originator, r.record_id) for r in search(store, SearchFilter())} == {
            (USA, ref.record_id) for ref in usa_refs
        }
        assert all(current_record(store, JPN, ref.record_id) is None for ref in jpn_refs)
        assert all(current_record(store, USA, ref.record_id) is not None for ref in usa_refs)
    finally:
        store.close()
