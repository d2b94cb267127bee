"""Bulk submission benchmark: ``exchange submit --bulk FILE.jsonl`` against a real node.

Makes a federation PKI, starts one real node (``exchange node serve``, JPN-NPA) in its own
process on SQLite (or PostgreSQL with ``--postgres``, in a schema of its own dropped at the
end), writes N realistic drafts (Japanese, Korean and English text, every observable type,
mixed markings, each with its own ``reference``) to a JSON Lines file, and runs the real CLI
``exchange submit --bulk`` on it as a subprocess, as an analyst would. Prints the rate of the
first run (every line new: validated, signed, stored and audited on the node) and the time of
a rerun of the same file (every line already submitted: nothing is created twice).

    .venv/bin/python bench/bulk_bench.py                  # 100,000 lines (default)
    .venv/bin/python bench/bulk_bench.py --records 10000
    .venv/bin/python bench/bulk_bench.py --records 10000 --postgres
    .venv/bin/python bench/bulk_bench.py --records 10000 --parallel 1   # the CLI's --parallel

Nothing is left behind (the temporary folder and schema are removed, ``--keep`` keeps the
folder). The last line of the output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

NODE = "JPN-NPA"
ANALYST = "sato"  # an analyst of JPN-NPA in tests.federation
PARTNERS = ("USA-DTSF", "KOR-KNPA", "GBR-NPSA")
TARGET_RATE = 2000.0  # records/s end to end (issue 15)
STARTUP_TIMEOUT = 120.0


def make_drafts(count: int, seed: int) -> list[str]:
    """``count`` JSON lines, each a realistic draft with its own reference (deterministic)."""
    from query_bench import COUNTRIES, SECTORS, Distribution, _text

    dist = Distribution(1.1)
    lines = []
    for i in range(count):
        rng = random.Random(seed * 1_000_003 + i)
        sector = rng.choice(SECTORS)
        title, summary = _text(rng, sector)
        observables = sorted({dist.observable(rng) for _ in range(rng.randint(1, 4))})
        classification = rng.choices(("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"),
                                     weights=(15, 35, 35, 15))[0]
        marking: dict[str, Any] = {
            "classification": classification,
            "releasable_to": [p for p in PARTNERS if rng.random() < 0.5],
            "tlp": rng.choices(("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"), weights=(5, 35, 45, 10, 5))[0],
        }
        if rng.random() < 0.1:
            marking["caveats"] = ["ORCON"]
        draft = {
            "reference": f"BENCH-{seed}-{i:07d}",
            "kind": rng.choice(("actor", "technique", "observable_set")),
            "title": title,
            "summary": summary,
            "countries": sorted({rng.choice(COUNTRIES) for _ in range(rng.randint(1, 2))}),
            "sectors": [sector],
            "observables": [{"type": t, "value": v} for t, v in observables],
            "confidence": rng.randrange(30, 95),
            "tags": [rng.choice(("transshipment", "sns", "investment", "insider", "it-workers"))],
            "marking": marking,
        }
        lines.append(json.dumps(draft, ensure_ascii=False))
    return lines


class Node:
    """``exchange node serve`` in a subprocess, up once it prints its "listening" line."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                     cwd=REPO, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        first: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        if not first or "listening" not in first[0]:
            self.stop()
            raise RuntimeError(f"the node did not start: {first!r}\n{log_path.read_text(errors='replace')[-3000:]}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the node process so far (all threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's children reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def submit(argv: list[str], log_path: Path) -> tuple[float, str]:
    """Run the CLI once: (wall seconds, its last stdout line, the summary)."""
    started = time.perf_counter()
    with log_path.open("wb") as log:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO,
                              text=True, check=False)
    seconds = time.perf_counter() - started
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"exchange submit --bulk exited {done.returncode}: {last}\n{tail}")
    return seconds, last


def run(args: argparse.Namespace) -> int:
    from exchange.store import migrate
    from tests.federation import USERS, make_federation

    print(f"command: {shlex.join([sys.executable, *sys.argv])}", flush=True)
    print(f"cwd: {os.getcwd()}  cpus: {os.cpu_count()}  python: {sys.version.split()[0]}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bulk-bench-"))
    node: Node | None = None
    schema: str | None = None
    result: dict[str, Any] = {"records": args.records, "storage": "postgresql" if args.postgres else "sqlite"}
    try:
        federation = make_federation(tmp / "federation")
        data_dir = tmp / "jpn"
        data_dir.mkdir(mode=0o700)  # a node refuses a folder others can read
        if args.postgres:
            from exchange.store.pgschema import create_schema

            schema = tmp.name.replace("-", "_").lower()
            database_url = create_schema(args.postgres, schema)
        else:
            database_url = f"sqlite:///{data_dir / 'node.db'}"
        migrate.upgrade_url(database_url, data_dir=data_dir)
        toml = tmp / "jpn.toml"
        toml.write_text(
            f'agency = "{NODE}"\nlisten = "{federation.manifest.partner(NODE).address}"\n'
            f'pki_dir = "{federation.pki_dir}"\ndata_dir = "{data_dir}"\ndatabase_url = "{database_url}"\n'
            + "".join(f'\n[[users]]\nhandle = "{handle}"\nrole = "{role.value}"\nclearance = "{clearance}"\n'
                      for handle, (role, clearance) in USERS[NODE].items()),
            encoding="utf-8",
        )
        drafts = tmp / "drafts.jsonl"
        started = time.perf_counter()
        drafts.write_text("\n".join(make_drafts(args.records, args.seed)) + "\n", encoding="utf-8")
        print(f"setup: wrote {args.records:,} drafts ({drafts.stat().st_size / 2**20:,.1f} MiB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)

        serve = [sys.executable, "-m", "exchange.cli.main", "node", "serve", str(toml)]
        node = Node(serve, tmp / "node.log")
        print(f"node: {shlex.join(serve)}", flush=True)
        profile = federation.pki_dir / NODE / "users" / f"{ANALYST}.profile.toml"
        cli = [sys.executable, "-m", "exchange.cli.main", "submit", "--bulk", str(drafts), "--profile", str(profile),
               "--no-progress"]
        if args.parallel is not None:
            cli += ["--parallel", str(args.parallel)]
        print(f"submit: {shlex.join(cli)}", flush=True)

        spy = None
        if args.py_spy:  # sample the node during the first run (py-spy is not a project dependency)
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(node.proc.pid), "--format", "raw",
                                    "--rate", "200", "--gil", "--output", args.py_spy], stdout=subprocess.DEVNULL)
        cpu_before = node.cpu_seconds()
        cli_before = _children_cpu()  # the CLI is the only child reaped meanwhile
        seconds, summary = submit(cli, tmp / "submit-1.log")
        cli_cpu = _children_cpu() - cli_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            print(f"py-spy: the node's stacks during the first run are in {args.py_spy} (collapsed)", flush=True)
        node_cpu = node.cpu_seconds() - cpu_before
        expected = f"{args.records} submitted ({args.records} new, 0 already submitted), 0 rejected"
        if summary != expected:
            raise RuntimeError(f"first run: expected {expected!r}, got {summary!r}")
        result.update(first_seconds=round(seconds, 2), records_per_second=round(args.records / seconds, 1),
                      node_cpu_seconds=round(node_cpu, 2), cli_cpu_seconds=round(cli_cpu, 2))
        print(f"first run: {args.records:,} new records in {seconds:.2f} s = "
              f"{args.records / seconds:,.0f} records/s (node CPU {node_cpu:.1f} s = "
              f"{node_cpu / args.records * 1e6:,.0f} us/record; CLI CPU {cli_cpu:.1f} s = "
              f"{cli_cpu / args.records * 1e6:,.0f} us/record)", flush=True)

        cpu_before = node.cpu_seconds()
        cli_before = _children_cpu()
        seconds, summary = submit(cli, tmp / "submit-2.log")
        cli_cpu = _children_cpu() - cli_before
        node_cpu = node.cpu_seconds() - cpu_before
        expected = f"{args.records} submitted (0 new, {args.records} already submitted), 0 rejected"
        if summary != expected:
            raise RuntimeError(f"rerun: expected {expected!r}, got {summary!r}")
        result.update(rerun_seconds=round(seconds, 2), rerun_lines_per_second=round(args.records / seconds, 1),
                      rerun_node_cpu_seconds=round(node_cpu, 2), rerun_cli_cpu_seconds=round(cli_cpu, 2))
        print(f"rerun (idempotent): {args.records:,} already submitted in {seconds:.2f} s = "
              f"{args.records / seconds:,.0f} lines/s (node CPU {node_cpu:.1f} s = "
              f"{node_cpu / args.records * 1e6:,.0f} us/line; CLI CPU {cli_cpu:.1f} s = "
              f"{cli_cpu / args.records * 1e6:,.0f} us/line)", flush=True)
    finally:
        if node is not None:
            node.stop()
        if schema is not None:
            from exchange.store.pgschema import drop_schemas

            drop_schemas(args.postgres, [schema])
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rate = result["records_per_second"]
    print()
    print(f"records:              {args.records:,} ({result['storage']})")
    print(f"bulk submit:          {rate:,.0f} records/s (target >= {TARGET_RATE:,.0f}) "
          f"{'MET' if rate >= TARGET_RATE else 'NOT MET'}")
    print(f"rerun, idempotent:    {result['rerun_seconds']:.2f} s")
    print(json.dumps(result, sort_keys=True))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="lines in the file (default 100,000)")
    parser.add_argument("--postgres", metavar="URL", nargs="?", const="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="store in PostgreSQL (default URL: 127.0.0.1:5432/test), in a schema of its own")
    parser.add_argument("--parallel", type=int, help="passed to `exchange submit --parallel` (default: the CLI's)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated drafts")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="sample the node with py-spy (on PATH) during the first run; collapsed stacks to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (the node's log)")
    args = parser.parse_args(argv)
    if args.records <= 0:
        parser.error("--records must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
