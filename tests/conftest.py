from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import Backend, find_postgres, selected
from tests.federation import Federation, make_federation
from tests.hostile import Forge, HostilePartner


@pytest.fixture(scope="session")
def federation_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("federation")


@pytest.fixture(scope="session")
def pki(federation_root: Path) -> Federation:
    """One PKI for the whole session: making CAs and keys is the slow part."""
    return make_federation(federation_root)


_POSTGRES: dict[str, Any] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with a slow test first, then the rest by their number of tests, most first.

    `make test` runs pytest-xdist by module (`--dist loadscope --no-loadscope-reorder`), handing
    each worker the next module as it finishes one. A long module that starts last sets the end
    of the whole run while the other worker idles (the crash test, two minutes, used to start
    after eight); starting the long ones first lets the many short ones fill in around them.
    The sort is stable, so tests keep their order within a module.
    """
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow = {module(item) for item in items if item.get_closest_marker("slow") is not None}
    sizes: dict[str, int] = {}
    for item in items:
        sizes[module(item)] = sizes.get(module(item), 0) + 1
    items.sort(key=lambda item: (module(item) not in slow, -sizes[module(item)]))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Find (or start) PostgreSQL before any test runs, so a missing one is one line up front."""
    if "postgresql" in selected():
        url, cluster = find_postgres()
        backend = Backend("postgresql", url)
        backend.drop_schemas(stale=True)  # left by a session that was killed a day or more ago
        _POSTGRES.update(backend=backend, cluster=cluster)


def pytest_sessionfinish(session: pytest.Session) -> None:
    backend, cluster = _POSTGRES.get("backend"), _POSTGRES.get("cluster")
    if backend is not None:
        backend.drop_schemas()
    if cluster is not None:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres() -> Backend:
    """The session's PostgreSQL, found or started at session start."""
    backend: Backend = _POSTGRES["backend"]
    return backend


@pytest.fixture(params=selected())
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each storage test runs once per back end (EXCHANGE_TEST_BACKENDS)."""
    if request.param == "postgresql":
        found: Backend = request.getfixturevalue("postgres")
        return found
    return Backend("sqlite")


@pytest.fixture
def federation(pki: Federation, backend: Backend) -> Iterator[Federation]:
    """The session's PKI, with nodes on ``backend`` started by the test and stopped after it."""
    pki.backend = backend
    yield pki
    pki.stop()


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Each test leaves the next the logging it found.

    ``exchange node serve`` run in-process (through ``main``) points the root logger at the
    stderr of the moment, which pytest closes after the test, and installs a thread exception
    hook: without this, a later test's log line would go to a closed file, or to a handler
    that formats it for a test long finished.
    """
    root = logging.getLogger()
    handlers, level, excepthook = root.handlers[:], root.level, threading.excepthook
    yield
    def ours(handler: logging.Handler) -> bool:
        return not type(handler).__module__.startswith("_pytest")  # pytest's come and go with each phase

    for handler in root.handlers[:]:
        if handler not in handlers and ours(handler):
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers and ours(handler):  # removed by logs.configure
            root.addHandler(handler)
    root.setLevel(level)
    threading.excepthook = excepthook


@pytest.fixture(autouse=True)
def no_default_profile(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's default profile lives in the user's configuration folder (XDG_CONFIG_HOME):
    point it at an empty folder, so a profile on the machine running the tests changes nothing."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("EXCHANGE_PROFILE", raising=False)


# --- a hostile partner: "KOR-KNPA" with KOR-KNPA's own node certificate, on its address ----------
# (tests/hostile.py; used by the hostile-partner and bounds tests)


@pytest.fixture
def forge(federation: Federation) -> Forge:
    return Forge(federation, "KOR-KNPA")


@pytest.fixture
def hostile(federation: Federation) -> Iterator[HostilePartner]:
    partner = HostilePartner(federation, "KOR-KNPA").start()
    yield partner
    partner.stop()
