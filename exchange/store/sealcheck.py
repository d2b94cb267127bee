"""Every seal at once: what ``exchange audit verify`` reports, and sealing at revisions 0003 and 0017.

The read paths check the rows they are about to serve (exchange/store/integrity.py);
this walks all of them, so an operator learns of an edit before anyone asks for the
record, and checks ``disclosure_index`` against the audit chain it is derived from:
a row deleted, added or edited there is named.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update

from exchange.errors import ConfigError
from exchange.store import audit as audit_log
from exchange.store.integrity import LOG_SEALED, RECORDS_SEALED, Integrity
from exchange.store.schema import disclosure_index, log, records

__all__ = ["problems", "seal_existing", "seal_receipts"]

logger = logging.getLogger("exchange.store")

MAX_LISTED = 1000  # problems named one by one; beyond, a count


def _entries(conn: Connection) -> Iterator[Any]:
    """Every log row with the current-version row of its record, labelled as ``Store.log_after`` does."""
    query = select(
        log.c.seq, log.c.originator, log.c.record_id, log.c.version, log.c.content_hash, log.c.envelope,
        log.c.payload_type, log.c.audience, log.c.key_id, log.c.received_from, log.c.received_at, log.c.purged,
        log.c.mac, log.c.classification.label("v_classification"), log.c.releasable_to.label("v_releasable_to"),
        log.c.tlp.label("v_tlp"), log.c.caveats.label("v_caveats"),
        records.c.classification, records.c.releasable_to, records.c.tlp, records.c.caveats,
        records.c.version.label("r_version"), records.c.seq.label("r_seq"), records.c.status.label("r_status"),
        records.c.kind.label("r_kind"), records.c.mac.label("r_mac"),
    ).outerjoin(records, and_(records.c.originator == log.c.originator, records.c.record_id == log.c.record_id))
    yield from conn.execution_options(yield_per=1000).execute(query.order_by(log.c.seq))


def _disclosures(conn: Connection, seal: Integrity) -> Iterator[str]:
    """disclosure_index against the pull entries of the audit chain."""
    expected: dict[tuple[str, str, int, int, bool], str] = {}
    for entry in audit_log.entries(conn, action="pull"):
        partner = str(entry.detail.get("partner", ""))
        for kind, withdrawal in (("records", False), ("withdrawals", True)):
            for originator, record_id, version in entry.detail.get(kind, []):
                expected[(originator, record_id, entry.seq, int(version), withdrawal)] = partner
    for row in conn.execute(select(disclosure_index)):
        key = (row.originator, row.record_id, int(row.audit_seq), int(row.version), bool(row.withdrawal))
        sent_to = expected.pop(key, None)
        what = f"record {row.originator}/{row.record_id}: disclosure_index row of audit entry {row.audit_seq}"
        if sent_to is None:
            yield f"{what} is not a disclosure the audit chain records (added or edited)"
        elif sent_to != row.partner:
            yield f"{what} names {row.partner}, the audit chain {sent_to} (edited)"
        elif seal.disclosure_problem(*key, row.partner, row.mac) is not None:
            yield f"{what} does not match its seal (edited)"
    for (originator, record_id, audit_seq, version, withdrawal), partner in sorted(expected.items()):
        what = "withdrawal below version" if withdrawal else "version"
        yield (f"record {originator}/{record_id}: the {what} {version} sent to {partner} (audit entry {audit_seq}) "
               "is missing from disclosure_index (deleted)")


def _all(conn: Connection, current: Any, seal: Integrity) -> Iterator[str]:
    for row in conn.execution_options(yield_per=1000).execute(current):
        problem = seal.current_problem(row)
        if problem is not None:
            yield f"record {row.originator}/{row.record_id}: {problem}"
    for row in _entries(conn):
        problem = seal.entry_problem(row)
        if problem is not None:
            yield f"record {row.originator}/{row.record_id} version {row.version}: {problem}"
    yield from _disclosures(conn, seal)


def problems(conn: Connection, current: Any, seal: Integrity) -> list[str]:
    """Every row whose seal does not match, naming its record (``current`` is
    ``Store.select_current()``); an empty list means every seal holds."""
    found: list[str] = []
    extra = 0
    for problem in _all(conn, current, seal):
        if len(found) < MAX_LISTED:
            found.append(problem)
        else:
            extra += 1
    if extra:
        found.append(f"... and {extra} more")
    return found


def seal_existing(conn: Connection, seal: Integrity) -> None:
    """Revision 0003, in the upgrade's transaction: seal the rows written before seals existed
    and key the audit chain (refused if that chain does not verify)."""
    audit_log.rekey(conn, seal)
    rows = conn.execute(select(log.c.seq, *(log.c[c] for c in LOG_SEALED))).all()
    if rows:
        conn.execute(update(log).where(log.c.seq == bindparam("target")).values(mac=bindparam("sealed")),
                     [{"target": r.seq, "sealed": seal.log_mac(r.seq, *r[1:])} for r in rows])
    rows = conn.execute(select(records.c.rid, records.c.originator, records.c.record_id,
                               *(records.c[c] for c in RECORDS_SEALED))).all()
    if rows:
        conn.execute(update(records).where(records.c.rid == bindparam("target")).values(mac=bindparam("sealed")),
                     [{"target": r.rid, "sealed": seal.records_mac(*r[1:])} for r in rows])
    index = disclosure_index.c
    rows = conn.execute(select(index.originator, index.record_id, index.audit_seq, index.version, index.withdrawal,
                               index.partner)).all()
    if rows:
        conn.execute(
            update(disclosure_index).where(
                index.originator == bindparam("o"), index.record_id == bindparam("r"),
                index.audit_seq == bindparam("a"), index.version == bindparam("v"),
                index.withdrawal == bindparam("w"),
            ).values(mac=bindparam("sealed")),
            [{"o": r.originator, "r": r.record_id, "a": r.audit_seq, "v": r.version, "w": r.withdrawal,
              "sealed": seal.disclosure_mac(*r)} for r in rows],
        )



RESEAL_CHUNK = 5000  # log entries read and sealed anew at a time (revision 0017)


def seal_receipts(conn: Connection, seal: Integrity) -> None:
    """Revision 0017, in the upgrade's transaction: seal every log entry anew, its receipt
    (``received_from``, ``received_at``) included.

    Each entry's seal is checked first as revisions 0003 to 0016 made it: an entry edited
    before the upgrade keeps a seal that matches under neither format, so it is still never
    served and still reported (``exchange audit verify``), never sealed as if it were
    genuine. The receipt itself was never sealed: what it says now is what gets sealed.

    Refused (ConfigError, and the transaction rolls back) under a key that is not the one the
    database was sealed with: the audit chain's last entry does not open under it, or, with
    no chain yet, not one log entry does. Every row would otherwise be left reading as edited;
    under the right key, an entry that fails is one edited before the upgrade.
    """
    keyed = audit_log.keyed_by(conn, seal)
    if keyed is False:
        raise ConfigError(_WRONG_KEY)
    columns = (log.c.seq, *(log.c[name] for name in LOG_SEALED), log.c.mac)
    before = len(LOG_SEALED) - 2  # the sealed columns up to the receipt
    position, left, matched = 0, 0, 0
    while True:
        rows = conn.execute(select(*columns).where(log.c.seq > position).order_by(log.c.seq)
                            .limit(RESEAL_CHUNK)).all()
        renewed = []
        for row in rows:
            seq, values, mac = row[0], tuple(row[1:-1]), row[-1]
            old = seal.log_mac_before_0017(seq, *values[:before])
            if mac is None or not hmac.compare_digest(old, bytes(mac)):
                left += 1
                continue
            renewed.append({"target": seq, "sealed": seal.log_mac(seq, *values)})
        matched += len(renewed)
        if renewed:
            conn.execute(update(log).where(log.c.seq == bindparam("target")).values(mac=bindparam("sealed")),
                         renewed)
        if len(rows) < RESEAL_CHUNK:
            break
        position = rows[-1][0]
    if keyed is None and left and not matched:  # with a chain to try the key on, every entry may be edited
        raise ConfigError(_WRONG_KEY)
    if left:
        logger.warning("%d log entries did not match their seal before the upgrade either: left as they were "
                       "(exchange audit verify names them)", left)


_WRONG_KEY = ("the integrity key does not open this database's seals: is it this node's key "
              "(certs/out/<AGENCY>/integrity.key)? Nothing was changed")
