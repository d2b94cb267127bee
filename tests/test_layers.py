"""The package's layers, read from the source: no import cycle, no layer importing upward.

A few lines over ``ast`` rather than import-linter: the rules are four sentences, a
missing edge (an import inside a function, or under TYPE_CHECKING) must count as
much as a top-level one, and the test reads as the rule it enforces.

Layers, lowest first (a module may import its own layer and those below):

    errors, logs, observe  <  core  <  config  <  records, pki, stix, exchange/__init__
      <  store  <  node, sync, client, drafts, render  <  demo  <  cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exchange"

# Unit of layering -> rank. A module belongs to the longest unit that prefixes its name.
LAYERS: dict[str, int] = {
    "exchange.errors": 0, "exchange.logs": 0, "exchange.observe": 0,
    "exchange.core": 1,
    "exchange.config": 2,
    "exchange.records": 3, "exchange.pki": 3, "exchange": 3,  # the package's public surface
    "exchange.stix": 3,  # pure STIX views of signed records: beside records, below every transport
    "exchange.store": 4,
    "exchange.node": 5, "exchange.sync": 5, "exchange.client": 5, "exchange.drafts": 5, "exchange.render": 5,
    "exchange.demo": 6,  # the demo runs nodes and clients; the command line runs the demo, never the reverse
    "exchange.cli": 7,
}
UNIT_ALIASES: dict[str, str] = {}

# What the pure core never imports: transports, databases, files and processes, the clock's
# side effects aside; its modules are read top to bottom and tested without any of them.
CORE_FORBIDDEN = (
    "grpc", "grpc_health", "grpc_reflection", "google.protobuf", "sqlalchemy", "alembic", "psycopg", "sqlite3",
    "cryptography", "socket", "ssl", "os", "io", "pathlib", "shutil", "tempfile", "glob", "subprocess",
    "urllib", "http", "select", "selectors", "asyncio", "logging", "exchange.v1",
)
CORE_FORBIDDEN_CALLS = ("open", "print", "input")

# Known exceptions, one line each with the issue that removes them (none today).
ALLOWED_EDGES: set[tuple[str, str]] = set()

GENERATED = "exchange.v1"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: path for name, path in found.items() if not _within(name, GENERATED)}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported(path: Path, name: str, known: frozenset[str] = frozenset()) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports, anywhere in it (functions, TYPE_CHECKING), with the line.

    ``from pkg import x`` imports the module ``pkg.x`` if that is one of ``known``, else
    the package ``pkg`` (whose ``__init__`` provides ``x``).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                module = f"{base}.{alias.name}"
                yield (module if module in known else base), node.lineno


def edges() -> dict[str, dict[str, int]]:
    """module -> {exchange module it imports: first line}, generated code left out."""
    known = modules()
    names = frozenset(known)
    graph: dict[str, dict[str, int]] = {name: {} for name in known}
    for name, path in known.items():
        for target, line in imported(path, name, names):
            if _within(target, "exchange") and not _within(target, GENERATED) and target != name:
                graph[name].setdefault(target, line)
    return graph


def unit(name: str) -> str:
    best = max((u for u in LAYERS if _within(name, u)), key=len)
    return UNIT_ALIASES.get(best, best)


def rank(name: str) -> int:
    return LAYERS[max((u for u in LAYERS if _within(name, u)), key=len)]


def allowed(source: str, target: str) -> bool:
    return (unit(source), unit(target)) in ALLOWED_EDGES


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for source, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            if rank(target) > rank(source) and not allowed(source, target):
                problems.append(f"{source} (line {line}) imports {target}: a layer above it")
    return problems


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in modules() if not any(_within(name, u) for u in LAYERS)]
    assert not unplaced, "modules in no layer (add them to LAYERS): " + ", ".join(unplaced)


def test_no_layer_imports_a_layer_above_it() -> None:
    problems = layer_violations(edges())
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_modules() -> None:
    graph = {s: {t for t in targets if not allowed(s, t)} for s, targets in edges().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages() -> None:
    units: dict[str, set[str]] = {}
    for source, targets in edges().items():
        for target in targets:
            if unit(source) != unit(target) and not allowed(source, target):
                units.setdefault(unit(source), set()).add(unit(target))
    cycle = find_cycle(units)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


def test_core_does_no_io_and_uses_no_transport_or_database() -> None:
    problems = []
    for name, path in modules().items():
        if not _within(name, "exchange.core"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        problems += [f"{name} (line {line}) imports {target}" for target, line in imported(path, name)
                     if any(_within(target, banned) for banned in CORE_FORBIDDEN)]
        problems += [f"{name} (line {node.lineno}) calls {node.func.id}()" for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                     and node.func.id in CORE_FORBIDDEN_CALLS]
    assert not problems, "\n".join(problems)


def test_importing_the_core_loads_no_cryptography_or_protobuf() -> None:
    code = (
        "import sys, exchange.core.policy, exchange.core.manifest\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('cryptography', 'google.protobuf', 'grpc', "
        "'sqlalchemy')))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_no_assert_in_production_code() -> None:
    """``python -O`` drops asserts: a check that must hold raises from exchange.errors instead."""
    found = [f"{name}:{node.lineno}" for name, path in modules().items()
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.Assert)]
    assert not found, "assert statements (use an explicit raise): " + ", ".join(found)


# --- the checker itself finds what it is for ------------------------------------------------


def test_the_checker_finds_an_upward_import_and_a_cycle() -> None:
    graph = {
        "exchange.store.schema": {"exchange.node.sync": 3},
        "exchange.node.sync": {"exchange.sync.repair": 5},
        "exchange.sync.repair": {"exchange.node.sync": 7},
    }
    assert layer_violations(graph) == [
        "exchange.store.schema (line 3) imports exchange.node.sync: a layer above it"
    ]
    assert find_cycle({s: set(t) for s, t in graph.items()}) == [
        "exchange.node.sync", "exchange.sync.repair", "exchange.node.sync"
    ]
