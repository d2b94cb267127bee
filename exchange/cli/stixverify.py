"""``exchange verify FILE``: check a STIX 2.1 export's provenance offline.

Needs only the federation manifest (the originators' signing keys), no node: each
record's envelope must verify with its originator's key and every object of the record
must be what the signed record maps to (exchange.stix.bundle). One line per record;
exit 0 only if every line is ok.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exchange.cli.options import Commands
from exchange.config import load_manifest
from exchange.errors import InvalidInput
from exchange.render import clean
from exchange.stix.bundle import verify_bundle

__all__ = ["register"]


def register(commands: Commands) -> None:
    verify = commands.add_parser(
        "verify", help="check a STIX 2.1 export's signatures and objects offline against the manifest",
        description="Every record in the bundle: its originator's signature verifies with the key in the "
                    "manifest, and its STIX objects are exactly what the signed record maps to.",
    )
    verify.add_argument("file", metavar="FILE", help="a bundle written by `export --format stix21`")
    verify.add_argument("--manifest", metavar="FILE", required=True,
                        help="the federation manifest (manifest.toml) holding the agencies' signing keys")
    verify.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    manifest = load_manifest(Path(args.manifest))
    path = Path(args.file)
    try:
        bundle = json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidInput("FILE", f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("FILE", f"{path} is not JSON ({exc})") from None
    verdicts = verify_bundle(bundle, manifest)
    for verdict in verdicts:
        print(clean(verdict.line()))
    bad = sum(not v.ok for v in verdicts)
    print(f"{'verified' if not bad else 'FAILED'}: {len(verdicts) - bad} ok, {bad} failed")
    return 0 if not bad else 1
