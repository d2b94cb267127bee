"""The federation PKI: one CA per agency, node and user certificates, signing keys.

``exchange pki init`` calls :func:`init_federation`. TLS keys are ECDSA P-256
(fast handshakes); record-signing keys are Ed25519 and never used for TLS.
Every private key is written with mode 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exchange.core.identity import Identity
from exchange.core.manifest import Manifest, node_dns_name
from exchange.errors import ConfigError

CA_LIFETIME = dt.timedelta(days=3650)
CERT_LIFETIME = dt.timedelta(days=397)
SIGNING_KEY_LIFETIME = dt.timedelta(days=730)
MANIFEST_LIFETIME = dt.timedelta(days=365)  # a manifest must be renewed (a new version) within this
ROOTS_DIR = "roots"  # <out>/roots/<AGENCY>/root.key: manifest signing keys, never read by a node


@dataclass(frozen=True)
class Issued:
    """A private key with its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


def private_key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(agency: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(agency: str, *, now: dt.datetime, lifetime: dt.timedelta = CA_LIFETIME) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(agency, f"{agency} Exchange CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(
    ca: Issued,
    identity: Identity,
    *,
    now: dt.datetime,
    lifetime: dt.timedelta = CERT_LIFETIME,
    not_before: dt.datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    """Issue a TLS certificate naming ``identity`` in exactly one SAN URI.

    A node certificate also carries the node's DNS name (checked by TLS clients
    as the server name) and may act as server and client; a user certificate
    is client-only. ``key``: certify this key (a renewal) instead of a new one.
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = not_before if not_before is not None else now - dt.timedelta(minutes=5)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.is_node:
        names.append(x509.DNSName(node_dns_name(identity.agency)))
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    common_name = f"{identity.agency} node" if identity.is_node else f"{identity.handle}"
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(identity.agency, common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def new_signing_key(agency: str, now: dt.datetime) -> tuple[str, Ed25519PrivateKey]:
    """A fresh Ed25519 record-signing key and its id ``<AGENCY>/<date>-<random>``."""
    key_id = f"{agency}/{now:%Y%m%d}-{secrets.token_hex(4)}"
    return key_id, Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def write_private(path: Path, data: bytes) -> None:
    """Write key material readable by the owner only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey | Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | Ed25519PrivateKey):
        raise ConfigError(f"{path}: unsupported key type")
    return key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


# --- `exchange pki init` --------------------------------------------------------------------


@dataclass(frozen=True)
class UserSpec:
    agency: str
    handle: str


def read_template(nodes_dir: Path) -> tuple[dict[str, object], list[UserSpec]]:
    """The manifest template and every node's users, from ``nodes/``."""
    import tomllib

    template_path = nodes_dir / "federation.toml"
    template = _read_toml(template_path, "manifest template ")
    from exchange.core.manifest import parse_manifest

    users: list[UserSpec] = []
    partners = template.get("partners")
    for entry in partners if isinstance(partners, list) else []:
        code = entry.get("code") if isinstance(entry, dict) else None
        node_toml = nodes_dir / str(code) / "node.toml"
        if not isinstance(code, str) or not node_toml.exists():
            continue  # parse_manifest below names what is wrong with the entry
        try:
            node = tomllib.loads(node_toml.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{node_toml}: {exc}") from None
        # One place for a node's address: its node.toml's `listen`, unless the template
        # names another (a node behind NAT or a load balancer is dialled elsewhere).
        if "address" not in entry and isinstance(node.get("listen"), str):
            entry["address"] = node["listen"]
        for user in node.get("users", []):
            users.append(UserSpec(code, str(user.get("handle", ""))))
    try:
        parse_manifest(template, require_keys=False)  # validates codes, accreditations, addresses
    except ConfigError as exc:  # the message names the field; the file is named here
        raise ConfigError(f"{template_path}: {exc}") from None
    return template, users


def existing_pki(out_dir: Path) -> Path | None:
    """The first file of a PKI already in ``out_dir`` (its manifest or an agency's key), if any."""
    manifest = out_dir / "manifest.toml"
    if manifest.exists():
        return manifest
    found = (sorted(out_dir.glob("*/ca.key")) + sorted(out_dir.glob("*/signing.key"))
             + sorted(out_dir.glob(f"{ROOTS_DIR}/*/root.key"))) if out_dir.is_dir() else []
    return found[0] if found else None


def init_federation(
    nodes_dir: Path, out_dir: Path, *, now: dt.datetime | None = None, force: bool = False
) -> Path:
    """Make every agency's CA, node certificate, signing key and user certificates.

    Returns the path of the complete manifest written into ``out_dir``. Refuses (ConfigError,
    nothing written) when ``out_dir`` already holds a PKI, unless ``force``: replacing it would
    replace every CA and signing key, and every record already signed would stop verifying.
    """

    from exchange.core.identity import parse_identity_uri

    now = now or dt.datetime.now(dt.UTC)
    template, users = read_template(nodes_dir)
    existing = existing_pki(out_dir)
    if existing is not None and not force:
        raise ConfigError(
            f"{out_dir} already holds a PKI ({existing}): making a new one would replace every CA and "
            "signing key, and records already signed would stop verifying; pass --force to replace it"
        )
    partners = template["partners"]
    if not isinstance(partners, list):  # parse_manifest checked it; the type is for mypy
        raise ConfigError(f"{nodes_dir / 'federation.toml'}: partners must be an array of tables")
    out_dir.mkdir(parents=True, exist_ok=True)
    complete: list[dict[str, object]] = []
    root_keys: dict[str, Ed25519PrivateKey] = {}
    for entry in partners:
        code = entry["code"]
        agency_dir = out_dir / code
        root_keys[code] = Ed25519PrivateKey.generate()  # signs manifests only (root_key_path)
        write_private(root_key_path(out_dir, code), private_key_pem(root_keys[code]))
        ca = make_ca(code, now=now)
        write_public(agency_dir / "ca.crt", ca.cert_pem)
        write_private(agency_dir / "ca.key", ca.key_pem)
        node = issue(ca, Identity(code, None), now=now)
        write_public(agency_dir / "node.crt", node.cert_pem)
        write_private(agency_dir / "node.key", node.key_pem)
        key_id, signing_key = new_signing_key(code, now)
        write_private(agency_dir / "signing.key", private_key_pem(signing_key))
        # Seals the node's database rows and audit chain (exchange/store/integrity.py).
        write_private(agency_dir / "integrity.key", secrets.token_bytes(32))
        for user in (u for u in users if u.agency == code):
            identity = parse_identity_uri(f"urn:exchange:{code}:user:{user.handle}")
            issued = issue(ca, identity, now=now)
            write_public(agency_dir / "users" / f"{user.handle}.crt", issued.cert_pem)
            write_private(agency_dir / "users" / f"{user.handle}.key", issued.key_pem)
            profile = agency_dir / "users" / f"{user.handle}.profile.toml"
            write_profile(profile, code, str(entry["address"]), user.handle)
        complete.append(
            {
                **entry,
                "ca_cert": ca.cert_pem.decode("ascii"),
                "keys": [
                    {
                        "key_id": key_id,
                        "public_key": public_key_b64(signing_key),
                        "not_before": now.isoformat(timespec="seconds"),
                        "not_after": (now + SIGNING_KEY_LIFETIME).isoformat(timespec="seconds"),
                    }
                ],
            }
        )
    manifest_path = out_dir / "manifest.toml"
    write_public(manifest_path, first_manifest(template, complete, root_keys, now))
    return manifest_path


def root_key_path(out_dir: Path, agency: str) -> Path:
    """Where ``pki init`` leaves an agency's root key: outside every folder a node reads
    (``<out>/<AGENCY>/``), to be moved offline to where ``exchange manifest sign`` runs."""
    return out_dir / ROOTS_DIR / agency / "root.key"


def first_manifest(
    template: dict[str, object], partners: list[dict[str, object]], root_keys: dict[str, Ed25519PrivateKey],
    now: dt.datetime,
) -> bytes:
    """The federation's first manifest document, signed by every agency's root key.

    ``threshold`` (root signatures of distinct agencies every later version needs) is the
    template's, else a majority of the agencies; ``expires`` the template's, else a year."""
    from exchange.records.manifests import from_tables, sign

    body: dict[str, object] = {
        **{k: v for k, v in template.items() if k != "signatures"},
        "partners": partners,
        "roots": [{"agency": code, "public_key": public_key_b64(key)} for code, key in root_keys.items()],
    }
    body.setdefault("threshold", len(root_keys) // 2 + 1)
    body.setdefault("expires", (now + MANIFEST_LIFETIME).isoformat(timespec="seconds"))
    document = from_tables(body)
    for key in root_keys.values():
        document = sign(document, key)
    return document.render()


def write_profile(path: Path, agency: str, address: str, handle: str) -> None:
    """A CLI profile for one user; paths are relative to the profile file."""
    import tomli_w

    profile = {
        "node": address,
        "agency": agency,
        "cert": f"{handle}.crt",
        "key": f"{handle}.key",
        "ca": "../ca.crt",
    }
    write_public(path, tomli_w.dumps(profile).encode("utf-8"))


# --- `exchange pki addresses` ---------------------------------------------------------------


def update_addresses(nodes_dir: Path, out_dir: Path) -> list[tuple[str, str, str]]:
    """Bring the addresses in ``out_dir``'s manifest and user profiles in line with ``nodes/``.

    A node's address lives in one place, the ``listen`` of its node.toml (or the template's
    ``address``); this rewrites what ``pki init`` derived from it, keys and certificates
    untouched. Returns (agency, old, new) for every address that changed.
    """

    import tomli_w

    template, _users = read_template(nodes_dir)
    wanted = {str(p["code"]): str(p["address"]) for p in template["partners"]}  # type: ignore[attr-defined]
    manifest_path = out_dir / "manifest.toml"
    manifest = _read_toml(manifest_path, hint=" (run `exchange pki init` first)")
    changed: list[tuple[str, str, str]] = []
    for partner in manifest.get("partners", []):
        new = wanted.get(str(partner.get("code")))
        if new is not None and partner.get("address") != new:
            changed.append((str(partner["code"]), str(partner.get("address")), new))
            partner["address"] = new
    if changed:
        write_public(manifest_path, _next_version_signed(out_dir, manifest))
    for code, address in wanted.items():
        for profile_path in sorted((out_dir / code / "users").glob("*.profile.toml")):
            profile = _read_toml(profile_path, "profile ")
            if profile.get("node") != address:
                profile["node"] = address
                write_public(profile_path, tomli_w.dumps(profile).encode("utf-8"))
    return changed


def _next_version_signed(out_dir: Path, tables: dict[str, Any]) -> bytes:
    """``tables`` as the next manifest version, signed by every root key under ``<out>/roots``.

    Nodes adopt a changed manifest only as a new version signed by their agencies' root
    keys; where those keys are kept offline (as they should be), the result is a proposal
    that still needs their ``exchange manifest sign``."""
    from exchange.records.manifests import from_tables, sign

    body = {k: v for k, v in tables.items() if k != "signatures"}
    if isinstance(body.get("version"), int):
        body["version"] += 1
    document = from_tables(body)
    for path in sorted((out_dir / ROOTS_DIR).glob("*/root.key")):
        key = load_private_key(path)
        if isinstance(key, Ed25519PrivateKey):
            document = sign(document, key)
    return document.render()


def _read_toml(path: Path, what: str = "", hint: str = "") -> dict[str, Any]:
    """A TOML file as a table, or one ConfigError line naming the file."""
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what}{path}: {exc.strerror}{hint}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --- `exchange keys rotate` -----------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    key_id: str  # the new key's id, as the proposal publishes it
    retired: str  # the id of the key it replaces (kept in retired-signing-keys/)
    proposal: Path  # the manifest proposal that publishes the new key


def rotate_signing_key(
    agency: str, agency_dir: Path, manifest_path: Path, proposal: Path, *, now: dt.datetime | None = None
) -> Rotation:
    """Make a new signing key for ``agency`` and the next manifest version publishing it.

    The key it replaces moves to ``retired-signing-keys/`` (it still verifies what it signed,
    and the node keeps signing with it until a manifest publishing the new key is adopted:
    exchange/records/keyring.py); the new one becomes ``signing.key``. The proposal is the
    manifest at ``manifest_path`` with its version raised by one and the new key added to
    the agency's keys; the old key stays published (retired, not compromised), and the
    previous version's signatures are left out (they signed other bytes).
    """
    import tomli_w

    from exchange.records.keyring import CURRENT_KEY, RETIRED_KEYS, raw_public_key

    now = now or dt.datetime.now(dt.UTC)
    document = _read_toml(manifest_path, "manifest ")
    entry = next((p for p in document.get("partners", []) if isinstance(p, dict) and p.get("code") == agency), None)
    if entry is None:
        raise ConfigError(f"{manifest_path}: {agency} is not in the manifest")
    current = load_private_key(agency_dir / CURRENT_KEY)
    if not isinstance(current, Ed25519PrivateKey):
        raise ConfigError(f"{agency_dir / CURRENT_KEY}: a record-signing key must be Ed25519")
    public = base64.b64encode(raw_public_key(current)).decode("ascii")
    keys = entry.setdefault("keys", [])
    retired = next((k.get("key_id") for k in keys if isinstance(k, dict) and k.get("public_key") == public), None)
    if not isinstance(retired, str):
        raise ConfigError(f"{agency_dir / CURRENT_KEY} is not among {agency}'s signing keys in {manifest_path}: "
                          "a rotation starts from the published key")
    key_id, new_key = new_signing_key(agency, now)
    keys.append({
        "key_id": key_id,
        "public_key": public_key_b64(new_key),
        # A second after the key it replaces can have begun, so the new key is the newest.
        "not_before": now.isoformat(timespec="seconds"),
        "not_after": (now + SIGNING_KEY_LIFETIME).isoformat(timespec="seconds"),
    })
    version = document.get("version")
    if not isinstance(version, int):
        raise ConfigError(f"{manifest_path}: version: expected int, got {version!r}")
    document["version"] = version + 1
    # A proposal is unsigned: the version it came from was signed over other bytes. Root key
    # holders sign it (exchange/records/manifests.py) before any node trusts it.
    document.pop("signatures", None)
    # The old key is kept first (under its id, never overwritten), then the new one replaces it:
    # at every moment the folder holds both, or the old one as signing.key.
    write_private(agency_dir / RETIRED_KEYS / f"{retired.replace('/', '_')}.key", private_key_pem(current))
    staged = agency_dir / (CURRENT_KEY + ".new")
    write_private(staged, private_key_pem(new_key))
    os.replace(staged, agency_dir / CURRENT_KEY)
    write_public(proposal, tomli_w.dumps(document).encode("utf-8"))
    return Rotation(key_id=key_id, retired=retired, proposal=proposal)


# --- `exchange pki renew` -------------------------------------------------------------------


@dataclass(frozen=True)
class Renewal:
    cert: Path
    serial: int
    not_after: dt.datetime
    new_key: bool


def renew_certificate(
    agency: str, agency_dir: Path, *, handle: str | None = None, new_key: bool = False,
    now: dt.datetime | None = None, lifetime: dt.timedelta = CERT_LIFETIME,
) -> Renewal:
    """Issue the node's certificate (``handle`` None) or a user's again, from the agency's CA.

    By default the certificate is renewed for the key it certifies: only the certificate
    file changes, in one atomic rename, so a running node that re-reads it (exchange/node/
    credentials.py) never sees a certificate and a key that do not match, and a user's
    profile keeps working. ``new_key`` makes a new key too (after a leak: revoke the old
    certificate's serial in the manifest as well); the key is written first, and the node
    uses a pair only once the two match.
    """
    from exchange.core.identity import parse_identity_uri

    now = now or dt.datetime.now(dt.UTC)
    if handle is None:
        identity = Identity(agency, None)
        cert_path, key_path = agency_dir / "node.crt", agency_dir / "node.key"
    else:
        identity = parse_identity_uri(f"urn:exchange:{agency}:user:{handle}")
        cert_path, key_path = agency_dir / "users" / f"{handle}.crt", agency_dir / "users" / f"{handle}.key"
        if not cert_path.exists():
            raise ConfigError(f"no certificate for user {handle} of {agency} at {cert_path}")
    ca_key = load_private_key(agency_dir / "ca.key")
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{agency_dir / 'ca.key'}: not the agency's CA key")
    ca = Issued(ca_key, load_cert(agency_dir / "ca.crt"))
    if new_key:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        old = load_private_key(key_path)
        if not isinstance(old, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path}: not a TLS key")
        key = old
    issued = issue(ca, identity, now=now, lifetime=lifetime, key=key)
    if new_key:
        _replace(key_path, issued.key_pem, private=True)
    _replace(cert_path, issued.cert_pem, private=False)
    return Renewal(cert=cert_path, serial=issued.cert.serial_number, not_after=issued.cert.not_valid_after_utc,
                   new_key=new_key)


def _replace(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``data`` beside ``path`` and rename it over: a reader sees the old file or the new."""
    staged = path.with_name(path.name + ".new")
    if private:
        write_private(staged, data)
    else:
        write_public(staged, data)
    os.replace(staged, path)


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the DER certificate (what a manifest's revocation entry may name)."""
    return cert.fingerprint(hashes.SHA256())


# --- what expires when (`exchange status`, metrics, health) ---------------------------------


@dataclass(frozen=True)
class Expiry:
    kind: str  # "node_certificate", "ca_certificate", "user_certificate", "manifest"
    name: str  # the agency, the user's handle, or the manifest's version
    not_after: dt.datetime | None  # None: never expires, or unreadable (then ``problem`` says why)
    problem: str = ""

    @property
    def label(self) -> str:
        """How people read it: "node certificate JPN-NPA", "user certificate suzuki"."""
        return f"{self.kind.replace('_', ' ').replace('ca ', 'CA ')} {self.name}"

    def days(self, now: dt.datetime) -> float | None:
        return None if self.not_after is None else (self.not_after - now).total_seconds() / 86400


def expiries(agency: str, agency_dir: Path, handles: list[str], manifest: Manifest | None) -> list[Expiry]:
    """When the node's certificate, its agency's CA, each user's certificate (the users of the
    node's configuration) and the manifest the node trusts expire."""
    items = [("node_certificate", agency, agency_dir / "node.crt"), ("ca_certificate", agency, agency_dir / "ca.crt")]
    items += [("user_certificate", h, agency_dir / "users" / f"{h}.crt") for h in sorted(handles)]
    found = []
    for kind, name, path in items:
        try:
            found.append(Expiry(kind, name, load_cert(path).not_valid_after_utc))
        except ConfigError as error:
            found.append(Expiry(kind, name, None, str(error)))
    if manifest is not None:
        found.append(Expiry("manifest", f"version {manifest.version}", manifest.expires))
    return found
