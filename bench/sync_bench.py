"""Benchmark of issue "Peer sync": the initial pull of N signed records between two nodes.

Two real nodes over mutual TLS with SQLite storage, each in its own process so that
each side's peak resident memory is measured on its own:

* the serving node (JPN-NPA) runs ``python -m exchange.cli.main node serve`` in a
  subprocess, on a database filled beforehand with N records releasable to USA-DTSF;
* the pulling node (USA-DTSF) runs in another subprocess (this script with
  ``--role pull``): it builds ``Node(config, schedule=False)`` and calls
  ``node.puller.pull("JPN-NPA")`` on commands read from stdin, answering JSON lines.

Measured, in the same run: records/second of the initial pull, the raw Ed25519
verification rate over the same envelopes (one thread), their ratio, the time of a
pull when nothing changed (median of 5), the time of a pull after N entries the
puller may not see were appended on the server, and both processes' peak RSS.
``--memory-check`` runs the initial pull at 10,000 and 100,000 records and compares
the puller's peak RSS. See bench/README.md for the targets.

Run: .venv/bin/python bench/sync_bench.py [--records N] [--prefill N] [--memory-check] [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "bench"):  # the project, and query_bench's data generator
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SERVER = "JPN-NPA"
PULLER = "USA-DTSF"
OTHER = "KOR-KNPA"  # the only agency the "hidden" records are released to

TARGET_RATIO = 0.9  # issue 3, SQLite
TARGET_RATIO_POSTGRES = 0.7  # issue 5
TARGET_FLOOR_RATIO = 0.6  # issue 15: initial pull / floor, SQLite
TARGET_FLOOR_RATIO_POSTGRES = 0.5
TARGET_NOOP_MS = 50.0
TARGET_HIDDEN_MS = 250.0
TARGET_MEMORY_RATIO = 1.3

STARTUP_TIMEOUT = 60.0
# The ruler of issue 15: the floor of any verified pull, measured in the same run. It is not
# part of this repository; it is used when found beside it (or named with --floor).
DEFAULT_FLOOR = REPO.parent / "shared" / "bench" / "floor_pull.py"


# --- helpers shared by the roles -----------------------------------------------------------


def _maxrss_kib() -> int:
    """This process's peak resident set, in KiB.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not enough on its own: Linux carries
    it across fork and execve, so a child started by a parent that held 120 MiB
    reports at least 120 MiB whatever it does itself. VmHWM belongs to the
    process's own address space (reset by execve), so it is the child's own peak.
    Both are reported; the peak used is VmHWM when /proc has it.
    """
    own = _vm_hwm_kib(os.getpid())
    return own if own is not None else _rusage_kib()


def _rusage_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set of another process (VmHWM), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _children_hwm_kib() -> list[int]:
    """Peak resident set of each process this one started and still runs (the puller's check
    processes, exchange/sync/checkpool.py): their memory is the pull's too."""
    import multiprocessing

    peaks = [_vm_hwm_kib(child.pid) for child in multiprocessing.active_children() if child.pid is not None]
    return [peak for peak in peaks if peak is not None]


def _children_cpu_seconds() -> float:
    """CPU time the processes this one started and still runs have used so far (the check
    processes: they start with the first large batch, so their start-up counts too)."""
    import multiprocessing

    used = [_cpu_seconds(child.pid) for child in multiprocessing.active_children() if child.pid is not None]
    return sum(seconds for seconds in used if seconds is not None)


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) another process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _write_node_toml(path: Path, agency: str, listen: str, pki_dir: Path, data_dir: Path,
                     limits: dict[str, int], database_url: str) -> None:
    lines = [
        f'agency = "{agency}"',
        f'listen = "{listen}"',
        f'pki_dir = "{pki_dir}"',
        f'data_dir = "{data_dir}"',
        f'database_url = "{database_url}"',
        "",
        "[limits]",
        *(f"{name} = {value}" for name, value in limits.items()),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


class _Profiles:
    """cProfile per thread: one profiler for each thread that runs a wrapped function.

    cProfile only sees the thread that enabled it, and both sides do real work off
    the main thread (the puller verifies on a worker thread, the server streams
    on a gRPC handler thread), so the functions doing that work are wrapped.
    """

    def __init__(self) -> None:
        import cProfile

        self._make = cProfile.Profile
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _profiler(self) -> Any:
        profiler = getattr(self._local, "profiler", None)
        if profiler is None:
            profiler = self._make()
            self._local.profiler = profiler
            with self._lock:
                self._all.append(profiler)
        return profiler

    def wrap(self, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            profiler = self._profiler()
            profiler.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profiler.disable()

        return wrapped

    def wrap_generator(self, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            profiler = self._profiler()
            profiler.enable()
            try:
                yield from fn(*args, **kwargs)
            finally:
                profiler.disable()

        return wrapped

    def dump(self, path: Path) -> None:
        import pstats

        with self._lock:
            profilers = list(self._all)
        if not profilers:
            return
        stats = pstats.Stats(profilers[0])
        for other in profilers[1:]:
            stats.add(other)
        stats.dump_stats(str(path))


class _Split:
    """Where the puller's wall time goes, by wrapping a few of its functions with clocks.

    Cheap enough (a few clock reads per batch) to stay on in every run. Each
    wrapper is installed only if the function exists, so the benchmark keeps
    working while the puller's internals change.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.totals = {}

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {name: round(value, 4) for name, value in self.totals.items()}

    def wrap(self, owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.totals[label] = self.totals.get(label, 0.0) + elapsed

        setattr(owner, name, timed)


# --- role: fill ----------------------------------------------------------------------------


def role_fill(args: argparse.Namespace) -> int:
    """Sign and store ``--count`` records of JPN-NPA in its database (the bulk path)."""
    from exchange.config import load_manifest
    from exchange.store import Store, integrity
    from exchange.v1 import records_pb2
    from tests.fill import fill

    pki_dir = Path(args.pki_dir)
    manifest = load_manifest(pki_dir / "manifest.toml")
    if args.hidden:
        # Not releasable to the puller: only KOR-KNPA may see these.
        marking = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=[OTHER], tlp="GREEN")
    else:
        marking = records_pb2.Marking(
            classification="CONFIDENTIAL", releasable_to=[PULLER, OTHER, "GBR-NPSA"], tlp="GREEN"
        )
    seal = integrity.for_node(pki_dir, SERVER, args.database_url)
    store = Store.open(args.database_url, agency=SERVER, seal=seal)
    started = time.perf_counter()
    try:
        if args.hidden:
            fill(store, manifest, pki_dir, SERVER, args.count, marking=marking)
        else:
            _fill_realistic(store, manifest, pki_dir, args.count)
    finally:
        store.close()
    _emit({"event": "filled", "count": args.count, "seconds": time.perf_counter() - started})
    return 0


# Who originated the records the server holds and serves: its own, and partners' it relays
# (each signed with its originator's key), as in a federation where a node passes on what it
# may (docs/design.md rule 3).
ORIGINATOR_SHARES = ((SERVER, 0.6), (OTHER, 0.25), ("GBR-NPSA", 0.15))


def _fill_realistic(store: Any, manifest: Any, pki_dir: Path, count: int, chunk: int = 1000) -> None:
    """``count`` records releasable to PULLER, with content as varied as query_bench.py's:
    Japanese, Korean and English text, one to four observables of every type, several
    countries, every TLP label, classifications up to CONFIDENTIAL, released to a random set
    of partners besides the puller; 60% SERVER's own, the rest of two partners (signed with
    their keys, held as received from them), which the server relays."""
    import random
    import uuid

    from query_bench import COUNTRIES, SECTORS, Distribution, _text

    from exchange.core.policy import holders
    from exchange.node.server import load_signer
    from exchange.records.envelope import RECORD_TYPE, content_hash
    from exchange.store.received import Incoming, apply_batch
    from exchange.store.store import marking_of
    from exchange.v1 import records_pb2
    from tests.fill import make_record

    signers = {agency: load_signer(agency, pki_dir / agency / "signing.key", manifest)
               for agency, _ in ORIGINATOR_SHARES}
    agencies = [agency for agency, _ in ORIGINATOR_SHARES]
    weights = [share for _, share in ORIGINATOR_SHARES]
    accreditations = {code: p.accreditation for code, p in manifest.partners.items()}
    dist = Distribution(1.1)
    rng = random.Random(15)
    for start in range(0, count, chunk):
        batches: dict[str, list[Any]] = {agency: [] for agency in agencies}
        for i in range(start, min(count, start + chunk)):
            originator = rng.choices(agencies, weights=weights)[0]
            others = {p for p in (SERVER, OTHER, "GBR-NPSA") if p != originator}
            marking = records_pb2.Marking(
                classification=rng.choice(("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL")),
                # The server must be on a partner's list to hold (and relay) its record.
                releasable_to=sorted({PULLER} | ({SERVER} if originator != SERVER else set())
                                     | {p for p in others if rng.random() < 0.5}),
                tlp=rng.choices(("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"), weights=(5, 35, 45, 10, 5))[0],
            )
            if originator != SERVER and marking.tlp in ("AMBER+STRICT", "RED"):
                marking.tlp = "AMBER"  # held by the server, but not passed on: it would be hidden
            record = make_record(originator, i, marking,
                                 record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
            sector = rng.choice(SECTORS)
            title, summary = _text(rng, sector)
            content = record.content
            content.kind = rng.choice((records_pb2.KIND_ACTOR, records_pb2.KIND_TECHNIQUE,
                                       records_pb2.KIND_OBSERVABLE_SET))
            content.title, content.summary = title, summary
            content.sectors[:] = [sector]
            content.countries[:] = sorted({rng.choice(COUNTRIES) for _ in range(rng.randint(1, 2))})
            del content.observables[:]
            content.observables.extend(records_pb2.Observable(type=t, value=v)
                                       for t, v in sorted({dist.observable(rng) for _ in range(rng.randint(1, 4))}))
            content.confidence = rng.randrange(30, 95)
            envelope = signers[originator].seal(RECORD_TYPE, record.SerializeToString())
            audience = holders(originator=originator, marking=marking_of(marking), accreditations=accreditations)
            batches[originator].append(Incoming(envelope, content_hash(envelope.payload), audience, record=record))
        for originator, batch in batches.items():
            if batch:
                applied = apply_batch(store, originator, batch, None)
                if applied.stored != len(batch):
                    raise SystemExit(f"fill: {originator}'s batch stored {applied.stored} of {len(batch)}")


def role_prefill(args: argparse.Namespace) -> int:
    """``--count`` records of OTHER, released to PULLER, in the PULLER's database, as pulled
    from OTHER (sealed with the puller's key): the store a pull then grows (issue 15, item 5)."""
    from exchange.config import load_manifest
    from exchange.store import Store, integrity
    from exchange.v1 import records_pb2
    from tests.fill import fill

    pki_dir = Path(args.pki_dir)
    manifest = load_manifest(pki_dir / "manifest.toml")
    marking = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=[PULLER], tlp="GREEN")
    store = Store.open(args.database_url, agency=PULLER, seal=integrity.for_node(pki_dir, PULLER, args.database_url))
    started = time.perf_counter()
    try:
        fill(store, manifest, pki_dir, OTHER, args.count, marking=marking)
    finally:
        store.close()
    _emit({"event": "filled", "count": args.count, "seconds": time.perf_counter() - started})
    return 0


# --- role: pull ----------------------------------------------------------------------------


def role_pull(args: argparse.Namespace) -> int:
    """The pulling node: pulls on each command read from stdin, answers JSON lines."""
    from exchange.config import load_node_config
    from exchange.node.server import Node
    from exchange.sync.puller import Puller

    profiles: _Profiles | None = None
    if args.profile_out:
        profiles = _Profiles()
        Puller._verify = profiles.wrap(Puller._verify)  # type: ignore[method-assign]
        Puller.pull = profiles.wrap(Puller.pull)  # type: ignore[method-assign]

    from exchange.sync import puller as puller_module

    split = _Split()
    # Verification thread: the whole of each batch's checks (signature, parse, decision).
    split.wrap(Puller, "_verify", "verify_thread_busy")
    # Main thread: each batch's apply, including the wait for its verification.
    split.wrap(Puller, "_apply", "main_apply_including_wait")
    # Main thread: the database transaction of each batch.
    split.wrap(puller_module, "apply_batch", "main_apply_batch_db")

    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    config = load_node_config(Path(args.config))
    node = Node(config, schedule=False)
    _emit({"event": "ready", "maxrss_kib": _maxrss_kib(), "ru_maxrss_kib": _rusage_kib()})

    def one_pull() -> dict[str, Any]:
        split.reset()
        cpu, checks = time.process_time(), _children_cpu_seconds()
        started = time.perf_counter()
        report = node.puller.pull(SERVER)
        wall = time.perf_counter() - started
        cpu, checks = time.process_time() - cpu, _children_cpu_seconds() - checks
        return {
            "split": {**split.snapshot(), "process_cpu": round(cpu, 4), "check_processes_cpu": round(checks, 4)},
            "wall_seconds": wall, "report_seconds": report.seconds, "received": report.received,
            "stored": report.applied.stored, "duplicates": report.applied.duplicates,
            "refused": report.applied.refused, "batches": report.batches, "error": report.error,
            "stale_cursor": report.stale_cursor,
        }

    try:
        for line in sys.stdin:
            command = line.split()
            if not command:
                continue
            if command[0] == "pull":
                result = one_pull()
                # Read right after the pull, so it is this pull's peak.
                _emit({"event": "pulled", **result, "maxrss_kib": _maxrss_kib(), "ru_maxrss_kib": _rusage_kib(),
                       "check_processes_maxrss_kib": _children_hwm_kib()})
            elif command[0] == "noop":
                results = [one_pull() for _ in range(int(command[1]))]
                _emit({"event": "noop", "pulls": results, "maxrss_kib": _maxrss_kib()})
            elif command[0] == "quit":
                break
            else:
                _emit({"event": "error", "message": f"unknown command {command!r}"})
    finally:
        node.stop(grace=0)
        if profiles is not None:
            profiles.dump(Path(args.profile_out))
    _emit({"event": "bye", "maxrss_kib": _maxrss_kib()})
    return 0


# --- role: verify --------------------------------------------------------------------------


def role_verify(args: argparse.Namespace) -> int:
    """The raw verification rate, in its own process so the parent stays small."""
    _emit({"event": "verified", **_raw_verify_rate(args.database_url, Path(args.pki_dir), args.count)})
    return 0


# --- role: serve (only with --profile) -----------------------------------------------------


def role_serve(args: argparse.Namespace) -> int:
    """``exchange node serve`` with the Pull handler profiled (its gRPC handler thread)."""
    from exchange.config import load_node_config
    from exchange.node import server
    from exchange.node.sync import SyncService

    profiles = _Profiles()
    SyncService.pull = profiles.wrap_generator(SyncService.pull)  # type: ignore[method-assign]
    config = load_node_config(Path(args.config))
    try:
        server.run_node(config)
    finally:
        profiles.dump(Path(args.profile_out))
    return 0


# --- the benchmark (parent process) --------------------------------------------------------


class Child:
    """A subprocess that answers JSON lines on stdout; stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, stdin: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._log, cwd=REPO, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s{self._tail()}") from None
        if line is None:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}{self._tail()}")
        return line

    def message(self, timeout: float) -> dict[str, Any]:
        while True:
            line = self.line(timeout).strip()
            if line.startswith("{"):
                value: dict[str, Any] = json.loads(line)
                if value.get("event") == "error":
                    raise RuntimeError(f"{self.name}: {value.get('message')}")
                return value

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def _tail(self) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-30:])
        return f"\n--- last lines of {self.log_path.name} ---\n{tail}" if tail else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            # A command-driven child ends by itself when its stdin closes.
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _this(role: str, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, *extra]


def _fill(tmp: Path, pki_dir: Path, database_url: str, count: int, *, hidden: bool, label: str,
          role: str = "fill") -> float:
    argv = _this(role, "--pki-dir", str(pki_dir), "--database-url", database_url, "--count", str(count))
    if hidden:
        argv.append("--hidden")
    child = Child(f"fill-{label}", argv, tmp / f"fill-{label}.log")
    try:
        done = child.message(timeout=max(600.0, count / 200))
        child.proc.wait(timeout=60)
        if child.proc.returncode != 0:
            raise RuntimeError(f"fill {label} failed with status {child.proc.returncode}")
        return float(done["seconds"])
    finally:
        child.stop()


def _raw_verify_rate(database_url: str, pki_dir: Path, limit: int) -> dict[str, Any]:
    """One thread verifying the same envelopes' signed bytes, with the library and call the
    node verifies with (libsodium, exchange/records/envelope.py): the ceiling of a pull."""
    from nacl.bindings import crypto_sign_open
    from sqlalchemy import text

    from exchange.config import load_manifest
    from exchange.records.envelope import RECORD_TYPE, claimed_originator, pae
    from exchange.store.engine import make_engine
    from exchange.v1 import records_pb2

    manifest = load_manifest(pki_dir / "manifest.toml")
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = [bytes(r[0]) for r in conn.execute(text(
                "SELECT envelope FROM log WHERE payload_type = :t AND NOT purged ORDER BY seq LIMIT :n"),
                {"t": RECORD_TYPE, "n": limit})]
    finally:
        engine.dispose()
    envelopes = [records_pb2.Envelope.FromString(row) for row in rows]
    keys: dict[str, bytes] = {}  # each originator's key, looked up once
    for envelope in envelopes:
        if envelope.key_id not in keys:
            published = manifest.signing_key(claimed_originator(envelope), envelope.key_id)
            assert published is not None
            keys[envelope.key_id] = published.public_key
    items = [(e.signature, e.payload_type, e.payload, keys[e.key_id]) for e in envelopes]
    del envelopes, rows
    started = time.perf_counter()
    for signature, payload_type, payload, key in items:
        crypto_sign_open(signature + pae(payload_type, payload), key)
    seconds = time.perf_counter() - started
    return {"verifications": len(items), "seconds": seconds, "per_second": len(items) / seconds}


def _floor_rate(floor: Path, records: int, postgres_url: str | None) -> float | None:
    """Run the floor script (the project's Python) on ``records`` records; its records/s, or
    None (said on stdout) when the script is absent."""
    if not floor.is_file():
        print(f"floor: absent ({floor} not found): no ratio to the floor", flush=True)
        return None
    argv = [sys.executable, str(floor), "--records", str(records)]
    if postgres_url is not None:
        argv += ["--postgres", postgres_url]
    print(f"floor: {shlex.join(argv)}", flush=True)
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the floor exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    for line in lines[:-1]:
        print(f"floor: {line}", flush=True)
    return float(json.loads(lines[-1])["floor_records_per_second"])


def _describe_split(pull: dict[str, Any]) -> str:
    split, wall = pull.get("split", {}), pull["wall_seconds"]
    n = max(1, pull["received"])

    def part(label: str, seconds: float | None) -> str:
        if seconds is None:
            return f"{label} n/a"
        return f"{label} {seconds:.2f} s ({seconds / wall:.0%}, {seconds / n * 1e6:.0f} us/record)"

    applying = split.get("main_apply_including_wait")
    db = split.get("main_apply_batch_db")
    waiting = None if applying is None or db is None else applying - db
    receiving = None if applying is None else wall - applying
    return "; ".join([
        part("main thread in the batch transaction (apply_batch)", db),
        part("main thread waiting for verification", waiting),
        part("main thread receiving from the stream", receiving),
        part("verification thread busy", split.get("verify_thread_busy")),
        f"process CPU {split.get('process_cpu', 0):.2f} s = {split.get('process_cpu', 0) / wall:.2f} cores "
        f"({split.get('process_cpu', 0) / n * 1e6:.0f} us/record)",
        part("check processes' CPU", split.get("check_processes_cpu")),
        part("serving process CPU (all its threads)", split.get("server_cpu")),
    ])


def _database_urls(tmp: Path, postgres_url: str | None) -> tuple[str, str, list[str]]:
    """The server's and the puller's database: SQLite files, or a schema each in PostgreSQL
    (returned last, to drop afterwards)."""
    if postgres_url is None:
        return f"sqlite:///{tmp / 'jpn' / 'node.db'}", f"sqlite:///{tmp / 'usa' / 'node.db'}", []
    from exchange.store.pgschema import create_schema

    tag = tmp.name.replace("-", "_").lower()
    schemas = [f"{tag}_jpn", f"{tag}_usa"]
    return create_schema(postgres_url, schemas[0]), create_schema(postgres_url, schemas[1]), schemas


def _drop_schemas(postgres_url: str | None, schemas: list[str]) -> None:
    if postgres_url is not None and schemas:
        from exchange.store.pgschema import drop_schemas

        drop_schemas(postgres_url, schemas)


def run_once(
    records: int, *, incremental: bool, profile_dir: Path | None, keep: bool, limits: dict[str, int],
    label: str, switch_interval: float | None = None, postgres_url: str | None = None, prefill: int = 0,
) -> dict[str, Any]:
    """One fresh setup: PKI, filled server, initial pull (and the incremental pulls)."""
    from tests.federation import make_federation

    tmp = Path(tempfile.mkdtemp(prefix=f"sync-bench-{label}-"))
    children: list[Child] = []
    result: dict[str, Any] = {"records": records}
    schemas: list[str] = []
    try:
        # --- setup (not timed) ---------------------------------------------------------------
        federation = make_federation(tmp / "federation")
        pki_dir = federation.pki_dir
        server_dir, puller_dir = tmp / "jpn", tmp / "usa"
        server_dir.mkdir(mode=0o700)  # a node refuses a database folder others can read
        puller_dir.mkdir(mode=0o700)
        server_url, puller_url, schemas = _database_urls(tmp, postgres_url)
        from exchange.store import migrate

        for url, folder in ((server_url, server_dir), (puller_url, puller_dir)):
            migrate.upgrade_url(url, data_dir=folder)  # `exchange db upgrade`
        address = federation.manifest.partner(SERVER).address
        server_toml, puller_toml = tmp / "jpn.toml", tmp / "usa.toml"
        _write_node_toml(server_toml, SERVER, address, pki_dir, server_dir, limits, server_url)
        _write_node_toml(puller_toml, PULLER, "127.0.0.1:0", pki_dir, puller_dir, limits, puller_url)

        if prefill:
            print(f"[{label}] setup: prefilling the puller's store with {prefill:,} records of {OTHER} ...",
                  flush=True)
            seconds = _fill(tmp, pki_dir, puller_url, prefill, hidden=False, label="prefill", role="prefill")
            print(f"[{label}] setup: prefilled in {seconds:.1f} s ({prefill / seconds:,.0f} records/s)", flush=True)
            result["prefill"] = prefill
        print(f"[{label}] setup: filling {records:,} records releasable to {PULLER} ...", flush=True)
        fill_seconds = _fill(tmp, pki_dir, server_url, records, hidden=False, label="initial")
        print(f"[{label}] setup: filled in {fill_seconds:.1f} s ({records / fill_seconds:,.0f} records/s)",
              flush=True)

        # Raw verification over the same envelopes, while nothing else runs.
        verifier = Child("verify", _this("verify", "--database-url", server_url, "--pki-dir", str(pki_dir),
                                         "--count", str(records)), tmp / "verify.log")
        try:
            raw = verifier.message(timeout=max(600.0, records / 100))
        finally:
            verifier.stop()
        result["raw_verify"] = raw
        print(f"[{label}] raw Ed25519 verification (1 thread, same {raw['verifications']:,} envelopes): "
              f"{raw['per_second']:,.0f} verifications/s", flush=True)

        if profile_dir is not None:
            serve_argv = _this("serve", "--config", str(server_toml),
                               "--profile-out", str(profile_dir / f"server-{label}.pstats"))
        else:
            serve_argv = [sys.executable, "-m", "exchange.cli.main", "node", "serve", str(server_toml),
                          "--pki-dir", str(pki_dir), "--data-dir", str(server_dir)]
        server = Child("server", serve_argv, tmp / "server.log")
        children.append(server)
        listening = server.line(timeout=STARTUP_TIMEOUT)
        if "listening" not in listening:
            raise RuntimeError(f"server said {listening!r}")
        result["server_command"] = shlex.join(serve_argv)

        pull_argv = _this("pull", "--config", str(puller_toml))
        if switch_interval:
            pull_argv += ["--switch-interval", str(switch_interval)]
        if profile_dir is not None:
            pull_argv += ["--profile-out", str(profile_dir / f"puller-{label}.pstats")]
        puller = Child("puller", pull_argv, tmp / "puller.log", stdin=True)
        children.append(puller)
        ready = puller.message(timeout=STARTUP_TIMEOUT)
        result["puller_command"] = shlex.join(pull_argv)
        result["puller_rss_before_pull_kib"] = ready["maxrss_kib"]

        # --- initial pull (timed inside the puller process) ---------------------------------
        server_cpu = _cpu_seconds(server.proc.pid)
        puller.send("pull")
        initial = puller.message(timeout=max(900.0, records / 50))
        server_cpu_after = _cpu_seconds(server.proc.pid)
        if server_cpu is not None and server_cpu_after is not None:
            initial["split"]["server_cpu"] = round(server_cpu_after - server_cpu, 4)
        if initial["error"] or initial["received"] != records or initial["stored"] != records:
            raise RuntimeError(f"initial pull incomplete: {initial}")
        rate = initial["received"] / initial["wall_seconds"]
        result["initial_pull"] = {**initial, "records_per_second": rate}
        result["ratio_to_raw_verify"] = rate / raw["per_second"]
        result["puller_peak_rss_kib"] = initial["maxrss_kib"]
        result["puller_ru_maxrss_kib"] = initial["ru_maxrss_kib"]
        result["server_peak_rss_after_initial_kib"] = _vm_hwm_kib(server.proc.pid)
        print(f"[{label}] initial pull: {initial['received']:,} records in {initial['wall_seconds']:.2f} s "
              f"= {rate:,.0f} records/s ({initial['batches']} batches)", flush=True)
        print(f"[{label}] initial pull, where the puller's time goes: {_describe_split(initial)}", flush=True)
        print(f"[{label}] sync rate / raw verification rate: {result['ratio_to_raw_verify']:.2f} "
              f"(target >= {TARGET_RATIO_POSTGRES if postgres_url else TARGET_RATIO})", flush=True)
        print(f"[{label}] puller peak RSS after the initial pull: {initial['maxrss_kib'] / 1024:,.1f} MiB "
              f"(before: {ready['maxrss_kib'] / 1024:,.1f} MiB; ru_maxrss, inherited from this parent across "
              f"fork/exec: {initial['ru_maxrss_kib'] / 1024:,.1f} MiB)", flush=True)
        checkers = initial.get("check_processes_maxrss_kib") or []
        result["check_processes_peak_rss_kib"] = checkers
        print(f"[{label}] check processes' peak RSS: "
              f"{', '.join(f'{kib / 1024:,.1f} MiB' for kib in checkers) or 'none started'}", flush=True)

        if incremental:
            # --- nothing changed: median of 5 -------------------------------------------------
            puller.send("noop 5")
            noop = puller.message(timeout=120)
            times_ms = [p["wall_seconds"] * 1000 for p in noop["pulls"]]
            if any(p["received"] or p["error"] for p in noop["pulls"]):
                raise RuntimeError(f"a pull with nothing new received something: {noop}")
            result["noop_pull_ms"] = {"median": statistics.median(times_ms), "all": times_ms}
            print(f"[{label}] incremental pull, nothing changed: median {statistics.median(times_ms):.1f} ms "
                  f"of {', '.join(f'{t:.1f}' for t in times_ms)} (target < {TARGET_NOOP_MS:.0f} ms)", flush=True)

            # --- N entries the puller may not see, appended while the server runs (WAL) -------
            print(f"[{label}] setup: appending {records:,} records released only to {OTHER} ...", flush=True)
            _fill(tmp, pki_dir, server_url, records, hidden=True, label="hidden")
            puller.send("pull")
            hidden = puller.message(timeout=600)
            if hidden["error"] or hidden["received"]:
                raise RuntimeError(f"pull after the hidden entries: {hidden}")
            result["hidden_pull_ms"] = hidden["wall_seconds"] * 1000
            print(f"[{label}] pull after {records:,} entries not releasable to {PULLER}: "
                  f"{hidden['wall_seconds'] * 1000:.1f} ms (target < {TARGET_HIDDEN_MS:.0f} ms)", flush=True)
            # The cursor moved past them: the next pull is cheap again.
            puller.send("pull")
            after = puller.message(timeout=120)
            result["pull_after_hidden_again_ms"] = after["wall_seconds"] * 1000

        result["server_peak_rss_kib"] = _vm_hwm_kib(server.proc.pid)  # before stopping it
        print(f"[{label}] server peak RSS (VmHWM): {(result['server_peak_rss_kib'] or 0) / 1024:,.1f} MiB",
              flush=True)
        puller.send("quit")
        puller.message(timeout=60)
        return result
    finally:
        for child in reversed(children):
            child.stop()
        if keep:
            print(f"[{label}] kept {tmp}" + (f" and schemas {', '.join(schemas)}" if schemas else ""), flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            _drop_schemas(postgres_url, schemas)


def _print_profiles(profile_dir: Path, label: str) -> None:
    import pstats

    for side in ("puller", "server"):
        path = profile_dir / f"{side}-{label}.pstats"
        if not path.exists():
            continue
        print(f"\n=== {side} profile ({path}), top 25 by own time ===", flush=True)
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
        print(f"=== {side} profile, top 25 by cumulative time ===", flush=True)
        stats.sort_stats("cumulative").print_stats(25)


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def main_bench(args: argparse.Namespace) -> int:
    command = shlex.join([sys.executable, *sys.argv])
    print(f"command: {command}", flush=True)
    print(f"cwd: {os.getcwd()}  cpus: {os.cpu_count()}  python: {sys.version.split()[0]}", flush=True)
    limits = {"pull_batch_entries": args.batch, "pull_max_entries": max(1_000_000, 4 * args.records)}
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        print("profiling: timings below include cProfile overhead", flush=True)

    summary: dict[str, Any] = {"command": command, "limits": limits, "switch_interval": args.switch_interval,
                               "storage": "postgresql" if args.postgres else "sqlite"}
    print(f"storage: {summary['storage']}", flush=True)
    if args.memory_check:
        small = run_once(10_000, incremental=False, profile_dir=profile_dir, keep=args.keep, limits=limits,
                         label="10k", switch_interval=args.switch_interval, postgres_url=args.postgres)
        large = run_once(100_000, incremental=False, profile_dir=profile_dir, keep=args.keep, limits=limits,
                         label="100k", switch_interval=args.switch_interval, postgres_url=args.postgres)
        ratio = large["puller_peak_rss_kib"] / small["puller_peak_rss_kib"]
        print()
        print(f"puller peak RSS, 10,000 records:  {small['puller_peak_rss_kib'] / 1024:,.1f} MiB")
        print(f"puller peak RSS, 100,000 records: {large['puller_peak_rss_kib'] / 1024:,.1f} MiB")
        print(f"ratio 100k / 10k: {ratio:.2f} (target <= {TARGET_MEMORY_RATIO}) "
              f"{'OK' if ratio <= TARGET_MEMORY_RATIO else 'MISSED'}")
        print(f"server peak RSS: 10k {(small['server_peak_rss_kib'] or 0) / 1024:,.1f} MiB, "
              f"100k {(large['server_peak_rss_kib'] or 0) / 1024:,.1f} MiB")
        summary.update({
            "mode": "memory-check",
            "puller_peak_rss_mib": {"10000": _mib(small["puller_peak_rss_kib"]),
                                    "100000": _mib(large["puller_peak_rss_kib"])},
            "server_peak_rss_mib": {"10000": _mib(small["server_peak_rss_kib"]),
                                    "100000": _mib(large["server_peak_rss_kib"])},
            "puller_rss_ratio": round(ratio, 3),
            "targets_met": {"memory_ratio": ratio <= TARGET_MEMORY_RATIO},
            "runs": [small, large],
        })
        if profile_dir is not None:
            for label in ("10k", "100k"):
                _print_profiles(profile_dir, label)
    else:
        # The ruler first, on a quiet machine, before this run's own setup and pull.
        floor = _floor_rate(Path(args.floor), args.records, args.postgres)
        r = run_once(args.records, incremental=True, profile_dir=profile_dir, keep=args.keep, limits=limits,
                     label="main", switch_interval=args.switch_interval, postgres_url=args.postgres,
                     prefill=args.prefill)
        rate = r["initial_pull"]["records_per_second"]
        target = TARGET_RATIO_POSTGRES if args.postgres else TARGET_RATIO
        floor_target = TARGET_FLOOR_RATIO_POSTGRES if args.postgres else TARGET_FLOOR_RATIO
        met = {
            "ratio": r["ratio_to_raw_verify"] >= target,
            "noop_pull": r["noop_pull_ms"]["median"] < TARGET_NOOP_MS,
            "hidden_pull": r["hidden_pull_ms"] < TARGET_HIDDEN_MS,
        }
        print()
        print(f"records:                              {args.records:,}")
        print(f"puller's store before the pull:       {args.prefill:,} records")
        print(f"initial pull:                         {rate:,.0f} records/s")
        print(f"raw verification (1 thread):          {r['raw_verify']['per_second']:,.0f} verifications/s")
        if floor is not None:
            print(f"floor (same run):                     {floor:,.0f} records/s")
            print(f"initial pull / floor:                 {rate / floor:.2f} (target >= {floor_target})")
        else:
            print("initial pull / floor:                 - (no floor)")
        print(f"sync / raw verification:              {r['ratio_to_raw_verify']:.2f} (target >= {target}) "
              f"{'OK' if met['ratio'] else 'MISSED'}")
        print(f"puller peak RSS:                      {r['puller_peak_rss_kib'] / 1024:,.1f} MiB")
        print(f"server peak RSS:                      {(r['server_peak_rss_kib'] or 0) / 1024:,.1f} MiB")
        print(f"incremental pull, nothing new:        {r['noop_pull_ms']['median']:.1f} ms median of 5 "
              f"(target < {TARGET_NOOP_MS:.0f}) {'OK' if met['noop_pull'] else 'MISSED'}")
        print(f"pull after {args.records:,} hidden entries: {r['hidden_pull_ms']:.1f} ms "
              f"(target < {TARGET_HIDDEN_MS:.0f}) {'OK' if met['hidden_pull'] else 'MISSED'}")
        summary.update({
            "mode": "sync",
            "records": args.records,
            "prefill": args.prefill,
            "initial_pull_records_per_second": round(rate, 1),
            "initial_pull_seconds": round(r["initial_pull"]["wall_seconds"], 3),
            "raw_verify_per_second": round(r["raw_verify"]["per_second"], 1),
            "sync_to_raw_verify_ratio": round(r["ratio_to_raw_verify"], 3),
            "puller_peak_rss_mib": _mib(r["puller_peak_rss_kib"]),
            "puller_ru_maxrss_mib": _mib(r["puller_ru_maxrss_kib"]),
            "server_peak_rss_mib": _mib(r["server_peak_rss_kib"]),
            "check_processes_peak_rss_mib": [_mib(kib) for kib in r["check_processes_peak_rss_kib"]],
            "noop_pull_median_ms": round(r["noop_pull_ms"]["median"], 2),
            "noop_pull_ms": [round(t, 2) for t in r["noop_pull_ms"]["all"]],
            "hidden_pull_ms": round(r["hidden_pull_ms"], 2),
            "floor_records_per_second": floor,
            "floor_ratio": round(rate / floor, 3) if floor else None,
            "pull_after_hidden_again_ms": round(r["pull_after_hidden_again_ms"], 2),
            "targets_met": met,
            "server_command": r["server_command"],
            "puller_command": r["puller_command"],
        })
        if profile_dir is not None:
            _print_profiles(profile_dir, "main")
    print(json.dumps(summary, sort_keys=True))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from exchange.config import Limits

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records to pull (default 100,000)")
    parser.add_argument("--memory-check", action="store_true",
                        help="initial pull at 10,000 and at 100,000 records; compare the puller's peak RSS")
    parser.add_argument("--batch", type=int, default=Limits().pull_batch_entries,
                        help="[limits] pull_batch_entries of both nodes (default: the default limit)")
    parser.add_argument("--profile", metavar="DIR",
                        help="write cProfile stats of the puller and the server to DIR and print the top")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (for debugging)")
    parser.add_argument("--postgres", metavar="URL", nargs="?", const="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="both nodes on PostgreSQL, a schema each in the database URL (default "
                             "postgresql+psycopg://postgres@127.0.0.1:5432/test); without it, SQLite files")
    parser.add_argument("--switch-interval", type=float, metavar="SECONDS",
                        help="experiment: sys.setswitchinterval() in the puller process (Python's default 0.005)")
    parser.add_argument("--floor", metavar="SCRIPT", default=str(DEFAULT_FLOOR),
                        help="the floor script run before the pull, as the ruler (default: "
                             "bench/floor_pull.py in the 'shared' folder beside the repository; "
                             "skipped, and said, when absent)")
    parser.add_argument("--prefill", type=int, default=0, metavar="N",
                        help="store N records (of another partner) in the puller's database before the "
                             "pull: the cost of a pull as the store grows (compare with a run without)")
    # Internal: the subprocesses this script starts.
    parser.add_argument("--role", choices=("fill", "prefill", "pull", "serve", "verify"), help=argparse.SUPPRESS)
    parser.add_argument("--pki-dir", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hidden", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is None and args.records <= 0:
        parser.error("--records must be positive")
    if args.prefill < 0:
        parser.error("--prefill must be 0 or more")
    if args.prefill and args.memory_check:
        parser.error("--prefill is for a single run, not --memory-check")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "fill":
        return role_fill(args)
    if args.role == "prefill":
        return role_prefill(args)
    if args.role == "pull":
        return role_pull(args)
    if args.role == "verify":
        return role_verify(args)
    if args.role == "serve":
        return role_serve(args)
    return main_bench(args)


if __name__ == "__main__":
    sys.exit(main())
