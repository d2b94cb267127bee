"""The README's liaison examples, taken from the README itself and run through the CLI against a
federation made from the shipped nodes/ and its samples: each finds what the README says it
finds. A sample changed without the README (or the other way round) fails here."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.config import load_node_config
from exchange.node.server import Node
from tests.federation import free_port

REPO = Path(__file__).resolve().parent.parent
AGENCIES = ("JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA")
ANALYSTS = {"JPN-NPA": "sato", "USA-DTSF": "jmiller", "KOR-KNPA": "kimjh", "GBR-NPSA": "hwright"}
_PORTS: set[int] = set()


def readme_commands(section: str) -> list[list[str]]:
    """The `.venv/bin/exchange ...` lines of one README section, as argument lists (comments cut)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    commands = []
    for line in text[start:end].splitlines():
        if line.startswith("    .venv/bin/exchange "):
            words = shlex.split(line, comments=True)
            commands.append(words[1:])
    return commands


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shipped nodes/ on free loopback ports, its PKI, every node serving, every sample submitted."""
    nodes = tmp_path / "nodes"
    shutil.copytree(REPO / "nodes", nodes)
    for agency in AGENCIES:
        path = nodes / agency / "node.toml"
        text = path.read_text(encoding="utf-8")
        text = re.sub(r'(?m)^listen = "[^"]*"', f'listen = "127.0.0.1:{free_port(_PORTS)}"', text)
        text = re.sub(r'(?m)^metrics_listen = "[^"]*"', 'metrics_listen = ""', text)
        path.write_text(text, encoding="utf-8")
    certs = tmp_path / "certs" / "out"
    assert main(["pki", "init", "--out", str(certs), "--nodes", str(nodes)]) == 0
    running = []
    try:
        for agency in AGENCIES:
            config = nodes / agency / "node.toml"
            assert main(["db", "upgrade", "--config", str(config)]) == 0
            node = Node(load_node_config(config), schedule=False)
            node.start()
            running.append(node)
        for agency, analyst in ANALYSTS.items():
            profile = certs / agency / "users" / f"{analyst}.profile.toml"
            for sample in sorted((nodes / agency / "samples").glob("*.json")):
                if not sample.name.endswith(".v2.json"):  # a revision, not a record of its own
                    assert main(["submit", "--profile", str(profile), str(sample)]) == 0
        # The pulls README "For liaison officers" makes before its examples.
        for pull in readme_commands("For liaison officers"):
            if pull[0] == "sync":
                at = pull.index("--config") + 1
                pull[at] = str(tmp_path / pull[at])
                assert main(pull) == 0
        monkeypatch.setenv("EXCHANGE_PROFILE", str(certs / "JPN-NPA" / "users" / "suzuki.profile.toml"))
        yield tmp_path
    finally:
        for node in running:
            node.stop(grace=0)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def titles(output: str) -> list[str]:
    """The record rows of a listing (between the banners, after the header)."""
    return [line for line in output.splitlines() if line and not line.startswith(("====", "ORIGINATOR", "RECEIVED"))]


def test_the_readme_liaison_examples_find_the_shipped_samples(
    shipped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = [c for c in readme_commands("For liaison officers") if c[0] == "query"]
    assert len(queries) >= 5
    for query in queries:
        out = run(query, capsys)
        if "--json" in query:
            found = json.loads(out)
            assert found, query
            if "--country" in query:
                assert {r["ref"]["originator"] for r in found} == {"USA-DTSF"} and len(found) == 3  # "USA-DTSF's three"
        else:
            assert titles(out), (query, out)
        if "--from-partners" in query:  # GBR-NPSA's, relayed by USA-DTSF; JPN-NPA's own left out
            assert [row.split()[0] for row in titles(out)] == ["GBR-NPSA"], out
        if "--text" in query:
            assert [row.split()[0] for row in titles(out)] == ["JPN-NPA"], out

    watch = [c for c in readme_commands("For liaison officers") if c[0] == "watch"]
    assert [c[1] for c in watch] == ["add", "add", "list", "hits", "remove"]
    for command in watch[:3]:
        run(command, capsys)
    hits = titles(run(watch[3], capsys))
    assert sorted(row.split()[-1] for row in hits) == ["#1", "#2"], hits  # the README's comment says which
    assert sorted(row.split()[3] for row in hits) == ["GBR-NPSA", "USA-DTSF"], hits  # originators
