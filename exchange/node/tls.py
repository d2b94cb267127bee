"""The node's server-side TLS, following the manifest it trusts now.

gRPC's dynamic server credentials ask ``fetch`` at every new handshake; it answers
with a new configuration only when something changed (else None: keep the current
one). What it serves: the node's key and certificate (re-read when ``exchange pki
renew`` replaced them on disk, so a renewed certificate is served without a restart), and as client roots the CA of
every agency in the current manifest (a partner added by the manifest can connect
at once; one removed no longer completes a handshake). Connections already open are
not affected by a new configuration: every call on them still passes the
Authenticator, which reads the current manifest (exchange/node/auth.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exchange.core.manifest import Manifest
from exchange.core.trust import Trust
from exchange.errors import ConfigError

log = logging.getLogger("exchange.node")


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def client_roots(manifest: Manifest) -> bytes:
    """Clients must present a certificate from one of the federation's CAs: the own CA
    for users, partner CAs for partner nodes; an agency that left vouches for no one."""
    return "".join(p.ca_cert_pem for p in manifest.partners.values() if p.active).encode("ascii")


def _read_pair(agency_dir: Path) -> tuple[bytes, bytes]:
    """node.key and node.crt, only if the certificate certifies that key (else ValueError)."""
    key_pem, cert_pem = read_file(agency_dir / "node.key"), read_file(agency_dir / "node.crt")
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise ValueError("node.crt does not certify node.key")
    return key_pem, cert_pem


class ServerTLS:
    """The node's key pair and the manifest's CAs, as gRPC server credentials."""

    def __init__(self, trust: Trust, agency_dir: Path) -> None:
        self._trust = trust
        self._agency_dir = agency_dir
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int, int], ...] = ()
        # Told of a renewed pair (the node's puller presents it to partners from then on).
        self.on_renewal: Callable[[bytes, bytes], None] | None = None
        self.key, self.cert = self._key_pair()
        self._roots = client_roots(trust.manifest)

    def _key_pair(self) -> tuple[bytes, bytes]:
        """The node's private key and certificate, as on disk now."""
        self._stamp = self._files_stamp()
        return read_file(self._agency_dir / "node.key"), read_file(self._agency_dir / "node.crt")

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when node.key or node.crt is replaced (``exchange pki renew`` renames a
        new file over the old: another inode, another mtime)."""
        stamps = []
        for name in ("node.key", "node.crt"):
            try:
                st = (self._agency_dir / name).stat()
            except OSError:
                return self._stamp  # mid-replacement or gone: keep what is served
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _renewed(self) -> bool:
        """Whether node.key/node.crt changed on disk to a pair that matches; takes it if so.

        A certificate that does not certify the key beside it (a renewal with a new key caught
        between its two renames) or that cannot be read is not taken: the node goes on with
        the pair it has and looks again at the next handshake."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        try:
            key, cert = _read_pair(self._agency_dir)
        except (ConfigError, ValueError):
            return False
        self._stamp = stamp
        if (key, cert) == (self.key, self.cert):
            return False
        self.key, self.cert = key, cert
        log.info("picked up a renewed node certificate from %s", self._agency_dir / "node.crt")
        if self.on_renewal is not None:
            self.on_renewal(key, cert)
        return True

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self._roots)

    def _changed(self) -> bool:
        """Whether the configuration served so far is out of date; brings it up to date."""
        renewed = self._renewed()
        roots = client_roots(self._trust.manifest)
        if roots == self._roots:
            return renewed
        self._roots = roots
        return True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Asked by gRPC at each new handshake: None keeps the configuration in use."""
        with self._lock:
            return self._configuration() if self._changed() else None

    def credentials(self) -> grpc.ServerCredentials:
        with self._lock:
            initial = self._configuration()
        # The stubs type the fetcher as never returning None; gRPC documents None as "no change".
        return grpc.dynamic_ssl_server_credentials(initial, self.fetch,  # type: ignore[arg-type]
                                                   require_client_authentication=True)
