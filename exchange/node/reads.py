"""What every read path for the node's own users shares: the decision, pages, tokens, audit.

Pages are filled only with records that passed :func:`exchange.core.policy.decide`,
and "is there a next page" is answered by finding one more such record, so neither
a page, a token nor its absence says anything about records the caller may not see.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

from google.protobuf.message import Message

from exchange.core.identity import Principal
from exchange.core.policy import decide
from exchange.errors import InvalidInput
from exchange.store import Store, StoredRecord, audit


class Agencies(Protocol):
    """What the decision reads of the manifest trusted now (a ``Manifest`` is one)."""

    @property
    def agencies(self) -> frozenset[str]: ...


def visible(agency: str, manifest: Agencies, record: StoredRecord, caller: Principal) -> bool:
    return decide(
        holder=agency, principal=caller, originator=record.originator, marking=record.marking,
        known_agencies=manifest.agencies,
    ).allowed


def page_size(requested: int, default: int, maximum: int) -> int:
    size = requested or default
    if size > maximum:
        raise InvalidInput("page_size", f"at most {maximum}")
    return size


def fill_page(
    candidates: Iterable[StoredRecord], agency: str, manifest: Agencies, caller: Principal, size: int
) -> tuple[list[StoredRecord], bool]:
    """The first ``size`` candidates the caller may see, and whether one more exists."""
    page: list[StoredRecord] = []
    for record in candidates:
        if not visible(agency, manifest, record, caller):
            continue
        if len(page) == size:
            return page, True
        page.append(record)
    return page, False


def token_context(kind: bytes, request: Message, caller: Principal) -> bytes:
    """Binds a page token to the caller and the request it was issued for (page fields aside)."""
    query = type(request)()
    query.CopyFrom(request)
    query.ClearField("page_token")
    query.ClearField("page_size")
    digest = hashlib.sha256(kind + b"\x00" + query.SerializeToString(deterministic=True)).digest()
    return caller.identity.uri.encode("utf-8") + b"\x00" + digest


def audit_disclosure(store: Store, caller: Principal, action: str, shown: list[StoredRecord]) -> None:
    if shown:
        audit.record(
            store,
            actor=caller.identity.uri,
            action=action,
            detail={"records": [[r.originator, r.record_id, r.version] for r in shown]},
        )
