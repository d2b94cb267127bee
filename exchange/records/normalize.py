"""Normalised forms of observables, used as index keys.

Two agencies reporting the same e-mail address, company or phone number rarely
type it the same way: full-width versus half-width characters (common in
Japanese and Korean input methods), capitals, spacing, punctuation in phone
numbers. ``normalize`` maps every spelling of one value to a single key so the
store can answer "has anyone reported this?" with an exact-match lookup.

Every form is stable: ``normalize(t, normalize(t, v)) == normalize(t, v)``, so a
key can be re-normalised (e.g. when it arrives from a peer) without drifting.

Pure functions: no I/O, no database.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Callable

import idna
import phonenumbers

from exchange.errors import InternalError, InvalidInput, clip

__all__ = ["OBSERVABLE_TYPES", "normalize", "normalize_any"]

OBSERVABLE_TYPES: frozenset[str] = frozenset(
    {
        "email",
        "domain",
        "url",
        "ip",
        "phone",
        "company_name",
        "company_registration",
        "person_name",
        "address",
        "vessel_imo",
        "wallet",
        "platform_handle",
        "bank_account",
        "hs_code",
        "eccn",
        "identity_document",
    }
)

MAX_VALUE_CHARS = 1000

_URL_SCHEMES = frozenset({"http", "https", "ftp"})
# Bech32 addresses are case-insensitive (BIP 173 forbids mixed case), so the
# lower-case form is canonical; base58 addresses are case-sensitive and kept.
_BECH32_PREFIXES = ("bc1", "tb1", "ltc1")
_IMO_WEIGHTS = (7, 6, 5, 4, 3, 2)
_PHONE_TOO_SHORT = frozenset(
    {
        phonenumbers.NumberParseException.TOO_SHORT_NSN,
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD,
    }
)
# Hyphen-like characters that NFKC leaves alone but people paste into
# registration and account numbers (U+2010..U+2015 dashes, U+2212 minus).
_HYPHENS = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
_STRIP_FROM_CODES = re.compile(rf"[\s{re.escape(_HYPHENS)}]+")
_HS_SEPARATORS = re.compile(r"[\s.\-]+")
_HS_CODE = re.compile(r"[0-9]{4,10}")
_ECCN = re.compile(r"[A-Z0-9]+(?:\.[A-Z0-9]+)*")
_WALLET = re.compile(r"[A-Za-z0-9]+")
_HEX = re.compile(r"[0-9a-f]+")
_PORT = re.compile(r"[0-9]{1,5}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")


# --- shared helpers ---------------------------------------------------------


def _nfkc(value: str) -> str:
    return unicodedata.normalize("NFKC", value)


def _stable(value: str, mapping: Callable[[str], str]) -> str:
    """Apply ``mapping`` then NFKC until nothing changes.

    Case mapping can produce text that is no longer NFKC (and NFKC can expose
    new case mappings), so one pass is not always idempotent; a few passes
    reach the fixed point for all of Unicode in practice.
    """
    for _ in range(4):
        mapped = _nfkc(mapping(value))
        if mapped == value:
            break
        value = mapped
    return value


def _collapse_spaces(value: str) -> str:
    # str.split() with no argument splits on every Unicode whitespace run,
    # including U+3000 ideographic space should it survive NFKC.
    return " ".join(value.split())


def _has_space(value: str) -> bool:
    return any(ch.isspace() for ch in value)


# --- per-type normalisers ---------------------------------------------------
# Each takes the NFKC, stripped, non-empty value and returns the key or raises
# InvalidInput with the caller's field name.


def _name(value: str, field: str) -> str:
    return _collapse_spaces(_stable(value, str.casefold))


def _platform_handle(value: str, field: str) -> str:
    handle = _name(value, field).removeprefix("@")
    if not handle:
        raise InvalidInput(field, "platform handle is empty after removing the leading @")
    # A second "@" would be removed on re-normalisation; refuse it instead so
    # the key is stable.
    if handle.startswith("@"):
        raise InvalidInput(field, "platform handle has more than one leading @")
    if " " in handle:
        raise InvalidInput(field, "platform handle must not contain spaces")
    return handle


def _idna(value: str) -> str:
    """IDNA 2008 A-label form of a domain; raises UnicodeError (IDNAError)."""
    encoded = idna.encode(value.removesuffix("."), uts46=True).decode("ascii")
    # UTS #46 maps "。" and other full stops to "." only inside idna, so a
    # trailing dot can reappear here.
    encoded = encoded.removesuffix(".").lower()
    if not encoded:
        raise idna.IDNAError("empty domain")
    return encoded


def _domain(value: str, field: str) -> str:
    try:
        return _idna(value)
    except UnicodeError as exc:
        raise InvalidInput(field, f"not a valid domain name ({exc})") from exc


def _email(value: str, field: str) -> str:
    if value.count("@") != 1:
        raise InvalidInput(field, "e-mail address needs exactly one @, e.g. name@example.com")
    if _has_space(value):
        raise InvalidInput(field, "e-mail address must not contain spaces")
    local, domain = value.split("@")
    if not local or not domain:
        raise InvalidInput(field, "e-mail address needs text both before and after the @")
    try:
        ascii_domain = _idna(domain)
    except UnicodeError as exc:
        raise InvalidInput(field, f"e-mail address has an invalid domain ({exc})") from exc
    return f"{_stable(local, str.casefold)}@{ascii_domain}"


def _url_host(host: str, field: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError as exc:
            raise InvalidInput(field, "URL host is not a valid IPv6 address") from exc
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        return _idna(host)
    except UnicodeError as exc:
        raise InvalidInput(field, f"URL host is not a valid domain name ({exc})") from exc


def _split_authority(authority: str, field: str) -> tuple[str, str, str]:
    """Split ``user@host:port`` into (userinfo-with-@, host, colon-and-port)."""
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):
        close = hostport.find("]")
        host, port = (hostport, "") if close < 0 else (hostport[: close + 1], hostport[close + 1 :])
    else:
        host, colon, number = hostport.partition(":")
        port = colon + number
    # The port is kept as written; it only has to be a port.
    if port and (port[0] != ":" or not _PORT.fullmatch(port[1:]) or int(port[1:]) > 65535):
        raise InvalidInput(field, "URL port must be a number from 0 to 65535")
    if not host:
        raise InvalidInput(field, "URL needs a host, e.g. https://example.com/")
    return userinfo + at, host, port


def _url(value: str, field: str) -> str:
    scheme_match = _SCHEME.match(value)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme_match is None or scheme not in _URL_SCHEMES:
        raise InvalidInput(field, "URL must start with http://, https:// or ftp://")
    # Refuse rather than guess: browsers read "\" as "/" and spaces are not
    # legal in a URL, so either would make the key ambiguous.
    if _has_space(value) or "\\" in value:
        raise InvalidInput(field, "URL must not contain spaces or backslashes")
    rest = value[scheme_match.end() :]
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, host, port = _split_authority(rest[:authority_end], field)
    tail = rest[authority_end:]
    # "http://host/" and "http://host" name the same resource; keep one form.
    if tail == "/" or tail.startswith(("/?", "/#")):
        tail = tail[1:]
    return f"{scheme}://{userinfo}{_url_host(host, field)}{port}{tail}"


def _ip(value: str, field: str) -> str:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError as exc:
        raise InvalidInput(field, "not a valid IPv4 or IPv6 address") from exc


def _phone(value: str, field: str) -> str:
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            problem = (
                "phone number has an unknown country code"
                if "+" in value
                else "phone number needs a country code, e.g. +81 3-1234-5678"
            )
            raise InvalidInput(field, problem) from exc
        if exc.error_type in _PHONE_TOO_SHORT:
            raise InvalidInput(field, "phone number is too short") from exc
        raise InvalidInput(field, "not a phone number, e.g. +81 3-1234-5678") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidInput(field, "phone number has the wrong number of digits for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _hs_code(value: str, field: str) -> str:
    digits = _HS_SEPARATORS.sub("", value)
    if not _HS_CODE.fullmatch(digits):
        raise InvalidInput(field, "HS code must be 4 to 10 digits, e.g. 8542.31")
    return digits


def _eccn(value: str, field: str) -> str:
    code = "".join(_stable(value, str.upper).split())
    # Loose on purpose: US ECCNs (3A001.a.2), EAR99 and UK/EU list entries
    # (ML10.a) all fit; only stray punctuation and non-ASCII are refused.
    if not _ECCN.fullmatch(code):
        raise InvalidInput(field, "ECCN may contain only letters, digits and dots, e.g. 3A001.a.2")
    return code


def _vessel_imo(value: str, field: str) -> str:
    compact = "".join(value.split())
    if compact[:3].upper() == "IMO":
        compact = compact[3:]
    if not (len(compact) == 7 and compact.isascii() and compact.isdigit()):
        raise InvalidInput(field, "IMO number must be 7 digits, e.g. IMO 9074729")
    weighted = sum(int(d) * w for d, w in zip(compact[:6], _IMO_WEIGHTS, strict=True))
    if weighted % 10 != int(compact[6]):
        raise InvalidInput(field, "IMO number check digit does not match; check for a typo")
    return compact


def _wallet(value: str, field: str) -> str:
    address = "".join(value.split())
    if not _WALLET.fullmatch(address):
        raise InvalidInput(field, "wallet address may contain only ASCII letters and digits")
    lowered = address.lower()
    if lowered.startswith("0x"):
        # Hex addresses (Ethereum and alike) are case-insensitive; mixed case
        # is only an EIP-55 checksum.
        if not _HEX.fullmatch(lowered[2:]):
            raise InvalidInput(field, "0x wallet address must be hexadecimal after the 0x")
        return lowered
    if lowered.startswith(_BECH32_PREFIXES):
        return lowered
    return address


def _code(value: str, field: str) -> str:
    # Registration, account and document numbers: letter case, spaces and
    # hyphens are formatting, never part of the identifier. Separators go
    # first: removing one can join a letter to a combining mark (NFKC turns
    # C + U+00B8 into C, space, U+0327), which the NFKC pass then composes.
    code = _stable(_STRIP_FROM_CODES.sub("", value), str.upper)
    if not code:
        raise InvalidInput(field, "value has no characters besides spaces and hyphens")
    return code


_NORMALIZERS: dict[str, Callable[[str, str], str]] = {
    "email": _email,
    "domain": _domain,
    "url": _url,
    "ip": _ip,
    "phone": _phone,
    "company_name": _name,
    "company_registration": _code,
    "person_name": _name,
    "address": _name,
    "vessel_imo": _vessel_imo,
    "wallet": _wallet,
    "platform_handle": _platform_handle,
    "bank_account": _code,
    "hs_code": _hs_code,
    "eccn": _eccn,
    "identity_document": _code,
}
if frozenset(_NORMALIZERS) != OBSERVABLE_TYPES:  # a type added to one table and not the other
    raise InternalError("observable types and their normalisers disagree: "
                        + ", ".join(sorted(frozenset(_NORMALIZERS) ^ OBSERVABLE_TYPES)))


# --- public API -------------------------------------------------------------


def _prepare(value: str, field: str) -> str:
    """Common first step: type and size checks, NFKC, strip."""
    if not isinstance(value, str):
        raise InvalidInput(field, "value must be text")
    # Checked before NFKC too so an oversized value costs no Unicode work.
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidInput(field, f"value is longer than {MAX_VALUE_CHARS:,} characters")
    prepared = _nfkc(value).strip()
    if not prepared:
        raise InvalidInput(field, "value is empty")
    return prepared


def normalize(obs_type: str, value: str, field: str = "value") -> str:
    """Return the index key for ``value`` as an observable of ``obs_type``.

    Raises ``InvalidInput(field, ...)`` for an unknown type, an empty or
    oversized value, or a value that is not valid for the type.
    """
    normalizer = _NORMALIZERS.get(obs_type) if isinstance(obs_type, str) else None
    if normalizer is None:
        raise InvalidInput(field, f"unknown observable type {clip(obs_type)!r}")
    if isinstance(value, str) and len(value) <= _CACHED_CHARS:
        key, problem = _normalize_cached(obs_type, value)
        if problem is not None:
            raise InvalidInput(field, problem)
        return key
    return _normalize(normalizer, value, field)


# Every record is normalised twice on its way in (validated, then indexed), and the same
# values recur across records (a company, a domain, an HS code): a bounded cache of short
# values' keys and refusals spares the IDNA and phone-number work, the bulk of a record's
# validation. Bounded in entries and in each value's size, so it stays under a few MiB.
_CACHED_CHARS = 256
_NO_FIELD = "\x00"  # the field name a cached refusal was made with, replaced by the caller's


@functools.lru_cache(maxsize=16_384)
def _normalize_cached(obs_type: str, value: str) -> tuple[str, str | None]:
    try:
        return _normalize(_NORMALIZERS[obs_type], value, _NO_FIELD), None
    except InvalidInput as error:
        if error.field != _NO_FIELD:
            raise
        return "", error.problem


def _normalize(normalizer: Callable[[str, str], str], value: str, field: str) -> str:
    key = normalizer(_prepare(value, field), field)
    # NFKC and case folding can lengthen text (e.g. "ß" -> "ss"); bounding the
    # key as well keeps every key re-normalisable.
    if len(key) > MAX_VALUE_CHARS:
        raise InvalidInput(field, f"value is longer than {MAX_VALUE_CHARS:,} characters")
    return key


def normalize_any(value: str) -> dict[str, str]:
    """Return ``{type: key}`` for every type under which ``value`` is valid.

    Used to ask "has anyone reported this value, under any type?". Types the
    value is not valid for are left out; this never raises for bad values.
    """
    keys: dict[str, str] = {}
    for obs_type in sorted(OBSERVABLE_TYPES):
        try:
            keys[obs_type] = normalize(obs_type, value)
        except InvalidInput:
            continue
    return keys
