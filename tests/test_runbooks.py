"""README's operator runbooks for the signed manifest, run as written: adding a partner,
removing one, rotating a signing key, a leaked key.

The shipped nodes/ (on free loopback ports), its PKI made by `pki init`, the four nodes
serving from their signed manifest; then each runbook's shell blocks, taken from the
README, in bash from the layout's root (`.venv` there is this checkout's). The only change
to the text: FRA-DGSI's ports become free ones (and no metrics endpoint).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.config import load_node_config
from exchange.node.server import Node
from exchange.store.events import security_events
from tests.federation import free_port

REPO = Path(__file__).resolve().parent.parent
AGENCIES = ("JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA")
_PORTS: set[int] = set()


def runbook(section: str) -> str:
    """The shell blocks of one README section (### heading), in order, as one script."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"### {section}\n")
    end = text.find("\n## ", start + 1)
    following = text.find("\n### ", start + 1)
    body = text[start:min(e for e in (end, following) if e != -1)]
    blocks: list[list[str]] = []
    current: list[str] = []
    lines = body.splitlines()
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip(" "))
        code = line.strip() != "" and (indent >= 7 or (indent >= 4 and not _in_list(lines, i)))
        if code:
            current.append(line)
        elif line.strip() == "" and current:
            current.append(line)  # kept if the block goes on after it
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    script: list[str] = []
    for block in blocks:
        while block and not block[-1].strip():
            block.pop()
        margin = len(block[0]) - len(block[0].lstrip(" "))
        script.extend(line[margin:] for line in block)
    return "\n".join(script) + "\n"


def _in_list(lines: list[str], index: int) -> bool:
    """Whether line ``index`` is inside a numbered list item (its code is indented 7)."""
    for line in reversed(lines[:index]):
        if re.match(r"^\d+\. ", line):
            return True
        if line and not line.startswith(" "):
            return False
    return False


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Node]]]:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "nodes", root / "nodes")
    for agency in AGENCIES:
        path = root / "nodes" / agency / "node.toml"
        text = path.read_text(encoding="utf-8")
        text = re.sub(r'(?m)^listen = "[^"]*"', f'listen = "127.0.0.1:{free_port(_PORTS)}"', text)
        text = re.sub(r'(?m)^metrics_listen = "[^"]*"', 'metrics_listen = ""', text)
        path.write_text(text, encoding="utf-8")
    (root / ".venv").symlink_to(REPO / ".venv")
    assert main(["pki", "init", "--out", str(root / "certs" / "out"), "--nodes", str(root / "nodes")]) == 0
    nodes: dict[str, Node] = {}
    try:
        for agency in AGENCIES:
            config = root / "nodes" / agency / "node.toml"
            assert main(["db", "upgrade", "--config", str(config)]) == 0
            node = Node(load_node_config(config), schedule=False)
            node.manifest_check_seconds = 0.5
            node.start()
            nodes[agency] = node
        yield root, nodes
    finally:
        for node in nodes.values():
            node.stop(grace=0)
        pid = root / "var" / "FRA-DGSI" / "node.pid"
        if pid.exists():  # a runbook that failed half-way left the partner's node running
            subprocess.run(["kill", "-TERM", pid.read_text().strip()], check=False)


def bash(root: Path, script: str, port: int) -> subprocess.CompletedProcess[str]:
    script = script.replace("127.0.0.1:50105", f"127.0.0.1:{port}")
    script = script.replace('metrics_listen = "127.0.0.1:9105"', 'metrics_listen = ""')
    env = {**os.environ, "GRPC_VERBOSITY": "NONE"}
    # Into files, not pipes: a node the runbook starts in the background keeps its copies open.
    out, err = root / "runbook.out", root / "runbook.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        code = subprocess.run(["bash", "-e", "-c", script], cwd=root, env=env, stdout=stdout, stderr=stderr,
                              timeout=300).returncode
    result = subprocess.CompletedProcess(["bash"], code, out.read_text(), err.read_text())
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result


def test_the_partner_runbooks_run_as_written(layout: tuple[Path, dict[str, Node]]) -> None:
    root, nodes = layout
    port = free_port(_PORTS)
    added = bash(root, runbook("Adding a partner"), port)
    assert "ready: a node trusting version 1 adopts it" in added.stdout
    assert "trusted manifest version 2" in added.stdout
    for node in nodes.values():  # no restart: every node adopted version 2 from the file
        assert node.manifest.version == 2 and "FRA-DGSI" in node.manifest.active_agencies
    assert "pulled" in added.stdout or "received" in added.stdout or "stored" in added.stdout

    removed = bash(root, runbook("Removing a partner"), port)
    assert "refused, as it should be" in removed.stdout
    assert "FRA-DGSI: left" in removed.stdout
    for node in nodes.values():
        assert node.manifest.version == 3 and "FRA-DGSI" not in node.manifest.active_agencies
        assert not [e for e in security_events(node.store) if e.kind.startswith("manifest-")]


def test_the_key_runbooks_run_as_written(layout: tuple[Path, dict[str, Node]]) -> None:
    root, nodes = layout
    rotated = bash(root, runbook("Rotating a signing key"), free_port(_PORTS))
    assert "ready: a node trusting version 1 adopts it" in rotated.stdout
    assert all(node.manifest.version == 2 for node in nodes.values())
    leaked = bash(root, runbook("A leaked key"), free_port(_PORTS))
    assert "ready: a node trusting version 2 adopts it" in leaked.stdout
    assert all(node.manifest.version == 3 for node in nodes.values())
    assert any(k.compromised for k in nodes["USA-DTSF"].manifest.partner("USA-DTSF").keys)
