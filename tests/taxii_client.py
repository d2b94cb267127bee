"""The OASIS TAXII 2.1 client (taxii2-client) as a user of a node: the user's certificate and
key, the agency's CA, and the node's certificate name (``<agency>.node.exchange``) checked
although the tests connect to 127.0.0.1 (as a hosts-file entry would let OpenCTI do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from requests.adapters import HTTPAdapter
from taxii2client.common import _HTTPConnection
from taxii2client.v21 import ApiRoot, Collection, Server

from exchange.core.manifest import node_dns_name
from exchange.node.taxii.server import API_ROOT


class NodeName(HTTPAdapter):
    """Checks the server's certificate (and sends SNI) for the node's name, not the address."""

    def __init__(self, name: str) -> None:
        self._name = name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._name
        kwargs["assert_hostname"] = self._name
        super().init_poolmanager(*args, **kwargs)


def connection(pki_dir: Path, node_agency: str, *, cert: tuple[Path, Path] | None,
               ca: Path | None = None) -> _HTTPConnection:
    """A taxii2-client connection presenting ``cert`` (certificate, key), or none."""
    conn = _HTTPConnection(verify=str(ca or pki_dir / node_agency / "ca.crt"), version="2.1",
                           cert=(str(cert[0]), str(cert[1])) if cert else None)
    # requests lets REQUESTS_CA_BUNDLE (and proxy variables) override the session's CA: not here.
    conn.session.trust_env = False
    conn.session.mount("https://", NodeName(node_dns_name(node_agency)))
    return conn


def user_connection(pki_dir: Path, agency: str, handle: str, node_agency: str | None = None) -> _HTTPConnection:
    base = pki_dir / agency / "users" / handle
    return connection(pki_dir, node_agency or agency, cert=(base.with_suffix(".crt"), base.with_suffix(".key")))


def server(port: int, conn: _HTTPConnection) -> Server:
    return Server(f"https://127.0.0.1:{port}/taxii2/", conn=conn)


def api_root(port: int, conn: _HTTPConnection) -> ApiRoot:
    """The API root on ``conn`` (a Server makes its API roots new connections of its own,
    which would not know the node's name)."""
    return ApiRoot(f"https://127.0.0.1:{port}/{API_ROOT}/", conn=conn)


def collection(port: int, collection_id: str, conn: _HTTPConnection) -> Collection:
    return Collection(f"https://127.0.0.1:{port}/{API_ROOT}/collections/{collection_id}/", conn=conn)
