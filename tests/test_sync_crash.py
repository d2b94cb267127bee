"""A puller killed with SIGKILL mid-pull, then restarted, loses and duplicates nothing.

The puller is a real ``exchange sync`` subprocess on USA-DTSF's database; the
serving JPN-NPA node runs in this process. Kill times are drawn from a seeded
generator: the seed is printed (run with ``-s``) and named in every assertion
message; ``EXCHANGE_CRASH_SEED=<seed>`` replays the same delays (where they land
in the stream still depends on the machine's speed).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.federation import Federation
from tests.fill import fill

TOTAL = 20_000
MIN_KILLS = 3  # kills that land mid-stream, at different points
MAX_ATTEMPTS = 10  # a kill during start-up, before any batch, does not count towards MIN_KILLS
MIN_DELAY = 0.2  # seconds
# A run is also killed once it has stored this share of what remained: the delay is
# drawn from a measured duration, and a loaded machine can make a run much faster than
# its measurement, which would end it before its kill (and end the test's supply of work).
CAP_SHARE = 0.6
POLL_SECONDS = 0.02
RUN_TIMEOUT = 120.0  # seconds; a run that is not killed on purpose
RECEIVED_RE = re.compile(r"received ([\d,]+), .*?, ([\d.]+) s, repair: (\w+)")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    wall: float  # seconds from spawn to exit
    killed_by: str  # "time", "cap", or "" if the run ended by itself

    def received(self) -> int:
        match = RECEIVED_RE.search(self.stdout)
        assert match, f"no summary in {self.stdout!r} (stderr {self.stderr!r})"
        return int(match.group(1).replace(",", ""))

    def pull_seconds(self) -> float:
        match = RECEIVED_RE.search(self.stdout)
        assert match, f"no summary in {self.stdout!r} (stderr {self.stderr!r})"
        return float(match.group(2))


def run_sync(
    config: Path, *extra: str, kill_after: float | None = None, cap: tuple[Callable[[], int], int] | None = None
) -> Run:
    """Run ``exchange sync`` as a real process; SIGKILL it after ``kill_after`` seconds, or
    once ``cap[0]()`` (records held) reaches ``cap[1]``, whichever comes first."""
    command = [sys.executable, "-m", "exchange.cli.main", "sync", "--peer", "JPN-NPA", "--config", str(config), *extra]
    started = time.monotonic()
    deadline = started + (kill_after if kill_after is not None else RUN_TIMEOUT)
    # Its output is one summary line, far below a pipe's buffer: polling without reading is safe.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_by = ""
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            killed_by = "time"
        elif cap is not None and cap[0]() >= cap[1]:
            killed_by = "cap"
        if killed_by:
            proc.send_signal(signal.SIGKILL)  # no chance to clean up, as when a machine loses power
            break
        time.sleep(POLL_SECONDS)
    out, err = proc.communicate()
    assert kill_after is not None or not killed_by, f"exchange sync ran over {RUN_TIMEOUT} s: {out} {err}"
    return Run(proc.returncode, out, err, time.monotonic() - started, killed_by)


def write_config(federation: Federation, path: Path, data_dir: Path) -> Path:
    # Small batches: many commits per pull, so kills land between and inside them.
    path.write_text(
        f'agency = "USA-DTSF"\nlisten = "127.0.0.1:0"\npki_dir = "{federation.pki_dir}"\n'
        f'data_dir = "{data_dir}"\n{federation.backend.config_line(data_dir)}\n[limits]\npull_batch_entries = 200\n',
        encoding="utf-8",
    )
    upgrade = subprocess.run([sys.executable, "-m", "exchange.cli.main", "db", "upgrade", "--config", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert upgrade.returncode == 0, upgrade.stderr
    return path


def log_keys(federation: Federation, data_dir: Path) -> set[tuple[Any, ...]]:
    return set(federation.backend.rows(data_dir, "SELECT originator, record_id, version, content_hash FROM log"))


def crash_seed() -> int:
    text = os.environ.get("EXCHANGE_CRASH_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


@pytest.mark.slow
def test_puller_killed_mid_pull_resumes_without_loss_or_duplication(federation: Federation, tmp_path: Path) -> None:
    seed = crash_seed()
    print(f"\ncrash test seed: {seed} (replay with EXCHANGE_CRASH_SEED={seed})")
    why = f"(seed {seed}; replay with EXCHANGE_CRASH_SEED={seed})"
    rng = random.Random(seed)

    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    refs = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", TOTAL)
    usa = tmp_path / "usa"
    config = write_config(federation, tmp_path / "usa.toml", usa)
    backend = federation.backend

    def held_count() -> int:
        return int(backend.rows(usa, "SELECT count(*) FROM records")[0][0])

    def query(sql: str) -> list[tuple[Any, ...]]:
        return backend.rows(usa, sql)

    # Measure one uninterrupted pull into a scratch database: how long start-up and the
    # pull take here, and the state a crashed-and-resumed pull must end up in.
    clean_dir = tmp_path / "clean"
    reference = run_sync(write_config(federation, tmp_path / "clean.toml", clean_dir))
    assert reference.returncode == 0 and reference.received() == TOTAL, f"{reference} {why}"
    pull_s = reference.pull_seconds()
    startup_s = max(reference.wall - pull_s, 0.0)
    print(f"uninterrupted pull: {reference.wall:.1f} s ({startup_s:.1f} s start-up, {pull_s:.1f} s pulling)")

    points: list[int] = []  # records held after each kill that landed mid-stream
    attempts = 0
    while len(points) < MIN_KILLS and attempts < MAX_ATTEMPTS:
        attempts += 1
        before = held_count()
        remaining = TOTAL - before
        delay = rng.uniform(MIN_DELAY, max(MIN_DELAY, startup_s + pull_s * remaining / TOTAL))
        run = run_sync(config, kill_after=delay, cap=(held_count, before + round(CAP_SHARE * remaining)))
        assert run.killed_by, f"the pull finished before its kill at {delay:.2f} s: {run} {why}"
        after = held_count()
        print(f"kill {attempts} ({run.killed_by}) after {run.wall:.2f} s: {before} -> {after} records held")
        assert backend.integrity_problems(usa) == [], f"after kill {attempts} {why}"
        assert before <= after < TOTAL, f"after kill {attempts}: {before} -> {after} {why}"
        if after > before:
            points.append(after)
    assert len(points) >= MIN_KILLS, f"only {len(points)} kills landed mid-stream in {attempts} {why}"

    rest = run_sync(config)
    assert rest.returncode == 0 and rest.received() == TOTAL - points[-1], f"{rest} {why}"

    assert backend.integrity_problems(usa) == [], why
    assert held_count() == TOTAL, why
    duplicates = query("SELECT originator, record_id, version, content_hash, count(*) FROM log "
                           "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1")
    assert duplicates == [], f"{len(duplicates)} duplicated log entries {why}"
    held = set(query("SELECT originator, record_id FROM records"))
    assert held == {(r.originator, r.record_id) for r in refs}, f"records lost or foreign {why}"
    assert log_keys(federation, usa) == log_keys(federation, clean_dir), f"differs from an uninterrupted pull {why}"

    final = run_sync(config)
    assert final.returncode == 0 and final.received() == 0, f"did not converge: {final} {why}"
