"""The demo's federation: a throwaway PKI and one ``node serve`` process per agency.

``exchange demo`` (``exchange/demo/run.py``) tells the story; this module owns the
machinery under it: copying ``nodes/`` to a throwaway folder with free loopback
ports, making the PKI there, starting each node as its own process with the
peers of its node.toml, waiting until each answers, and stopping them all
(SIGTERM, then SIGKILL after a timeout) however the demo ends. With a PostgreSQL
URL, each node's database is a schema of its own in that database, dropped at the end.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from exchange.client import Client, load_profile
from exchange.config import NodeConfig, load_node_config
from exchange.core.identity import Role
from exchange.core.marking import classification_level
from exchange.errors import ConfigError, InternalError, TransportError
from exchange.pki import init_federation
from exchange.store import migrate
from exchange.store.pgschema import create_schema, drop_schemas
from exchange.v1 import query_pb2

__all__ = ["DemoNode", "Federation", "find_nodes_dir", "shielded_from_signals", "sigterm_interrupts"]

START_TIMEOUT = 30.0  # seconds for every node to answer its first query
STOP_TIMEOUT = 10.0  # seconds for the nodes to drain after SIGTERM before they are killed
POLL = 0.2  # seconds between checks while waiting
DEMO_PULL_SECONDS = 1  # every node pulls each peer this often in the demo, so the story is quick


def find_nodes_dir(given: str | None) -> Path:
    candidates = [Path(given)] if given else [Path("nodes"), Path(__file__).resolve().parent.parent / "nodes"]
    for candidate in candidates:
        if (candidate / "federation.toml").exists():
            return candidate
    raise ConfigError("cannot find nodes/federation.toml (run from the repository or pass --nodes DIR)")


def free_port(taken: set[int]) -> int:
    """A loopback port free now and not already handed out (recorded in ``taken``): the kernel
    can offer a port again once its socket is closed, and two nodes on one port fail to start.
    Another program could still take it before the node binds it; on a developer's machine
    that race is rare enough, and the node says so if it happens."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


def _top_user(config: NodeConfig, role: Role) -> str:
    """The user of ``role`` with the highest clearance: the one the story speaks as."""
    users = [u for u in config.users.values() if u.role is role]
    if not users:
        raise ConfigError(f"{config.path}: the demo needs a user with role {role.value}")
    return max(users, key=lambda u: classification_level(u.clearance) or 0).handle


@dataclass
class DemoNode:
    agency: str
    port: int
    accreditation: str
    config: NodeConfig  # the throwaway copy's node.toml: users and [[peers]]
    process: subprocess.Popen[bytes] | None = None

    @property
    def analyst(self) -> str:
        return _top_user(self.config, Role.ANALYST)

    @property
    def liaison(self) -> str:
        return _top_user(self.config, Role.LIAISON)

    @property
    def officer(self) -> str:
        """The disclosure officer the story speaks as (release review)."""
        return _top_user(self.config, Role.DISCLOSURE_OFFICER)

    @property
    def peers(self) -> list[str]:
        return [p.agency for p in self.config.peers]


class Federation:
    """Every agency of ``nodes/`` with a node.toml, run from a throwaway copy in ``work``."""

    def __init__(self, nodes_dir: Path, work: Path, postgres: str | None = None) -> None:
        self.work = work
        self.pki = work / "pki"
        self.nodes: dict[str, DemoNode] = {}
        self._logs: list[IO[bytes]] = []
        self._postgres = postgres
        self.schemas: list[str] = []
        try:
            self._copy_with_free_ports(nodes_dir)
        except BaseException:
            self.drop_schemas()  # those made before the failure
            raise

    def _copy_with_free_ports(self, nodes_dir: Path) -> None:
        copy = self.work / "nodes"
        shutil.copytree(nodes_dir, copy)
        template = (copy / "federation.toml").read_text(encoding="utf-8")
        taken: set[int] = set()
        for partner in tomllib.loads(template)["partners"]:
            node_toml = copy / partner["code"] / "node.toml"
            if not node_toml.exists():
                continue  # a partner without a node here (none today) is only in the manifest
            address = f"127.0.0.1:{free_port(taken)}"
            if "address" in partner:  # else pki init takes the node.toml's listen, rewritten below
                template = template.replace(f'address = "{partner["address"]}"', f'address = "{address}"')
            text = node_toml.read_text(encoding="utf-8")
            settings = tomllib.loads(text)
            text = text.replace(f'"{settings["listen"]}"', f'"{address}"')
            # The demo's own pull interval: a shipped node.toml pulls every few minutes.
            text = re.sub(r"(?m)^interval_seconds\s*=.*$", f"interval_seconds = {DEMO_PULL_SECONDS}", text)
            if settings.get("metrics_listen"):  # its own free port too, beside a real federation
                text = text.replace(f'"{settings["metrics_listen"]}"', f'"127.0.0.1:{free_port(taken)}"')
            if self._postgres is not None:  # a top-level key: first in the file, before any table
                if "database_url" in settings:
                    raise ConfigError(f"{node_toml}: sets database_url; the demo chooses each node's database")
                # A TOML basic string: JSON's escaping of " and \ is the same.
                text = f"database_url = {json.dumps(self._schema_url(partner['code']))}\n{text}"
            node_toml.write_text(text, encoding="utf-8")
            config = load_node_config(node_toml, pki_dir=self.pki, data_dir=self.work / "var" / partner["code"])
            self.nodes[partner["code"]] = DemoNode(
                partner["code"], int(address.rpartition(":")[2]), partner["accreditation"], config)
        (copy / "federation.toml").write_text(template, encoding="utf-8")

    def _schema_url(self, agency: str) -> str:
        """A fresh schema for ``agency`` in the PostgreSQL database, and the URL that selects it."""
        if self._postgres is None:
            raise InternalError("a PostgreSQL schema asked for by a demo on SQLite")
        schema = f"demo_{self.work.name.rsplit('-', 1)[-1]}_{agency}".lower().replace("-", "_")
        url = create_schema(self._postgres, schema)
        self.schemas.append(schema)
        return url

    def drop_schemas(self) -> None:
        if self._postgres is not None and self.schemas:
            drop_schemas(self._postgres, self.schemas)

    def make_pki(self) -> None:
        init_federation(self.work / "nodes", self.pki)

    def profile(self, agency: str, handle: str) -> Path:
        return self.pki / agency / "users" / f"{handle}.profile.toml"

    def client(self, agency: str, handle: str) -> Client:
        return Client(load_profile(self.profile(agency, handle)), timeout=10.0)

    def log_path(self, agency: str) -> Path:
        return self.work / f"{agency}.log"

    # --- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node as a separate ``exchange node serve`` process, its database first
        brought to the current schema as ``exchange db upgrade`` would."""
        for agency, node in self.nodes.items():
            migrate.upgrade_url(node.config.database_url, data_dir=node.config.data_dir)
            log = self.log_path(agency).open("wb")
            self._logs.append(log)
            command = [
                sys.executable, "-m", "exchange.cli.main", "node", "serve", str(node.config.path),
                "--pki-dir", str(self.pki), "--data-dir", str(node.config.data_dir),
            ]
            # A process group of its own: a Ctrl-C at the terminal reaches only the demo,
            # which then stops the nodes in order, rather than racing them as they die.
            node.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            process_group=0)

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for agency, node in self.nodes.items():
            with self.client(agency, node.liaison) as client:
                self._wait_for(agency, client, deadline)

    def _wait_for(self, agency: str, client: Client, deadline: float) -> None:
        while True:
            self.check_alive()
            try:
                client.call(client.search, query_pb2.SearchRequest(page_size=1))
                return
            except TransportError:
                if time.monotonic() > deadline:
                    raise TransportError(f"{agency}'s node did not answer within {START_TIMEOUT:.0f} s; "
                                         f"see {self.log_path(agency)}") from None
                time.sleep(POLL)

    def check_alive(self) -> None:
        """Raise if a node process has exited on its own."""
        for agency, node in self.nodes.items():
            if node.process is not None and node.process.poll() is not None:
                raise TransportError(f"{agency}'s node exited with code {node.process.returncode}; "
                                     f"see {self.log_path(agency)}")

    def pids(self) -> dict[str, int]:
        return {a: n.process.pid for a, n in self.nodes.items() if n.process is not None}

    def stop(self) -> None:
        """SIGTERM every node (they drain in parallel), then SIGKILL whatever is left."""
        running = [n.process for n in self.nodes.values() if n.process is not None and n.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()


# --- signals ---------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    # Only the main thread may set signal handlers (and only it receives signals).
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) raise KeyboardInterrupt, as Ctrl-C does, so every ``finally`` runs."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def shielded_from_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP are ignored inside: a second Ctrl-C must not abandon half-stopped nodes.

    Stopping cannot hang: each node gets STOP_TIMEOUT seconds, then it is killed.
    """
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
