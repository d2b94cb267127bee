"""Reading a node's configuration (node.toml) and the federation manifest.

Relative paths in node.toml are resolved against the folder that holds it, so
a configuration can be moved with its data. Every problem is a ConfigError
naming the file and the field.
"""

from __future__ import annotations

import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.core.identity import AGENCY_RE, HANDLE_RE, Role
from exchange.core.manifest import Manifest, parse_manifest
from exchange.core.marking import classification_level
from exchange.core.review import ANY_PARTNER, TLP_LABELS, Preapproval, ReviewPolicy
from exchange.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """Bounds on what a node accepts and serves; every one is configuration."""

    max_message_bytes: int = 4 * 1024 * 1024  # bytes, one gRPC message either way
    max_record_bytes: int = 256 * 1024  # bytes, one serialised record payload
    max_observables: int = 10_000  # observables in one record
    max_related: int = 1_000  # related-record links in one record
    default_page_size: int = 50  # search results per page when the caller names none
    max_page_size: int = 500  # search results per page at most
    # Log entries per pull batch at most (also bounded by half of max_message_bytes). Each batch
    # costs both nodes a transaction, an audit entry and a round of queries: at 1,000 a 100,000
    # record pull ran 16% faster than at 500 (bench/README.md), for ~20 MiB more at its peak.
    pull_batch_entries: int = 1000
    pull_max_entries: int = 1_000_000  # entries read in one pull; the rest waits for the next
    pull_deadline_seconds: int = 600  # deadline of one pull call
    check_processes: int = 2  # processes checking a large pulled batch (signatures, rules), beside the writer
    digest_deadline_seconds: int = 60  # deadline of one digest call
    max_digest_entries: int = 2000  # entries listed by one digest call, buckets in one repair pull
    # Fair serving (exchange/node/admission.py): partners never take the threads users need.
    rpc_threads: int = 32  # server threads; each serves one call at a time
    partner_concurrent_calls: int = 4  # calls in progress at once from one partner node
    all_partners_concurrent_calls: int = 12  # from all partner nodes together; fewer than rpc_threads
    user_concurrent_calls: int = 8  # calls in progress at once from one user
    # Searches running at once in this process; the others wait their turn in arrival order
    # (exchange/node/lane.py: concurrent searches in one process slow each other down).
    search_lanes: int = 1
    # Processes filling search pages beside the node's own (exchange/node/searchpool.py); 0:
    # searches run in the node's process, in the lanes above. One per core the node may use.
    search_processes: int = 0
    stream_max_seconds: int = 900  # a server stream (Pull, Watch, reflection) is cancelled after this
    stream_stall_seconds: int = 30  # a stream whose client has not taken the next message for this long
    digest_calls_per_minute: int = 120  # per partner, sustained
    digest_burst_calls: int = 600  # per partner, at once (a repair's bisection makes many)
    empty_cursor_pulls_per_hour: int = 60  # per partner, sustained: each reads the whole log
    empty_cursor_burst_pulls: int = 10  # per partner, at once

    def check(self) -> None:
        """Refuse bounds that would let partners take every thread, or no search run (ConfigError)."""
        if self.search_lanes < 1:
            raise ConfigError(f"search_lanes ({self.search_lanes}) must be at least 1")
        if self.search_processes < 0:
            raise ConfigError(f"search_processes ({self.search_processes}) must be 0 or more")
        if self.all_partners_concurrent_calls >= self.rpc_threads:
            raise ConfigError(f"all_partners_concurrent_calls ({self.all_partners_concurrent_calls}) must be "
                              f"below rpc_threads ({self.rpc_threads}), or partners could leave users no thread")
        if self.partner_concurrent_calls > self.all_partners_concurrent_calls:
            raise ConfigError(f"partner_concurrent_calls ({self.partner_concurrent_calls}) must be at most "
                              f"all_partners_concurrent_calls ({self.all_partners_concurrent_calls})")

    # What one partner can make this node do or keep (issue 10 "bounded repair and evidence"):
    # a partner's claims never size our memory, our event list or our tables.
    repair_interval_seconds: int = 600  # at most one repair by digest per partner this often
    max_repair_digest_calls: int = 2_000  # digest calls one repair may make while bisecting
    refusal_hashes_per_event: int = 5  # content hashes named in one aggregated refusal event
    max_refusal_reasons_per_pull: int = 20  # distinct refusal events per pull; more share one
    max_quarantine_per_peer: int = 1_000  # quarantine rows kept per partner; the oldest go first
    max_equivocation_envelopes: int = 3  # envelopes kept per (originator, record_id, version)


@dataclass(frozen=True)
class UserEntry:
    handle: str
    role: Role
    clearance: str


EVERY_PARTNER = "*"  # [[peers]] agency = "*": every partner in the manifest


@dataclass(frozen=True)
class NotifyTarget:
    """Where watch hits are pushed (exchange/node/notify.py): a local command or an HTTPS webhook.

    A webhook needs a way for the receiver to know the node sent it: mutual TLS (the node's
    ``client_cert``/``client_key``) or an HMAC-SHA256 of the body under ``secret_file``'s
    contents, or both. The command, the URL and the files are the operator's (node.toml),
    never a user's: ``watch add --notify`` names a target, it does not define one.
    """

    name: str
    command: tuple[str, ...] = ()  # argv; the hit's JSON on stdin; exit status 0: delivered
    url: str = ""  # https://...; a 2xx answer: delivered
    ca_file: Path | None = None  # CA certificates the webhook's server certificate must chain to
    client_cert: Path | None = None  # mutual TLS: the node's certificate for the webhook...
    client_key: Path | None = None  # ...and its key
    secret_file: Path | None = None  # shared secret: X-Exchange-Signature: sha256=HMAC(secret, body)
    retry_seconds: float = 5.0  # first retry after a failure; doubled each time...
    max_retry_seconds: float = 300.0  # ...up to this


@dataclass(frozen=True)
class PeerEntry:
    agency: str
    interval_seconds: float = 30.0


@dataclass(frozen=True)
class TaxiiCollection:
    """One TAXII collection: the records the caller may see, narrowed by originator."""

    id: str  # a UUID, as TAXII requires
    title: str
    description: str = ""
    originators: tuple[str, ...] = ()  # only these originators' records; () for any
    from_partners: bool = False  # leave out the node's own agency's records


@dataclass(frozen=True)
class TaxiiConfig:
    """``[taxii]``: the read-only TAXII 2.1 server (exchange/node/taxii); absent, none is served."""

    listen: str
    collections: tuple[TaxiiCollection, ...]


# Fixed for ever: the id of the default collection of each agency is derived from it.
_TAXII_NAMESPACE = uuid.UUID("2b7c4f0e-5d1a-5e8b-9c3f-7a6d5e4c3b2a")


def default_collection(agency: str) -> TaxiiCollection:
    return TaxiiCollection(
        id=str(uuid.uuid5(_TAXII_NAMESPACE, f"{agency}/all")), title=f"Shared with {agency}",
        description="Every record this node holds that you may see, as STIX 2.1 objects.")


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    agency: str
    listen: str
    data_dir: Path
    database_url: str
    pki_dir: Path
    users: dict[str, UserEntry]
    peers: tuple[PeerEntry, ...]
    limits: Limits = field(default_factory=Limits)
    # host:port of the Prometheus endpoint; "" serves none. Built in code (tests), a node has
    # none unless asked; node.toml without the key gets DEFAULT_METRICS_LISTEN.
    metrics_listen: str = ""
    health_check_seconds: float = 1.0  # how often the health monitor tries the database
    # Release review (exchange/core/review.py): on when node.toml has a [review] table. Off
    # (None), an analyst's submission is released at once, as before review existed.
    review: ReviewPolicy | None = None
    notify: dict[str, NotifyTarget] = field(default_factory=dict)  # [[notify]] targets by name
    notify_check_seconds: float = 2.0  # how often new watch hits are looked for and pushed
    # How long a delivered hit stays in the outbox (for `exchange`'s operators to look at)
    # before it is pruned; the notifier's marks keep it from being found and sent again.
    notify_keep_delivered_days: float = 30.0
    taxii: TaxiiConfig | None = None  # the TAXII 2.1 server; None (the default): none

    @property
    def manifest_path(self) -> Path:
        return self.pki_dir / "manifest.toml"

    @property
    def agency_dir(self) -> Path:
        return self.pki_dir / self.agency

    def load_manifest(self) -> Manifest:
        manifest = load_manifest(self.manifest_path)
        # A peer the manifest does not know can never be pulled from: refuse the
        # configuration at start, not in a traceback at every scheduled pull.
        for i, peer in enumerate(self.peers):
            if peer.agency != EVERY_PARTNER and peer.agency not in manifest.partners:
                raise ConfigError(
                    f"{self.path}: peers[{i}].agency: {peer.agency} is not in the federation manifest "
                    f"{self.manifest_path}"
                )
        return manifest


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_manifest(path: Path) -> Manifest:
    data = read_toml(path)
    try:
        return parse_manifest(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


ZERO_ALLOWED = frozenset({"search_processes"})  # limits where 0 means "none" (the others are sizes)


def _limits(data: object, where: str) -> Limits:
    if data is None:
        return Limits()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    defaults = Limits()
    values: dict[str, int] = {}
    for name, value in data.items():
        if not hasattr(defaults, name):
            raise ConfigError(f"{where}.{name}: unknown limit")
        least = 0 if name in ZERO_ALLOWED else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            expected = "an integer, 0 or more" if least == 0 else "a positive integer"
            raise ConfigError(f"{where}.{name}: expected {expected}, got {value!r}")
        values[name] = value
    limits = Limits(**values)
    try:
        limits.check()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return limits


def _users(data: object, where: str) -> dict[str, UserEntry]:
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of [[users]] tables")
    users: dict[str, UserEntry] = {}
    for i, entry in enumerate(data):
        at = f"{where}[{i}]"
        handle = entry.get("handle") if isinstance(entry, dict) else None
        if not isinstance(handle, str) or not HANDLE_RE.match(handle):
            raise ConfigError(f"{at}.handle: expected a lower-case handle, got {handle!r}")
        try:
            role = Role(entry.get("role"))
        except ValueError:
            raise ConfigError(
                f"{at}.role: expected analyst, liaison or disclosure_officer, got {entry.get('role')!r}"
            ) from None
        if role in (Role.NODE, Role.OPERATOR):
            raise ConfigError(f"{at}.role: a user cannot have the {role.value} role")
        clearance = entry.get("clearance")
        if not isinstance(clearance, str) or classification_level(clearance) is None:
            raise ConfigError(f"{at}.clearance: unknown classification {clearance!r}")
        if handle in users:
            raise ConfigError(f"{at}.handle: {handle} is listed twice")
        users[handle] = UserEntry(handle, role, clearance)
    return users


def _peers(data: object, where: str) -> tuple[PeerEntry, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of [[peers]] tables")
    peers = []
    for i, entry in enumerate(data):
        at = f"{where}[{i}]"
        agency = entry.get("agency") if isinstance(entry, dict) else None
        # "*": every partner the manifest names, as it changes (a partner that joins is pulled
        # from as soon as the node adopts the manifest that adds it; exchange/node/server.py).
        if not isinstance(agency, str) or not (AGENCY_RE.match(agency) or agency == EVERY_PARTNER):
            raise ConfigError(f"{at}.agency: malformed agency code {agency!r}")
        interval = entry.get("interval_seconds", 30.0)
        if not isinstance(interval, int | float) or interval <= 0:
            raise ConfigError(f"{at}.interval_seconds: expected a positive number")
        peers.append(PeerEntry(agency, float(interval)))
    return tuple(peers)


def _review(data: object, users: dict[str, UserEntry], where: str) -> ReviewPolicy | None:
    """The [review] table: pre-approved markings per partner. Review needs two disclosure
    officers among the users, or a widening (two approvals) could never be released."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(data) - {"preapproved"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (expected preapproved)")
    officers = [u for u in users.values() if u.role is Role.DISCLOSURE_OFFICER]
    if len(officers) < 2:
        raise ConfigError(f"{where}: release review needs at least two users with role = \"disclosure_officer\" "
                          f"(the two-person rule), found {len(officers)}")
    entries = data.get("preapproved", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}.preapproved: expected a list of [[review.preapproved]] tables")
    rules = []
    for i, entry in enumerate(entries):
        at = f"{where}.preapproved[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a table")
        partners = entry.get("partners")
        if not isinstance(partners, list) or not partners or not all(
            isinstance(p, str) and (p == ANY_PARTNER or AGENCY_RE.match(p)) for p in partners
        ):
            raise ConfigError(f"{at}.partners: expected a list of agency codes or \"*\", got {partners!r}")
        ceiling = entry.get("max_classification")
        if not isinstance(ceiling, str) or classification_level(ceiling) is None:
            raise ConfigError(f"{at}.max_classification: unknown classification {ceiling!r}")
        tlp = entry.get("tlp")
        if not isinstance(tlp, list) or not tlp or not all(isinstance(t, str) and t in TLP_LABELS for t in tlp):
            raise ConfigError(f"{at}.tlp: expected a list of TLP labels ({', '.join(sorted(TLP_LABELS))}), got {tlp!r}")
        rules.append(Preapproval(frozenset(partners), ceiling, frozenset(tlp)))
    return ReviewPolicy(tuple(rules))
def _path(value: object, base: Path, where: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a file path")
    return base / value


def _notify(data: object, base: Path, where: str) -> dict[str, NotifyTarget]:
    if data is None:
        return {}
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of [[notify]] tables")
    targets: dict[str, NotifyTarget] = {}
    for i, entry in enumerate(data):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a table")
        name = entry.get("name")
        if not isinstance(name, str) or not HANDLE_RE.match(name):
            raise ConfigError(f"{at}.name: expected a lower-case name, got {name!r}")
        if name in targets:
            raise ConfigError(f"{at}.name: {name} is listed twice")
        command, url = entry.get("command", []), entry.get("url", "")
        if not isinstance(command, list) or not all(isinstance(c, str) and c for c in command):
            raise ConfigError(f"{at}.command: expected a list of strings (program and arguments)")
        if not isinstance(url, str):
            raise ConfigError(f"{at}.url: expected a string")
        if bool(command) == bool(url):
            raise ConfigError(f"{at}: give exactly one of command or url")
        if url and not url.startswith("https://"):
            raise ConfigError(f"{at}.url: a webhook must be https://")
        target = NotifyTarget(
            name=name, command=tuple(command), url=url,
            ca_file=_path(entry.get("ca_file"), base, f"{at}.ca_file"),
            client_cert=_path(entry.get("client_cert"), base, f"{at}.client_cert"),
            client_key=_path(entry.get("client_key"), base, f"{at}.client_key"),
            secret_file=_path(entry.get("secret_file"), base, f"{at}.secret_file"),
            retry_seconds=_seconds(entry.get("retry_seconds"), 5.0, f"{at}.retry_seconds"),
            max_retry_seconds=_seconds(entry.get("max_retry_seconds"), 300.0, f"{at}.max_retry_seconds"),
        )
        if url and target.secret_file is None and target.client_cert is None:
            raise ConfigError(f"{at}: a webhook needs secret_file (HMAC) or client_cert and client_key (mutual TLS)")
        if (target.client_cert is None) != (target.client_key is None):
            raise ConfigError(f"{at}: client_cert and client_key go together")
        targets[name] = target
    return targets


# Loopback only: per-originator counts are themselves sensitive (docs/design.md "Interfaces").
DEFAULT_METRICS_LISTEN = "127.0.0.1:9101"


def split_host_port(value: str) -> tuple[str, int]:
    """("127.0.0.1", 9101) from "127.0.0.1:9101"; IPv6 hosts in brackets ("[::1]:9101")."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected host:port, got {value!r}")
    return host, int(port)


def _metrics_listen(data: object, where: str) -> str:
    if data is None:
        return DEFAULT_METRICS_LISTEN
    if not isinstance(data, str):
        raise ConfigError(f"{where}: expected \"host:port\", or \"\" for no metrics endpoint")
    if data:
        try:
            split_host_port(data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return data


def _strings(data: object, where: str, pattern: Any = None) -> tuple[str, ...]:
    if data is None:
        return ()
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ConfigError(f"{where}: expected a list of strings")
    for value in data:
        if pattern is not None and not pattern.match(value):
            raise ConfigError(f"{where}: malformed agency code {value!r}")
    return tuple(data)


def _taxii(data: object, agency: str, where: str) -> TaxiiConfig | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a [taxii] table")
    unknown = set(data) - {"listen", "collections"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected listen, collections)")
    listen = data.get("listen")
    if not isinstance(listen, str):
        raise ConfigError(f"{where}.listen: expected \"host:port\"")
    try:
        split_host_port(listen)
    except ConfigError as exc:
        raise ConfigError(f"{where}.listen: {exc}") from None
    entries = data.get("collections")
    if entries is None:
        return TaxiiConfig(listen, (default_collection(agency),))
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}.collections: expected one or more [[taxii.collections]] tables")
    collections: list[TaxiiCollection] = []
    for i, entry in enumerate(entries):
        at = f"{where}.collections[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a table")
        try:
            ident = str(uuid.UUID(str(entry.get("id"))))
        except ValueError:
            raise ConfigError(f"{at}.id: expected a UUID, got {entry.get('id')!r}") from None
        if ident in {c.id for c in collections}:
            raise ConfigError(f"{at}.id: {ident} is listed twice")
        title = entry.get("title")
        description = entry.get("description", "")
        if not isinstance(title, str) or not title.strip() or not isinstance(description, str):
            raise ConfigError(f"{at}.title: expected a title (and description, if any) as text")
        from_partners = entry.get("from_partners", False)
        if not isinstance(from_partners, bool):
            raise ConfigError(f"{at}.from_partners: expected true or false")
        collections.append(TaxiiCollection(ident, title, description,
                                           _strings(entry.get("originators"), f"{at}.originators", AGENCY_RE),
                                           from_partners))
    return TaxiiConfig(listen, tuple(collections))


def _seconds(data: object, default: float, where: str) -> float:
    if data is None:
        return default
    if not isinstance(data, int | float) or isinstance(data, bool) or data <= 0:
        raise ConfigError(f"{where}: expected a positive number of seconds, got {data!r}")
    return float(data)


def _days(data: object, default: float, where: str) -> float:
    if data is None:
        return default
    if not isinstance(data, int | float) or isinstance(data, bool) or data <= 0:
        raise ConfigError(f"{where}: expected a positive number of days, got {data!r}")
    return float(data)


def load_node_config(
    path: Path, *, pki_dir: Path | None = None, data_dir: Path | None = None
) -> NodeConfig:
    """Read node.toml; ``pki_dir`` and ``data_dir`` override the file's values."""
    data = read_toml(path)
    base = path.resolve().parent
    where = str(path)
    agency = data.get("agency")
    if not isinstance(agency, str) or not AGENCY_RE.match(agency):
        raise ConfigError(f"{where}: agency: malformed agency code {agency!r}")
    listen = data.get("listen")
    if not isinstance(listen, str) or ":" not in listen:
        raise ConfigError(f"{where}: listen: expected host:port, got {listen!r}")
    resolved_pki = pki_dir or base / str(data.get("pki_dir", "../../certs/out"))
    resolved_data = data_dir or base / str(data.get("data_dir", "data"))
    database_url = data.get("database_url") or f"sqlite:///{resolved_data / 'node.db'}"
    if not isinstance(database_url, str):
        raise ConfigError(f"{where}: database_url: expected a string")
    users = _users(data.get("users", []), f"{where}: users")
    return NodeConfig(
        path=path,
        agency=agency,
        listen=listen,
        data_dir=resolved_data,
        database_url=database_url,
        pki_dir=resolved_pki,
        users=users,
        peers=_peers(data.get("peers"), f"{where}: peers"),
        limits=_limits(data.get("limits"), f"{where}: limits"),
        metrics_listen=_metrics_listen(data.get("metrics_listen"), f"{where}: metrics_listen"),
        health_check_seconds=_seconds(data.get("health_check_seconds"), 1.0, f"{where}: health_check_seconds"),
        review=_review(data.get("review"), users, f"{where}: review"),
        notify=_notify(data.get("notify"), base, f"{where}: notify"),
        notify_check_seconds=_seconds(data.get("notify_check_seconds"), 2.0, f"{where}: notify_check_seconds"),
        notify_keep_delivered_days=_days(data.get("notify_keep_delivered_days"), 30.0,
                                         f"{where}: notify_keep_delivered_days"),
        taxii=_taxii(data.get("taxii"), agency, f"{where}: taxii"),
    )
