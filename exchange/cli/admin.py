"""Administrator and operator commands: ``pki init``, ``db upgrade``/``db status``, ``node serve``,
``audit verify``, ``demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from exchange.cli.nodeconf import config_overrides, existing_store, node_config
from exchange.cli.options import Commands

__all__ = ["register"]


def register(commands: Commands) -> None:
    pki = commands.add_parser("pki", help="make the federation's certificates and keys")
    pki_commands = pki.add_subparsers(dest="pki_command", metavar="COMMAND", required=True)
    init = pki_commands.add_parser("init", help="make every agency's CA, node and user certificates")
    init.add_argument("--out", metavar="DIR", required=True, help="where to write the PKI")
    init.add_argument("--nodes", metavar="DIR", default="nodes",
                      help="folder with federation.toml and <AGENCY>/node.toml (default: nodes)")
    init.set_defaults(handler=run_pki_init)
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
    serve.set_defaults(handler=run_node_serve)

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
    from exchange.pki import init_federation

    out = Path(args.out)
    manifest = init_federation(Path(args.nodes), out)
    print(f"wrote the federation manifest {manifest}")
    for agency_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        print(f"{agency_dir.name}: CA, node certificate and signing key in {agency_dir}")
        for profile in sorted((agency_dir / "users").glob("*.profile.toml")):
            print(f"  profile {profile}")
    print("use a profile with --profile FILE or EXCHANGE_PROFILE=FILE")
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
    # Imported here: serving pulls in the whole node, which other commands never need.
    from exchange.node.server import run_node

    run_node(config)
    return 0


def run_db_upgrade(args: argparse.Namespace) -> int:
    from exchange.store import integrity, migrate

    config = node_config(args)
    # Only rows written before revision 0003 need the key (to be sealed); migrate says so if missing.
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
    with existing_store(args) as store:
        problems = store.audit_verify()
        count = len(store.audit_entries())
        sealed = store.integrity_problems()  # records, log entries and disclosure_index against their seals
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
