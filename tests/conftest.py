from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.federation import Federation, make_federation


@pytest.fixture(scope="session")
def federation_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("federation")


@pytest.fixture(scope="session")
def pki(federation_root: Path) -> Federation:
    """One PKI for the whole session: making CAs and keys is the slow part."""
    return make_federation(federation_root)


@pytest.fixture
def federation(pki: Federation) -> Iterator[Federation]:
    """The session's PKI, with nodes started by the test and stopped after it."""
    yield pki
    pki.stop()
