"""What the administrator's commands share: reading node.toml and opening its store.

Used by ``node serve``, ``audit verify``, ``sync`` and ``events``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.config import NodeConfig, load_node_config

if TYPE_CHECKING:
    from exchange.store import Store


def config_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pki-dir", metavar="DIR", help="overrides the config's pki_dir")
    parser.add_argument("--data-dir", metavar="DIR", help="overrides the config's data_dir")


def node_config(args: argparse.Namespace) -> NodeConfig:
    return load_node_config(
        Path(args.config),
        pki_dir=Path(args.pki_dir) if args.pki_dir else None,
        data_dir=Path(args.data_dir) if args.data_dir else None,
    )


@contextmanager
def existing_store(args: argparse.Namespace) -> Iterator[Store]:
    """The store of the node ``args.config`` describes; never creates one (Store.open refuses)."""
    config = node_config(args)
    from exchange.store import Store, integrity  # the store's dependencies only for commands that need it

    seal = integrity.for_node(config.pki_dir, config.agency, config.database_url)
    store = Store.open(config.database_url, agency=config.agency, seal=seal)
    try:
        yield store
    finally:
        store.close()
