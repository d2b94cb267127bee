"""Every benchmark in bench/ runs at a small size, so that none can silently rot.

Each script runs as a subprocess, exactly as documented in bench/README.md but small,
and must exit 0 and print its figure lines (parsed here, so a figure that stops being
printed, or prints nonsense, fails the test). Figures are not judged: a smoke run on a
busy machine proves only that the benchmark works end to end.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import Backend

pytestmark = pytest.mark.slow  # each is a whole benchmark run, small

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 600.0  # far above a smoke run's time (even on a busy machine): only a hung benchmark reaches it


def run_bench(script: str, *args: str) -> list[str]:
    """Run ``bench/<script>`` with ``args``; its stdout lines (it must exit 0)."""
    argv = [sys.executable, str(REPO / "bench" / script), *args]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"{script} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout.splitlines()


def figure(lines: list[str], pattern: str) -> float:
    """The number matched by ``pattern``'s group 1 on exactly one line (commas allowed)."""
    found = [m for m in (re.fullmatch(pattern, line.strip()) for line in lines) if m is not None]
    assert len(found) == 1, f"expected one line matching {pattern!r}, found {len(found)} in:\n" + "\n".join(lines)
    value = float(found[0][1].replace(",", ""))
    assert value >= 0
    return value


def summary(lines: list[str]) -> dict[str, object]:
    """The JSON object every benchmark prints on its last line."""
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


def postgres_args(backend: Backend, flag: str) -> list[str]:
    return [] if backend.name == "sqlite" else [flag, backend.server_url]


def ruler(tmp_path: Path) -> Path:
    """A floor script that prints a fixed rate in the floor's output format: it stands in for
    the real floor (which is not part of this repository), so what is checked is that the
    benchmark runs it, reads it and prints the ratio."""
    path = tmp_path / "ruler.py"
    path.write_text(
        "import json, sys\n"
        "assert sys.argv[1:3] == ['--records', '300'], sys.argv\n"
        "print('floor pull: 300 records in 0.10 s = 3,000 records/s')\n"
        "print(json.dumps({'floor_records_per_second': 3000.0}))\n",
        encoding="utf-8",
    )
    return path


def test_sync_bench(backend: Backend, tmp_path: Path) -> None:
    # One run per back end (a run takes a while): on SQLite against a floor, on PostgreSQL
    # without one, whose absence is said and is no error.
    floor = ruler(tmp_path) if backend.name == "sqlite" else tmp_path / "no-floor.py"
    lines = run_bench("sync_bench.py", "--records", "300", "--floor", str(floor),
                      *postgres_args(backend, "--postgres"))
    assert figure(lines, r"records: +([\d,]+)") == 300
    rate = figure(lines, r"initial pull: +([\d,.]+) records/s")
    assert rate > 0
    assert figure(lines, r"raw verification \(1 thread\): +([\d,.]+) verifications/s") > 0
    figure(lines, r"incremental pull, nothing new: +([\d.]+) ms median of 5 .*")
    figure(lines, r"pull after 300 hidden entries: ([\d.]+) ms .*")
    if backend.name == "sqlite":
        assert figure(lines, r"floor \(same run\): +([\d,.]+) records/s") == 3000
        assert figure(lines, r"initial pull / floor: +([\d.]+) .*") == pytest.approx(rate / 3000, abs=0.01)
        assert summary(lines)["floor_records_per_second"] == 3000.0
    else:
        assert f"floor: absent ({floor} not found): no ratio to the floor" in lines
        assert "initial pull / floor:                 - (no floor)" in lines
        assert summary(lines)["floor_records_per_second"] is None


def test_sync_bench_into_a_filled_store(tmp_path: Path) -> None:
    # SQLite only: the prefill is the same code on both back ends, and a run takes a while.
    lines = run_bench("sync_bench.py", "--records", "300", "--prefill", "400", "--floor", str(ruler(tmp_path)))
    assert any(re.fullmatch(r"\[main\] setup: prefilled in [\d.]+ s \([\d,]+ records/s\)", line) for line in lines)
    assert "puller's store before the pull:       400 records" in lines
    assert figure(lines, r"initial pull: +([\d,]+) records/s") > 0
    assert summary(lines)["prefill"] == 400


def test_query_bench(backend: Backend, tmp_path: Path) -> None:
    # On SQLite the node fills its pages in a search process (PostgreSQL: in its own process).
    database = ["--search-processes", "1"] if backend.name == "sqlite" else [
        "--database-url", backend.url(tmp_path / "store")]
    lines = run_bench("query_bench.py", "--records", "1000", "--calls", "10", "--warmup", "2", "--workers", "1",
                      "--clients", "2", "--seconds", "1", "--data-dir", str(tmp_path), *database)
    assert summary(lines)["search_processes"] == (1 if backend.name == "sqlite" else 0)
    assert figure(lines, r"records: ([\d,]+) .*") == 1000
    for query in (r"observable lookup \(Zipf\)", r"shared HS code [\d.]+, first page",
                  r"Japanese text '技術', first page"):
        # the count, then mean, p50, p99 and max, the target, and whether it was met
        match = [line for line in lines if re.fullmatch(rf"{query} +10( +[\d.]+){{4}} +p99 < \d+ +(OK|MISSED)", line)]
        assert len(match) == 1, f"no figures for {query!r} in:\n" + "\n".join(lines)
    assert len(summary(lines)["results"]) == 3  # type: ignore[arg-type]
    # Then 2 concurrent clients for a second: per kind the count, p50, p99, queries/s, the target.
    for query in (r"observable lookup \(Zipf\)", r"shared HS code [\d.]+, first page",
                  r"Japanese text '技術', first page"):
        match = [line for line in lines if re.fullmatch(rf"{query} +\d+( +[\d.]+){{3}} +p99 < 50 +(OK|MISSED)", line)]
        assert len(match) == 1, f"no concurrent figures for {query!r} in:\n" + "\n".join(lines)
    concurrent = summary(lines)["concurrent"]
    assert isinstance(concurrent, dict) and concurrent["clients"] == 2 and concurrent["qps"] > 0


def test_bulk_bench(backend: Backend) -> None:
    lines = run_bench("bulk_bench.py", "--records", "200", *postgres_args(backend, "--postgres"))
    figure(lines, r"first run: 200 new records in [\d.]+ s = ([\d,]+) records/s .*")
    figure(lines, r"rerun \(idempotent\): 200 already submitted in ([\d.]+) s .*")
    assert figure(lines, r"bulk submit: +([\d,]+) records/s .*") > 0
    assert summary(lines)["records"] == 200


def test_taxii_bench(backend: Backend) -> None:
    lines = run_bench("taxii_bench.py", "--objects", "600", "--page", "100", *postgres_args(backend, "--postgres"))
    assert figure(lines, r"objects: +([\d,]+) in 6 pages of 100") == 600
    assert figure(lines, r"rate: +([\d,]+) objects/s .*") > 0
    figure(lines, r"first page: +([\d,.]+) ms")
    figure(lines, r"last page: +([\d,.]+) ms")
    assert summary(lines)["objects"] == 600
