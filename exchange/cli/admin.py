"""Administrator and operator commands: ``pki init``/``pki addresses``, ``db upgrade``/``db status``,
``node serve``, ``health``, ``audit verify``, ``demo``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.cli.nodeconf import config_overrides, existing_store, node_config
from exchange.cli.options import Commands
from exchange.errors import ConfigError

if TYPE_CHECKING:
    from exchange.config import NodeConfig
    from exchange.core.manifest import Manifest

__all__ = ["register"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def register(commands: Commands) -> None:
    pki = commands.add_parser("pki", help="make the federation's certificates and keys")
    pki_commands = pki.add_subparsers(dest="pki_command", metavar="COMMAND", required=True)
    init = pki_commands.add_parser("init", help="make every agency's CA, node and user certificates")
    init.add_argument("--out", metavar="DIR", required=True, help="where to write the PKI")
    init.add_argument("--nodes", metavar="DIR", default="nodes",
                      help="folder with federation.toml and <AGENCY>/node.toml (default: nodes)")
    init.add_argument("--force", action="store_true",
                      help="replace a PKI already in --out (every CA and signing key: records signed "
                           "with the old keys stop verifying)")
    init.set_defaults(handler=run_pki_init)
    addresses = pki_commands.add_parser(
        "addresses", help="rewrite the manifest's and profiles' node addresses from each node.toml's listen")
    addresses.add_argument("--out", metavar="DIR", required=True, help="the PKI made by `pki init`")
    addresses.add_argument("--nodes", metavar="DIR", default="nodes",
                           help="folder with federation.toml and <AGENCY>/node.toml (default: nodes)")
    addresses.set_defaults(handler=run_pki_addresses)

    renew = pki_commands.add_parser(
        "renew", help="issue the node's certificate, or a user's, again from the agency's CA (same key by default)")
    renew.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    renew.add_argument("--user", metavar="HANDLE", help="renew this user's certificate (default: the node's)")
    renew.add_argument("--new-key", action="store_true",
                       help="make a new key too (after a leak; revoke the old certificate in the manifest)")
    config_overrides(renew)
    renew.set_defaults(handler=run_pki_renew)

    key = pki_commands.add_parser("integrity-key",
                                  help="make the node's integrity key (seals its database; never replaced)")
    key.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    config_overrides(key)
    key.set_defaults(handler=run_pki_integrity_key)

    node = commands.add_parser("node", help="run an agency's node")
    node_commands = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    serve = node_commands.add_parser("serve", help="serve until SIGTERM or SIGINT")
    serve.add_argument("config", metavar="CONFIG", help="the node's node.toml")
    config_overrides(serve)
    serve.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                       help="the least severe log lines written (default: INFO)")
    serve.set_defaults(handler=run_node_serve)

    health = commands.add_parser("health", help="ask a node for its health (as its operator, with its own certificate)")
    health.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    health.add_argument("--service", default="", help="one service, e.g. exchange.v1.Query (default: the node)")
    health.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="default: 5")
    config_overrides(health)
    health.set_defaults(handler=run_health)

    status = commands.add_parser(
        "status", help="the node's manifest version, signing key, and when its certificates and manifest expire")
    status.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    config_overrides(status)
    status.set_defaults(handler=run_status)

    db = commands.add_parser("db", help="the node's database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create the schema, or migrate it to this version's")
    upgrade.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    config_overrides(upgrade)
    upgrade.set_defaults(handler=run_db_upgrade)
    status = db_commands.add_parser("status", help="the schema revision of the database and of this software")
    status.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    config_overrides(status)
    status.set_defaults(handler=run_db_status)

    audit = commands.add_parser("audit", help="the node's audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = audit_commands.add_parser("verify", help="check the audit log's chain and every record's seal")
    verify.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    config_overrides(verify)
    verify.set_defaults(handler=run_audit_verify)

    demo = commands.add_parser("demo", help="run the four-agency federation's story on this machine")
    demo.add_argument("--nodes", metavar="DIR", help="folder with federation.toml (default: nodes)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's working folder")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the federation up after the story, until Ctrl-C or SIGTERM")
    demo.add_argument("--postgres", metavar="URL",
                      help="keep each node's database in PostgreSQL (a schema each, dropped at the end), "
                           "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test; default: SQLite files")
    demo.set_defaults(handler=run_demo)


def run_pki_init(args: argparse.Namespace) -> int:
    from exchange.pki import ROOTS_DIR, init_federation

    out = Path(args.out)
    manifest = init_federation(Path(args.nodes), out, force=args.force)
    print(f"wrote the federation manifest {manifest}, signed by every agency's root key")
    print(f"root keys (they sign manifests; keep them offline, never on a node): {out / ROOTS_DIR}")
    for agency_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name != ROOTS_DIR):
        print(f"{agency_dir.name}: CA, node certificate and signing key in {agency_dir}")
        for profile in sorted((agency_dir / "users").glob("*.profile.toml")):
            print(f"  profile {profile}")
    print("use a profile with --profile FILE or EXCHANGE_PROFILE=FILE")
    return 0


def run_pki_addresses(args: argparse.Namespace) -> int:
    from exchange.pki import update_addresses

    changed = update_addresses(Path(args.nodes), Path(args.out))
    for agency, old, new in changed:
        print(f"{agency}: {old} -> {new}")
    if changed:
        print("restart every node, so that they dial the new addresses")
    else:
        print("addresses already current")
    return 0


def run_pki_renew(args: argparse.Namespace) -> int:
    from exchange.pki import renew_certificate

    config = node_config(args)
    if args.user is not None and args.user not in config.users:
        raise ConfigError(f"{args.user} is not a user of {config.agency} in {config.path}")
    renewal = renew_certificate(config.agency, config.agency_dir, handle=args.user, new_key=args.new_key)
    whose = f"user {args.user}'s" if args.user else "the node's"
    print(f"renewed {whose} certificate {renewal.cert}: serial {renewal.serial:x}, valid until "
          f"{renewal.not_after:%Y-%m-%d %H:%M} UTC" + (", with a new key" if renewal.new_key else ", same key"))
    if args.user is None:
        print("a running node serves it from its next connection on (no restart)")
    return 0


def run_pki_integrity_key(args: argparse.Namespace) -> int:
    from exchange.store import integrity

    config = node_config(args)
    path = integrity.key_path(config.pki_dir, config.agency)
    integrity.make_key(path)
    print(f"wrote {config.agency}'s integrity key {path} (mode 0600); back it up with the node's private keys")
    return 0


def run_node_serve(args: argparse.Namespace) -> int:
    config = node_config(args)
    from exchange.node.grpclog import route_grpc_logs

    routing = route_grpc_logs()  # before gRPC is imported: its own lines become JSON lines too
    try:
        # Imported here: serving pulls in the whole node, which other commands never need.
        from exchange.node.server import run_node

        run_node(config, level=args.log_level, stream=routing.stream)
    finally:
        routing.stop()
    return 0


def _dial(listen: str) -> str:
    """The address to reach a node that listens on ``listen`` from its own host."""
    host, _, port = listen.rpartition(":")
    wildcard = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}  # bound everywhere: use loopback
    return f"{wildcard.get(host, host)}:{port}"


def run_health(args: argparse.Namespace) -> int:
    """SERVING (exit 0) or NOT_SERVING (exit 1), from the node's grpc.health.v1 service, over
    mutual TLS with the node's own certificate (only its operator holds that key)."""
    # Before gRPC's first import: its C core would log a refused connection itself, and the
    # error below already says it in one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from exchange.client import Profile, call, connect

    config = node_config(args)
    address = _dial(config.listen)
    own = config.agency_dir
    profile = Profile(node=address, agency=config.agency, cert=own / "node.crt", key=own / "node.key",
                      ca=own / "ca.crt")
    with connect(profile) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = call(stub.Check, health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout,
                     address=address)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    _expiry_warnings(config)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _expiry_warnings(config: NodeConfig) -> None:
    """The node's certificates and manifest close to expiry, one ``warning:`` line each."""
    import datetime as dt

    from exchange.node.health import expiry_warnings
    from exchange.pki import expiries

    try:
        manifest = config.load_manifest()
    except ConfigError:
        manifest = None  # the node checked its manifest at start; the certificates still count
    for line in expiry_warnings(expiries(config.agency, config.agency_dir, list(config.users), manifest),
                                dt.datetime.now(dt.UTC)):
        print(f"warning: {line}")


def run_status(args: argparse.Namespace) -> int:
    """What expires when: the node's certificate, its CA, its users' certificates, the manifest."""
    import datetime as dt

    from exchange.node.health import EXPIRY_WARNING_DAYS
    from exchange.pki import expiries

    config = node_config(args)
    manifest = _trusted_or_file(args, config)
    now = dt.datetime.now(dt.UTC)
    items = expiries(config.agency, config.agency_dir, list(config.users), manifest)
    print(f"{config.agency}: manifest version {manifest.version}, signing key {_signing_key(config, manifest)}")
    width = max(len(item.label) for item in items)
    soon = 0
    for item in items:
        days = item.days(now)
        if item.problem:
            when, soon = item.problem, soon + 1
        elif days is None or item.not_after is None:
            when = "does not expire"
        else:
            warn = days < EXPIRY_WARNING_DAYS
            soon += warn
            left = f"expired {-int(days)} days ago" if days < 0 else f"{int(days)} days left"
            when = f"{item.not_after:%Y-%m-%d} ({left}){'  WARNING' if warn else ''}"
        print(f"  {item.label:<{width}}  {when}")
    return 1 if soon else 0


def _trusted_or_file(args: argparse.Namespace, config: NodeConfig) -> Manifest:
    """The manifest the node trusts (kept in its store), or its manifest file if there is no store yet."""
    from exchange.cli.keys import trusted_manifest

    try:
        with existing_store(args) as store:
            return trusted_manifest(config, store)
    except ConfigError:  # no database yet (or not at this schema): what the node would start from
        return config.load_manifest()


def _signing_key(config: NodeConfig, manifest: Manifest) -> str:
    from exchange.records.keyring import KeyRing

    try:
        return KeyRing.load(config.agency, config.agency_dir, lambda: manifest).key_id
    except ConfigError as error:
        return f"none usable ({error})"


def run_db_upgrade(args: argparse.Namespace) -> int:
    from exchange.store import integrity, migrate

    config = node_config(args)
    # Rows written before revision 0003, and log entries before 0017, need the key (to be sealed);
    # migrate says so if it is missing.
    has_key = integrity.key_path(config.pki_dir, config.agency).exists()
    seal = integrity.for_node(config.pki_dir, config.agency, config.database_url) if has_key else None
    before, after = migrate.upgrade_url(config.database_url, data_dir=config.data_dir, seal=seal)
    if before == after:
        print(f"schema already at revision {after}")
    else:
        print(f"schema upgraded from {before or 'nothing'} to revision {after}")
    return 0


def run_db_status(args: argparse.Namespace) -> int:
    from exchange.store import migrate

    config = node_config(args)
    migrate.refuse_missing_sqlite(config.database_url)  # asking must not make an empty file
    current = migrate.current_url(config.database_url)
    print(f"database: revision {current or 'none (run `exchange db upgrade`)'}; software: revision {migrate.head()}")
    return 0 if current == migrate.head() else 1


def run_audit_verify(args: argparse.Namespace) -> int:
    from exchange.store import audit as audit_log  # the store's dependencies only for commands that need it
    from exchange.store.current import seal_problems

    with existing_store(args) as store:
        problems = audit_log.verify_store(store)
        count = len(audit_log.read_entries(store))
        sealed = seal_problems(store)  # records, log entries and disclosure_index against their seals
    for problem in problems + sealed:
        print(problem)
    if problems:
        print(f"audit log damaged: {len(problems)} problem(s) in {count} entries")
    else:
        print(f"audit log intact: {count} entries")
    if sealed:
        print(f"records damaged: {len(sealed)} row(s) do not match their seals; they are not served")
    else:
        print("records intact: every seal matches")
    return 1 if problems or sealed else 0


def run_demo(args: argparse.Namespace) -> int:
    from exchange.demo import run_demo as demo

    return demo(args.nodes, args.keep, args.keep_running, args.postgres)
