"""The node's server-side TLS, following the manifest it trusts now.

gRPC's dynamic server credentials ask ``fetch`` at every new handshake; it answers
with a new configuration only when something changed (else None: keep the current
one). What it serves: the node's key and certificate, and as client roots the CA of
every agency in the current manifest (a partner added by the manifest can connect
at once; one removed no longer completes a handshake). Connections already open are
not affected by a new configuration: every call on them still passes the
Authenticator, which reads the current manifest (exchange/node/auth.py).
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from exchange.core.manifest import Manifest
from exchange.core.trust import Trust
from exchange.errors import ConfigError


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def client_roots(manifest: Manifest) -> bytes:
    """Clients must present a certificate from one of the federation's CAs: the own CA
    for users, partner CAs for partner nodes."""
    return "".join(p.ca_cert_pem for p in manifest.partners.values()).encode("ascii")


class ServerTLS:
    """The node's key pair and the manifest's CAs, as gRPC server credentials."""

    def __init__(self, trust: Trust, agency_dir: Path) -> None:
        self._trust = trust
        self._agency_dir = agency_dir
        self._lock = threading.Lock()
        self.key, self.cert = self._key_pair()
        self._roots = client_roots(trust.manifest)

    def _key_pair(self) -> tuple[bytes, bytes]:
        """The node's private key and certificate, as on disk now.

        The one place they are read: picking up a renewed node.crt/node.key without a
        restart (``exchange pki renew``) means noticing a change here, in ``_changed``."""
        return read_file(self._agency_dir / "node.key"), read_file(self._agency_dir / "node.crt")

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self._roots)

    def _changed(self) -> bool:
        """Whether the configuration served so far is out of date; brings it up to date."""
        roots = client_roots(self._trust.manifest)
        if roots == self._roots:
            return False
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
