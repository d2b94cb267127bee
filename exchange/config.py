"""Reading a node's configuration (node.toml) and the federation manifest.

Relative paths in node.toml are resolved against the folder that holds it, so
a configuration can be moved with its data. Every problem is a ConfigError
naming the file and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.core.identity import AGENCY_RE, HANDLE_RE, Role
from exchange.core.manifest import Manifest, parse_manifest
from exchange.core.marking import classification_level
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
    pull_batch_entries: int = 500  # log entries per pull batch at most
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
    stream_max_seconds: int = 900  # a server stream (Pull, Watch, reflection) is cancelled after this
    stream_stall_seconds: int = 30  # a stream whose client has not taken the next message for this long
    digest_calls_per_minute: int = 120  # per partner, sustained
    digest_burst_calls: int = 600  # per partner, at once (a repair's bisection makes many)
    empty_cursor_pulls_per_hour: int = 60  # per partner, sustained: each reads the whole log
    empty_cursor_burst_pulls: int = 10  # per partner, at once

    def check(self) -> None:
        """Refuse bounds that would let partners take every thread (ConfigError)."""
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


@dataclass(frozen=True)
class PeerEntry:
    agency: str
    interval_seconds: float = 30.0


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
            if peer.agency not in manifest.partners:
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
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where}.{name}: expected a positive integer, got {value!r}")
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
            raise ConfigError(f"{at}.role: expected analyst or liaison, got {entry.get('role')!r}") from None
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
        if not isinstance(agency, str) or not AGENCY_RE.match(agency):
            raise ConfigError(f"{at}.agency: malformed agency code {agency!r}")
        interval = entry.get("interval_seconds", 30.0)
        if not isinstance(interval, int | float) or interval <= 0:
            raise ConfigError(f"{at}.interval_seconds: expected a positive number")
        peers.append(PeerEntry(agency, float(interval)))
    return tuple(peers)


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


def _seconds(data: object, default: float, where: str) -> float:
    if data is None:
        return default
    if not isinstance(data, int | float) or isinstance(data, bool) or data <= 0:
        raise ConfigError(f"{where}: expected a positive number of seconds, got {data!r}")
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
    return NodeConfig(
        path=path,
        agency=agency,
        listen=listen,
        data_dir=resolved_data,
        database_url=database_url,
        pki_dir=resolved_pki,
        users=_users(data.get("users", []), f"{where}: users"),
        peers=_peers(data.get("peers"), f"{where}: peers"),
        limits=_limits(data.get("limits"), f"{where}: limits"),
        metrics_listen=_metrics_listen(data.get("metrics_listen"), f"{where}: metrics_listen"),
        health_check_seconds=_seconds(data.get("health_check_seconds"), 1.0, f"{where}: health_check_seconds"),
    )
