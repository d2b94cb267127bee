"""The repository stands alone: a fresh clone refers to nothing outside itself.

The design, the scenarios and the style notes live in docs/; a reference to a folder beside
the clone, to a path on one machine, or to a design file by a name the repository does not
have would send a newcomer looking for something they cannot find.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Spelled in pieces, so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "/work/" + "shared", "/work/" + "wt/", "/work/" + "main"]))
# The design documents by their old names: they are docs/design.md, docs/scenarios.md, docs/style.md.
OLD_NAMES = re.compile(r"(?<![\w/])(?:" + "|".join(["DESIGN", "SCENARIOS", "STYLE"]) + r")\.md")
DOC_LINK = re.compile(r"docs/[\w.-]+\.md")


def tracked_files() -> list[Path]:
    """The files a clone has: git's list when this is a checkout, else everything but tool folders."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30)
        names = [n for n in listing.stdout.decode("utf-8").split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "var", "certs"}
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)]
    return [REPO / name for name in names if (REPO / name).is_file()]


def texts() -> list[tuple[Path, str]]:
    found = []
    for path in tracked_files():
        try:
            found.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # binary: nothing to refer to
    return found


def test_no_file_refers_outside_the_repository() -> None:
    offenders = [f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
                 for path, text in texts() for m in OUTSIDE.finditer(text)]
    assert offenders == []


def test_design_documents_are_named_as_the_repository_has_them() -> None:
    offenders = [f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
                 for path, text in texts() for m in OLD_NAMES.finditer(text)]
    assert offenders == []


def test_every_docs_page_referred_to_exists() -> None:
    for name in ("design.md", "scenarios.md", "style.md"):
        assert (REPO / "docs" / name).is_file(), name
    missing = sorted({m.group(0) for _, text in texts() for m in DOC_LINK.finditer(text)
                      if not (REPO / m.group(0)).is_file()})
    assert missing == []
