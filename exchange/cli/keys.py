"""Key and certificate upkeep on a node's host: ``keys rotate``, ``records resign``, ``pki renew``
and ``status`` (what expires when)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.cli.nodeconf import config_overrides, existing_store, node_config
from exchange.cli.options import Commands

if TYPE_CHECKING:
    from exchange.config import NodeConfig
    from exchange.core.manifest import Manifest
    from exchange.store import Store

__all__ = ["register", "trusted_manifest"]


def register(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="the node's record-signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    rotate = keys_commands.add_parser(
        "rotate", help="make a new signing key and the manifest proposal that publishes it")
    rotate.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    rotate.add_argument("--proposal", metavar="FILE",
                        help="where to write the proposed manifest (default: manifest.proposed.toml beside "
                             "the manifest)")
    config_overrides(rotate)
    rotate.set_defaults(handler=run_keys_rotate)

    records = commands.add_parser("records", help="the node's own records as stored")
    records_commands = records.add_subparsers(dest="records_command", metavar="COMMAND", required=True)
    resign = records_commands.add_parser(
        "resign", help="sign the agency's records again with its current key (after a rotation or a compromise)")
    resign.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    config_overrides(resign)
    resign.set_defaults(handler=run_records_resign)


def run_keys_rotate(args: argparse.Namespace) -> int:
    from exchange.pki import rotate_signing_key

    config = node_config(args)
    proposal = Path(args.proposal) if args.proposal else config.manifest_path.with_name("manifest.proposed.toml")
    rotation = rotate_signing_key(config.agency, config.agency_dir, config.manifest_path, proposal)
    print(f"new signing key {rotation.key_id} in {config.agency_dir / 'signing.key'}; "
          f"{rotation.retired} retired (kept, still verifies what it signed)")
    print(f"wrote the manifest proposal {proposal} publishing it; once the federation adopts it the node "
          f"signs with {rotation.key_id} (until then with {rotation.retired})")
    return 0


def trusted_manifest(config: NodeConfig, store: Store) -> Manifest:
    """The manifest the node trusts: the newest it adopted (kept in its store, verified when it
    was adopted and at every start), or, on a node that never started, its manifest file."""
    from exchange.records.manifests import parse_document
    from exchange.store.manifests import stored_manifests

    kept = stored_manifests(store)
    return parse_document(kept[-1].document).manifest if kept else config.load_manifest()


def run_records_resign(args: argparse.Namespace) -> int:
    from exchange.records.keyring import KeyRing
    from exchange.store.resign import resign_own

    config = node_config(args)
    with existing_store(args) as store:
        manifest = trusted_manifest(config, store)
        signer = KeyRing.load(config.agency, config.agency_dir, lambda: manifest).signer()
        count = resign_own(store, signer.seal, signer.key_id, manifest.supersedes)
    print(f"re-signed {count} entries of {config.agency} with {signer.key_id}; partners replace them at their "
          "next pull")
    return 0
