"""Translations of a record's title and summary: language tags, validation, lookup, search text.

A translation is part of the signed record (``RecordDraft.translations``): the originator's
analyst writes it, the node signs it with the rest, and no relay can change it. Language
tags are BCP 47 (RFC 5646) and compared case-insensitively, as the RFC says; a record
holds at most one translation per language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from exchange.errors import InvalidInput, clip
from exchange.v1 import records_pb2

MAX_TRANSLATIONS = 16  # languages per record
MAX_TAG_CHARS = 35  # RFC 5646 section 4.4.1: implementations need not support longer tags

# RFC 5646 "langtag" (section 2.1), with privateuse-only tags, except that the primary
# language subtag must be an ISO 639 code (2 or 3 letters): the RFC's 4-letter subtags are
# reserved and its 5-8 letter ones are registered for no language, so a tag such as
# "english" is a mistake to name, not a language. Irregular grandfathered tags (i-klingon)
# are not accepted: they are deprecated and none is a language a partner uses.
_LANGTAG = re.compile(
    r"""^(?:
      (?P<language>[a-z]{2,3}(?:-[a-z]{3}){0,3})
      (?:-[a-z]{4})?                      # script
      (?:-(?:[a-z]{2}|[0-9]{3}))?         # region
      (?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*   # variants
      (?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*       # extensions
      (?:-x(?:-[a-z0-9]{1,8})+)?          # private use
    |x(?:-[a-z0-9]{1,8})+)$""",
    re.VERBOSE | re.IGNORECASE,
)


def well_formed(tag: str) -> bool:
    return len(tag) <= MAX_TAG_CHARS and _LANGTAG.match(tag) is not None


def primary(tag: str) -> str:
    """The primary language subtag, lower-case: "en" for "en-GB"."""
    return tag.split("-", 1)[0].lower()


def validate_translations(
    translations: Sequence[records_pb2.Translation], field: str, *, max_title: int, max_summary: int
) -> None:
    """Raise InvalidInput naming the first bad translation of a draft."""
    if len(translations) > MAX_TRANSLATIONS:
        raise InvalidInput(field, f"{len(translations)} translations, over the limit of {MAX_TRANSLATIONS}")
    seen: set[str] = set()
    for i, translation in enumerate(translations):
        at = f"{field}[{i}]"
        if not translation.language:
            raise InvalidInput(f"{at}.language", "missing (a BCP 47 language tag such as en, ja or ko)")
        if not well_formed(translation.language):
            raise InvalidInput(f"{at}.language", f"not a BCP 47 language tag: {clip(translation.language)!r}")
        key = translation.language.lower()
        if key in seen:
            raise InvalidInput(f"{at}.language", f"a second translation into {translation.language}")
        seen.add(key)
        if not translation.title.strip() and not translation.summary.strip():
            raise InvalidInput(at, "translates neither the title nor the summary")
        for name, value, limit in (("title", translation.title, max_title),
                                   ("summary", translation.summary, max_summary)):
            if len(value) > limit:
                raise InvalidInput(f"{at}.{name}", f"{len(value)} characters, over the limit of {limit}")


def translation_for(content: records_pb2.RecordDraft, language: str) -> records_pb2.Translation | None:
    """The translation asked for: the same tag, else one of the same primary language ("en"
    finds "en-GB" and "en-GB" finds "en"); None when there is none."""
    if not language:
        return None
    wanted = language.lower()
    for translation in content.translations:
        if translation.language.lower() == wanted:
            return translation
    for translation in content.translations:
        if primary(translation.language) == primary(wanted):
            return translation
    return None


def searchable_text(content: records_pb2.RecordDraft) -> str:
    """Title, summary and every translation of them: what text search indexes and matches."""
    parts = [content.title, content.summary]
    for translation in content.translations:
        parts += [translation.title, translation.summary]
    return "\n".join(parts)
