"""`exchange demo` as a user runs it: a subprocess, judged by its outcome.

The demo checks itself against its own expectations; these tests check it
against expectations written here, from docs/scenarios.md and docs/design.md, so an
edit that makes both the federation and the demo's expectations wrong fails.
Each run starts four real node processes, so the whole module is slow.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.backends import selected
from tests.buf import installed_buf

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "exchange.cli.main", "demo"]
RUN_TIMEOUT = 120.0  # seconds; the demo itself takes well under a minute
CLASSIFICATIONS = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET"]

# Who should hold what at the end, by sample name; derived by hand from the
# markings in nodes/*/samples and the [[peers]] topology in nodes/*/node.toml.
EXPECTED = {
    "JPN-NPA": {"sns-approach", "dprk-it-workers", "insider-email", "lithography-parts", "front-company",
                "procurement-agent", "forwarder-domain", "ip-disclosure-demand", "headhunter-approach",
                "fake-recruiter-uk"},
    "USA-DTSF": {"sns-approach", "dprk-it-workers", "lithography-parts", "front-company", "procurement-agent",
                 "forwarder-domain", "ip-disclosure-demand", "headhunter-approach", "fake-recruiter-uk"},
    "KOR-KNPA": {"sns-approach", "dprk-it-workers", "procurement-agent", "forwarder-domain",
                 "ip-disclosure-demand", "headhunter-approach", "fake-recruiter-uk"},
    "GBR-NPSA": {"dprk-it-workers", "forwarder-domain", "ip-disclosure-demand", "fake-recruiter-uk"},
}


@dataclass
class DemoRun:
    """A demo subprocess in its own session, its output read line by line as it comes."""

    args: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def start(self) -> DemoRun:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Its own session, so a timeout can kill the demo and its nodes together.
        self.process = subprocess.Popen([*DEMO, *self.args], cwd=REPO, env=env, text=True, encoding="utf-8",
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, starts_with: str, timeout: float = RUN_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.strip().startswith(starts_with):
                return line
        self.kill()
        pytest.fail(f"the demo never printed {starts_with!r}; output:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = RUN_TIMEOUT) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("the demo did not finish in time; output:\n" + "\n".join(self.lines))
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        """Only after a failure: the demo and the nodes it listed (each node has a process group of its own)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in node_pids(self.lines).values():
            if is_our_node(pid):
                os.kill(pid, signal.SIGKILL)

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.lines[-1])
        return data

    def output(self) -> str:
        return "\n".join(self.lines)

    def kept(self) -> Path | None:
        """The work folder the demo says it kept (``--keep``), if any."""
        for line in self.lines:
            if line.strip().startswith("Kept /"):
                return Path(line.strip().removeprefix("Kept ").split(" (", 1)[0])
        return None


def node_pids(lines: list[str]) -> dict[str, int]:
    """The node processes as step 2 lists them: ``JPN-NPA   pid 1234   port ...``."""
    pids = {}
    for line in lines:
        words = line.split()
        if len(words) > 2 and words[0] in EXPECTED and words[1] == "pid":
            pids[words[0]] = int(words[2])
    return pids


def is_our_node(pid: int) -> bool:
    # By command line, not just the pid: a pid reused by something else is not our node.
    try:
        return b"node\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def assert_gone(pids: dict[str, int], ports: dict[str, int] | None = None) -> None:
    for agency, pid in pids.items():
        assert not is_our_node(pid), f"{agency}'s node (pid {pid}) is still running"
    for agency, port in (ports or {}).items():
        with socket.socket() as s:
            accepted = s.connect_ex(("127.0.0.1", port)) == 0
        assert not accepted, f"{agency}'s port {port} still accepts connections"


def classification(name: str) -> str:
    (path,) = REPO.glob(f"nodes/*/samples/{name}.json")
    marking: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))["marking"]
    return marking["classification"]


@pytest.fixture(scope="module", params=selected())
def finished(request: pytest.FixtureRequest) -> Iterator[DemoRun]:
    """One whole demo per storage back end (``exchange demo --postgres URL`` for PostgreSQL)."""
    # The work folder is kept, to look at the files the demo's nodes made.
    args = ["--keep"]
    if request.param == "postgresql":
        args += ["--postgres", request.getfixturevalue("postgres").server_url]
    run = DemoRun(args).start()
    try:
        run.finish()
        yield run
    finally:
        run.kill()
        kept = run.kept()
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)


def test_the_demo_succeeds_and_says_so(finished: DemoRun) -> None:
    assert finished.process is not None
    assert finished.process.returncode == 0, finished.output()
    summary = finished.summary()
    assert summary["converged"] is True and summary["problems"] == []
    assert summary["seconds"] < 60


def test_each_liaison_sees_exactly_what_was_released_to_its_agency(finished: DemoRun) -> None:
    holdings = finished.summary()["holdings"]
    assert {agency: set(held) for agency, held in holdings.items()} == EXPECTED


def test_the_orcon_record_reaches_jpn_npa_and_no_one_else(finished: DemoRun) -> None:
    holdings = finished.summary()["holdings"]
    assert {a for a, held in holdings.items() if "front-company" in held} == {"USA-DTSF", "JPN-NPA"}
    assert holdings["JPN-NPA"]["front-company"]["received_from"] == "USA-DTSF"


def test_amber_strict_reaches_only_direct_peers_of_its_originator(finished: DemoRun) -> None:
    holdings = finished.summary()["holdings"]
    # KOR-KNPA's record is released to GBR-NPSA too, but GBR-NPSA pulls only from USA-DTSF.
    assert {a for a, held in holdings.items() if "headhunter-approach" in held} == {"KOR-KNPA", "JPN-NPA", "USA-DTSF"}
    for agency in ("JPN-NPA", "USA-DTSF"):
        assert holdings[agency]["headhunter-approach"]["received_from"] == "KOR-KNPA"


def test_gbr_npsa_holds_nothing_above_its_accreditation(finished: DemoRun) -> None:
    held = finished.summary()["holdings"]["GBR-NPSA"]
    too_high = [n for n in held if CLASSIFICATIONS.index(classification(n)) > CLASSIFICATIONS.index("CONFIDENTIAL")]
    assert too_high == []
    # What it does hold from the trilateral partners came through its only peer.
    assert held["dprk-it-workers"]["received_from"] == "USA-DTSF"
    assert held["ip-disclosure-demand"]["received_from"] == "USA-DTSF"


def test_the_revision_and_the_retraction_reach_every_holder(finished: DemoRun) -> None:
    holdings = finished.summary()["holdings"]
    for agency in EXPECTED:
        assert holdings[agency]["dprk-it-workers"]["version"] == 2
        assert holdings[agency]["forwarder-domain"]["version"] == 2
        assert holdings[agency]["forwarder-domain"]["status"] == "retracted"
    assert "(retracted)" in finished.output()


def test_a_draft_is_held_until_jpn_npas_disclosure_officer_approves_it(finished: DemoRun) -> None:
    output = finished.output()
    # Held at submission, and through the first convergence (which expects it nowhere, for
    # over two pull rounds); released by the officer, then at JPN-NPA and USA-DTSF only.
    assert "HELD for release review as draft" in output
    assert "JPN-NPA's disclosure officer tanaka reviews it" in output and "released as v1" in output
    holdings = finished.summary()["holdings"]
    assert {a for a, held in holdings.items() if "lithography-parts" in held} == {"JPN-NPA", "USA-DTSF"}


def test_a_korean_record_is_read_in_english_beside_the_original(finished: DemoRun) -> None:
    output = finished.output()
    assert "Title [en]:    Demand to disclose intellectual property" in output
    assert "Title:         투자 계약 체결 전 지식재산 공개 요구" in output


def test_a_restricted_liaison_sees_nothing_above_restricted(finished: DemoRun) -> None:
    seen = finished.summary()["junior_sees"]["JPN-NPA/ito"]
    assert seen and all(classification(n) in ("UNCLASSIFIED", "RESTRICTED") for n in seen)


def test_output_carries_classification_banners(finished: DemoRun) -> None:
    output = finished.output()
    assert "==== SECRET // ORCON // REL TO JPN-NPA // TLP:RED ====" in output  # JPN-NPA's view
    assert "==== RESTRICTED // REL TO GBR-NPSA, JPN-NPA, KOR-KNPA, USA-DTSF // TLP:GREEN ====" in output


def test_the_demos_databases_and_keys_are_private(finished: DemoRun) -> None:
    kept = finished.kept()
    assert kept is not None, finished.output()
    keys = list(kept.rglob("*.key"))
    assert keys and {k: stat.S_IMODE(k.stat().st_mode) for k in keys} == dict.fromkeys(keys, 0o600)
    var = kept / "var"
    if not var.exists():  # PostgreSQL: every node's tables are in a schema of its own, no file at all
        assert not list(kept.rglob("node.db*"))
        return
    folders = sorted(var.iterdir())
    assert [f.name for f in folders] == sorted(EXPECTED)
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        files = list(folder.glob("node.db*"))
        assert folder / "node.db" in files
        assert {f: stat.S_IMODE(f.stat().st_mode) for f in files} == dict.fromkeys(files, 0o600)


def test_no_node_is_left_running(finished: DemoRun) -> None:
    nodes = finished.summary()["nodes"]
    assert set(nodes) == set(EXPECTED)
    # Stopped by SIGTERM, cleanly (-9: not drained within the demo's STOP_TIMEOUT; 1: an error on the way out).
    failed = {agency: node["exit_code"] for agency, node in nodes.items() if node["exit_code"] != 0}
    kept = finished.kept()
    logs = {agency: (kept / f"{agency}.log").read_text(errors="replace")[-2000:]
            for agency in failed if kept is not None and (kept / f"{agency}.log").exists()}
    assert failed == {}, (failed, logs)
    assert_gone({a: n["pid"] for a, n in nodes.items()}, {a: n["port"] for a, n in nodes.items()})


def test_keep_running_waits_for_sigterm_then_stops_the_nodes() -> None:
    run = DemoRun(["--keep-running"]).start()
    try:
        run.wait_for_line("The federation keeps running")
        command = run.wait_for_line(f"{Path(sys.executable).with_name('exchange')}", timeout=5)
        assert " query --profile " in command and command.rstrip().endswith("--include-retracted")
        buf = installed_buf()  # the demo names node_modules/.bin/buf once `make install` put it there
        curl = run.wait_for_line("node_modules/.bin/buf curl" if buf else "buf curl", timeout=5)
        run.wait_for_line("Node logs:", timeout=5)
        if buf is not None:  # the printed command, run as printed, against the demo's node
            listed = subprocess.run(shlex.split(curl), cwd=REPO, capture_output=True, text=True, timeout=60)
            assert listed.returncode == 0, listed.stderr
            assert {"exchange.v1.QueryService", "exchange.v1.SubmissionService", "exchange.v1.SyncService",
                    "exchange.v1.LiaisonService", "grpc.reflection.v1.ServerReflection"} <= set(listed.stdout.split())
        assert run.process is not None
        run.process.send_signal(signal.SIGTERM)
        assert run.finish() == 0, run.output()
    finally:
        run.kill()
    nodes = run.summary()["nodes"]
    assert_gone({a: n["pid"] for a, n in nodes.items()}, {a: n["port"] for a, n in nodes.items()})


def test_ctrl_c_during_the_story_stops_every_node() -> None:
    run = DemoRun().start()
    try:
        run.wait_for_line("3. Analysts submit")
        pids = node_pids(run.lines)
        assert set(pids) == set(EXPECTED)
        assert run.process is not None
        run.process.send_signal(signal.SIGINT)  # to the demo only: it must stop the nodes itself
        assert run.finish() == 130, run.output()
    finally:
        run.kill()
    assert_gone(pids)


# --- the demo's own bookkeeping, in-process (no nodes) -----------------------------------------


def test_the_demos_expectations_agree_with_this_files() -> None:
    from exchange.demo.story import expected_holdings

    expected = expected_holdings(EXPECTED, changed=True)
    assert {agency: set(held) for agency, held in expected.items()} == EXPECTED


def test_a_federation_that_does_not_converge_is_reported_record_by_record() -> None:
    from exchange.demo.story import Seen, differences, expected_holdings

    expected = expected_holdings(EXPECTED, changed=True)
    observed = {a: {n: Seen(v, s, a) for n, (v, s) in held.items()} for a, held in expected.items()}
    del observed["GBR-NPSA"]["dprk-it-workers"]
    observed["GBR-NPSA"]["headhunter-approach"] = Seen(1, "active", "USA-DTSF")
    observed["KOR-KNPA"]["forwarder-domain"] = Seen(1, "active", "USA-DTSF")
    assert sorted(differences(observed, expected)) == [
        "GBR-NPSA holds headhunter-approach, which should never reach it",
        "GBR-NPSA misses dprk-it-workers (v2, active)",
        "KOR-KNPA holds forwarder-domain v1 active, not v2 retracted",
    ]


def test_the_demo_package_does_not_import_the_cli() -> None:
    # The CLI's `demo` subcommand imports the demo, never the other way round (no cycle).
    # A fresh interpreter, so that modules other tests imported do not count.
    code = "import sys, exchange.demo; print(sorted(m for m in sys.modules if m.split('.')[:2] == ['exchange', 'cli']))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert found.stdout.strip() == "[]", found.stdout
