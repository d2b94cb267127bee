"""A node's SQLite files are its own: the folder 0700, the database and its -wal/-shm 0600.

The database holds every record and the key that seals page tokens and cursors, so no
other account on the host may read it. ``exchange db upgrade`` (and the demo, which runs
the same upgrade) creates the folder and the file so, without touching the process's
umask; SQLite gives the -wal and -shm files the database file's mode, and an upgrade
closes the files of a database made before this rule. A node refuses to start, in one
line that names the file and the fix, on a folder or files that group or others can use.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from exchange.errors import ConfigError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite keeps beside the database


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL, else None (PostgreSQL, in-memory, not a URL)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def create_private(url: str, *, make_folder: bool) -> None:
    """Make a SQLite database's empty file (0600) and, with ``make_folder``, its folder
    (0700) if they are missing, and close its files to group and others; then refuse a
    folder that is open to them (it may hold more than the node's files, so it is not
    changed here). Nothing for other back ends."""
    path = sqlite_file(url)
    if path is None:
        return
    if make_folder and not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True)  # the mode applies to the last folder
    if not path.parent.is_dir():
        return  # connecting says there is no such folder, in the usual words
    if not path.exists():
        try:  # O_EXCL: made here, with this mode, or not at all
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the database {path}: {exc.strerror}") from None
    # Databases made before this rule are 0644: the upgrade the operator runs anyway closes them.
    for candidate in _files(path):
        _close(candidate)
    check_private(url)


def _files(path: Path) -> tuple[Path, ...]:
    return (path, *(path.with_name(path.name + side) for side in SIDE_FILES))


def _close(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & ~0o077)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot make the database file {path} private: {exc.strerror}") from None


def check_private(url: str) -> None:
    """Refuse a SQLite database whose folder or files group or others may use (ConfigError)."""
    path = sqlite_file(url)
    if path is None:
        return
    _refuse_open(path.parent, "the database folder", "700")
    for candidate in _files(path):
        _refuse_open(candidate, "the database file", "600")


def _refuse_open(path: Path, what: str, fix: str) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot inspect {what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{what} {path} is open to group or others (mode {mode:04o}); "
                          f"it holds every record and the node's sealing key: chmod {fix} {path}")
