"""Record ids as people type them: the whole id, or a unique prefix of it.

Tables show the first 8 characters of an id; any prefix of 4 or more works
wherever a record is taken, with or without ``ORIGINATOR/`` in front. A prefix
is resolved through the node's own Search, as the user may see it (so it can
never find a record the user could not have found), and the node audits that
search like any other. An ambiguous prefix is refused, naming the candidates.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from exchange.errors import InvalidInput, NotFound
from exchange.v1 import query_pb2, records_pb2

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = ["FULL_ID_CHARS", "MIN_PREFIX", "REF_HELP", "REF_METAVAR", "check_ref", "ref_arg", "resolve_ref", "split_ref"]

FULL_ID_CHARS = 36  # a UUID as str(uuid.UUID) writes it, the one form ids take
MIN_PREFIX = 4  # shorter would match half a node's records and page through all of them
_SHOWN_CANDIDATES = 5
REF_METAVAR = "[ORIGINATOR/]ID"
REF_HELP = f"a record id, or a unique prefix of it (at least {MIN_PREFIX} characters, e.g. the 8 a table shows)"


def split_ref(text: str) -> tuple[str, str]:
    """``(originator or "", id or prefix)``; only the shape is checked here, the node checks the rest."""
    originator, sep, ident = text.rpartition("/")
    if (sep and not originator) or not ident or "/" in originator:
        raise InvalidInput("record", f"expected [ORIGINATOR/]ID, got {text!r}")
    return originator, ident


def check_ref(text: str) -> str:
    """``text`` if it can name a record; checked before any node is asked (a usage error)."""
    originator, ident = split_ref(text)
    if not (originator and len(ident) >= FULL_ID_CHARS) and len(ident) < MIN_PREFIX:
        raise InvalidInput("record", f"id prefix {ident!r} is too short: give at least {MIN_PREFIX} characters")
    return text


def ref_arg(text: str) -> str:
    """An argparse type for a record argument (see ``check_ref``)."""
    try:
        return check_ref(text)
    except InvalidInput as exc:  # argparse names the argument itself
        raise argparse.ArgumentTypeError(exc.problem) from None


def _candidates(client: Client, originator: str, prefix: str) -> list[records_pb2.RecordRef]:
    request = query_pb2.SearchRequest(include_retracted=True, include_expired=True,
                                      originators=[originator] if originator else [])
    found: dict[tuple[str, str], records_pb2.RecordRef] = {}
    while True:
        answer = client.call(client.search, request)
        for held in answer.records:
            ref = records_pb2.Record.FromString(held.envelope.payload).ref
            if ref.record_id.startswith(prefix):
                found[(ref.originator, ref.record_id)] = ref
        if not answer.next_page_token:
            return [found[key] for key in sorted(found)]
        request.page_token = answer.next_page_token


def resolve_ref(client: Client, text: str) -> records_pb2.RecordRef:
    """The record ``text`` names, asking the node only when it is not a whole ORIGINATOR/ID."""
    originator, ident = split_ref(check_ref(text))
    if originator and len(ident) >= FULL_ID_CHARS:
        return records_pb2.RecordRef(originator=originator, record_id=ident)
    prefix = ident.lower()  # ids are lower-case hex; a prefix copied in capitals still matches
    matches = _candidates(client, originator, prefix)
    if not matches:
        raise NotFound(f"record {text}")
    if len(matches) > 1:
        shown = ", ".join(f"{m.originator}/{m.record_id[:12]}" for m in matches[:_SHOWN_CANDIDATES])
        more = "" if len(matches) <= _SHOWN_CANDIDATES else ", ..."
        raise InvalidInput("record", f"{text!r} is ambiguous: it matches {len(matches)} records ({shown}{more}); "
                                     "give more of the id")
    return matches[0]
