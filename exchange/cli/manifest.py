"""``exchange manifest propose | sign | status``: changing the federation's signed manifest.

A change is a new version: ``propose`` writes it (unsigned) from the manifest in force;
each agency's ``sign`` runs where its root key is (offline: never on a node); ``status``
says whose signatures it has and whether a node trusting the current version would adopt
it. Installing it is writing it over a node's ``manifest.toml``: the node adopts it within
seconds (it checks the signatures itself), and partners fetch it when they next pull.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.cli.nodeconf import config_overrides, existing_store
from exchange.cli.options import Commands
from exchange.errors import ConfigError

if TYPE_CHECKING:
    from exchange.records.manifests import SignedManifest

__all__ = ["register"]

EXIT_NOT_READY = 1


def register(commands: Commands) -> None:
    manifest = commands.add_parser("manifest", help="propose, sign and check versions of the federation manifest")
    sub = manifest.add_subparsers(dest="manifest_command", metavar="COMMAND", required=True)

    propose = sub.add_parser("propose", help="write the next manifest version, with changes, for signing")
    propose.add_argument("--manifest", metavar="FILE", required=True, help="the manifest in force")
    propose.add_argument("--out", metavar="FILE", required=True, help="where to write the proposal")
    propose.add_argument("--from", dest="draft", metavar="FILE",
                         help="start from this manifest's tables instead (an edited copy, or what "
                              "`exchange keys rotate` wrote); its version and signatures are ignored")
    propose.add_argument("--add-partner", metavar="FILE", action="append", default=[],
                         help="a joining agency's manifest (from its own `pki init`): its partner entry and root key")
    propose.add_argument("--remove-partner", metavar="AGENCY", action="append", default=[],
                         help="the agency leaves: marked removed now, its signing keys end now, its root key goes")
    propose.add_argument("--accreditation", metavar="AGENCY=LEVEL", action="append", default=[],
                         help="set an agency's accreditation (e.g. KOR-KNPA=CONFIDENTIAL)")
    propose.add_argument("--compromise", metavar="KEY_ID", action="append", default=[],
                         help="mark a signing key compromised from now: everything it signed is distrusted")
    propose.add_argument("--revoke", metavar="AGENCY=SERIAL", action="append", default=[],
                         help="revoke a certificate its agency issued, by serial number (hex)")
    propose.add_argument("--threshold", type=int, metavar="N", help="root signatures (agencies) later versions need")
    propose.add_argument("--expires-days", type=int, default=365, metavar="DAYS", help="default: 365")
    propose.set_defaults(handler=run_propose)

    sign = sub.add_parser("sign", help="add your agency's root signature to a proposal (where the root key is)")
    sign.add_argument("proposal", metavar="FILE")
    sign.add_argument("--key", metavar="FILE", required=True, help="the agency's root key (pki init: <out>/roots/)")
    sign.set_defaults(handler=run_sign)

    status = sub.add_parser("status", help="a node's trusted manifest, or whether a proposal is ready")
    status.add_argument("proposal", metavar="FILE", nargs="?", help="a proposal or manifest document")
    status.add_argument("--trusted", metavar="FILE", help="the manifest in force, that the proposal must follow")
    status.add_argument("--config", metavar="CONFIG", help="a node's node.toml: the manifest it trusts")
    config_overrides(status)
    status.set_defaults(handler=run_status)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _partner(body: dict[str, Any], code: str) -> dict[str, Any]:
    found = next((p for p in body.get("partners", []) if isinstance(p, dict) and p.get("code") == code), None)
    if found is None:
        raise ConfigError(f"{code} is not a partner of the manifest")
    return found


def run_propose(args: argparse.Namespace) -> int:
    from exchange.records.manifests import from_tables, parse_document

    current = parse_document(_read(args.manifest), what=args.manifest)
    tables = parse_document(_read(args.draft), what=args.draft).body if args.draft else current.body
    body: dict[str, Any] = copy.deepcopy(dict(tables))
    now = dt.datetime.now(dt.UTC)
    stamp = now.isoformat(timespec="seconds")
    changes: list[str] = []
    for path in args.add_partner:
        joining = parse_document(_read(path), what=path).body
        known = {p["code"] for p in body["partners"]}
        for entry in joining.get("partners", []):
            if entry["code"] in known:
                raise ConfigError(f"{path}: {entry['code']} is already a partner")
            body["partners"].append(dict(entry))
            body.setdefault("roots", []).extend(dict(r) for r in joining.get("roots", [])
                                                if r.get("agency") == entry["code"])
            changes.append(f"{entry['code']} joins")
    for code in args.remove_partner:
        entry = _partner(body, code)
        entry["removed_at"] = stamp
        for key in entry.get("keys", []):  # what it signs from now on is not its agency's
            if str(key.get("not_after", stamp)) > stamp:
                key["not_after"] = stamp
        body["roots"] = [r for r in body.get("roots", []) if r.get("agency") != code]
        changes.append(f"{code} leaves")
    for setting in args.accreditation:
        code, sep, level = setting.partition("=")
        if not sep:
            raise ConfigError(f"--accreditation {setting}: expected AGENCY=LEVEL")
        _partner(body, code)["accreditation"] = level
        changes.append(f"{code} accredited {level}")
    for key_id in args.compromise:
        key = next((k for p in body["partners"] for k in p.get("keys", []) if k.get("key_id") == key_id), None)
        if key is None:
            raise ConfigError(f"--compromise {key_id}: no signing key with that id in the manifest")
        key.setdefault("compromised_since", stamp)
        changes.append(f"key {key_id} compromised")
    for setting in args.revoke:
        code, sep, serial = setting.partition("=")
        if not sep or not serial:
            raise ConfigError(f"--revoke {setting}: expected AGENCY=SERIAL (hex)")
        _partner(body, code).setdefault("revoked", []).append({"serial": serial, "since": stamp})
        changes.append(f"{code} certificate {serial} revoked")
    if args.threshold is not None:
        body["threshold"] = args.threshold
        changes.append(f"threshold {args.threshold}")
    body["version"] = current.version + 1
    body["expires"] = (now + dt.timedelta(days=args.expires_days)).isoformat(timespec="seconds")
    proposal = from_tables(body, what=args.out)  # validates the result, as a node will
    Path(args.out).write_bytes(proposal.render())
    print(f"proposal: manifest version {proposal.version} (in force: {current.version})"
          f"{': ' + ', '.join(changes) if changes else ''}; expires {body['expires']}")
    print(f"needs root signatures of {current.manifest.threshold} agencies of version {current.version} "
          f"and {proposal.manifest.threshold} of version {proposal.version}: `exchange manifest sign {args.out} "
          "--key <root.key>` at each agency")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from exchange.pki import load_private_key
    from exchange.records.manifests import parse_document, sign

    proposal = parse_document(_read(args.proposal), what=args.proposal)
    key = load_private_key(Path(args.key))
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{args.key}: a root key is Ed25519")
    signed = sign(proposal, key)
    Path(args.proposal).write_bytes(signed.render())
    key_id = signed.signatures[-1].key_id
    root = signed.manifest.root_key(key_id)
    whose = f"{root.agency}'s root key" if root else "a key that is not a root key of this version"
    print(f"signed manifest version {signed.version} with {whose} {key_id}; {len(signed.signatures)} signatures")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from exchange.records.manifests import parse_document

    if args.config:
        return _node_status(args)
    if not args.proposal:
        raise ConfigError("give a manifest document (and --trusted FILE), or --config node.toml")
    proposal = parse_document(_read(args.proposal), what=args.proposal)
    trusted = parse_document(_read(args.trusted), what=args.trusted) if args.trusted else None
    return _proposal_status(proposal, trusted)


def _proposal_status(proposal: SignedManifest, trusted: SignedManifest | None) -> int:
    from exchange.errors import ManifestRefused
    from exchange.records.manifests import tally, verify_first, verify_next

    manifest = proposal.manifest
    print(f"manifest version {proposal.version}, expires {manifest.expires.isoformat() if manifest.expires else '-'}, "
          f"threshold {manifest.threshold}, partners {', '.join(sorted(manifest.partners))}")
    for whose in ([trusted] if trusted is not None else []) + [proposal]:
        counted = tally(proposal, whose.manifest)
        print(f"signed by {len(counted.agencies)} of {whose.manifest.threshold} agencies needed of version "
              f"{whose.version}: {', '.join(sorted(counted.agencies)) or 'none'}"
              + (f"; not verifying: {', '.join(counted.invalid)}" if counted.invalid else ""))
    try:
        if trusted is None:
            verify_first(proposal, dt.datetime.now(dt.UTC))
        else:
            verify_next(trusted, proposal, dt.datetime.now(dt.UTC))
    except ManifestRefused as error:
        print(f"not ready: {error}")
        return EXIT_NOT_READY
    print("ready: a node trusting version "
          f"{trusted.version if trusted is not None else proposal.version} adopts it")
    return 0


def _node_status(args: argparse.Namespace) -> int:
    from exchange.records.manifests import parse_document
    from exchange.store.manifests import stored_manifests

    with existing_store(args) as store:
        kept = stored_manifests(store)
    if not kept:
        print("the node trusts no signed manifest yet (it has not started since `db upgrade`)")
        return EXIT_NOT_READY
    newest = kept[-1]
    manifest = parse_document(newest.document).manifest
    left = (manifest.expires - dt.datetime.now(dt.UTC)).days if manifest.expires else None
    print(f"trusted manifest version {manifest.version} (from {newest.source}), expires "
          f"{manifest.expires.isoformat() if manifest.expires else '-'}"
          + (f" (in {left} days)" if left is not None else "")
          + f", threshold {manifest.threshold}")
    for code, partner in sorted(manifest.partners.items()):
        state = f"left {partner.removed_at.isoformat()}" if partner.removed_at else partner.accreditation
        print(f"  {code}: {state}, {partner.address}")
    print(f"versions kept: {', '.join(str(k.version) for k in kept)}")
    return 0
