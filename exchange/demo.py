"""`exchange demo`: one agency's node, end to end, on real parts.

Makes a throwaway federation PKI, starts JPN-NPA's node as a separate process
(mutual TLS on loopback, SQLite), submits the sample records in
nodes/JPN-NPA/samples as an analyst, and queries them back as two liaison
officers with different clearances, saying what it does at each step. It stops
the node it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exchange.cli.render import Shown, banner, record_lines, table_lines
from exchange.client import Client, load_profile
from exchange.errors import ConfigError, ExchangeError, NotFound, TransportError
from exchange.pki import init_federation
from exchange.v1 import query_pb2, submission_pb2

AGENCY = "JPN-NPA"
ANALYST, LIAISON, JUNIOR = "sato", "suzuki", "ito"
START_TIMEOUT = 30.0  # seconds for the node to answer


def say(text: str = "") -> None:
    print(text, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_nodes_dir(given: str | None) -> Path:
    candidates = [Path(given)] if given else [Path("nodes"), Path(__file__).resolve().parent.parent / "nodes"]
    for candidate in candidates:
        if (candidate / "federation.toml").exists():
            return candidate
    raise ConfigError("cannot find nodes/federation.toml (run from the repository or pass --nodes DIR)")


def prepare(nodes_dir: Path, work: Path) -> dict[str, int]:
    """Copy nodes/ into ``work`` with free loopback ports, then make the PKI there."""
    copy = work / "nodes"
    shutil.copytree(nodes_dir, copy)
    template = (copy / "federation.toml").read_text(encoding="utf-8")
    ports: dict[str, int] = {}
    for partner in tomllib.loads(template)["partners"]:
        code = partner["code"]
        ports[code] = _free_port()
        address = f"127.0.0.1:{ports[code]}"
        template = template.replace(f'address = "{partner["address"]}"', f'address = "{address}"')
        node_toml = copy / code / "node.toml"
        if node_toml.exists():
            text = node_toml.read_text(encoding="utf-8")
            listen = tomllib.loads(text)["listen"]
            node_toml.write_text(text.replace(f'"{listen}"', f'"{address}"'), encoding="utf-8")
    (copy / "federation.toml").write_text(template, encoding="utf-8")
    init_federation(copy, work / "pki")
    return ports


@contextmanager
def node_process(work: Path, agency: str) -> Iterator[subprocess.Popen[bytes]]:
    log = (work / f"{agency}.log").open("wb")
    command = [
        sys.executable, "-m", "exchange.cli.main", "node", "serve", str(work / "nodes" / agency / "node.toml"),
        "--pki-dir", str(work / "pki"), "--data-dir", str(work / "var" / agency),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def wait_until_serving(client: Client, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise TransportError(f"the node exited with code {process.returncode}; see {log}")
        try:
            client.call(client.search, query_pb2.SearchRequest(page_size=1))
            return
        except TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _records(response: query_pb2.SearchResponse) -> list[Shown]:
    return [Shown.from_held(h) for h in response.records]


def show_search(client: Client, who: str, request: query_pb2.SearchRequest, what: str) -> list[Shown]:
    shown = _records(client.call(client.search, request))
    say(f"  {who} searches {what}: {len(shown)} record(s)")
    if shown:
        for line in [banner(s.record for s in shown), *table_lines(shown), banner(s.record for s in shown)]:
            say("    " + line)
    return shown


def story(work: Path, nodes_dir: Path) -> None:
    samples = sorted((nodes_dir / AGENCY / "samples").glob("*.json"))
    say(f"1. Making a throwaway federation PKI in {work / 'pki'} (one CA per agency, node and user")
    say("   certificates, Ed25519 record-signing keys, the complete manifest).")
    prepare(nodes_dir, work)
    profiles = work / "pki" / AGENCY / "users"
    say(f"2. Starting {AGENCY}'s node as a separate process: gRPC over mutual TLS on loopback, SQLite (WAL).")
    with node_process(work, AGENCY) as process, \
            Client(load_profile(profiles / f"{ANALYST}.profile.toml")) as analyst, \
            Client(load_profile(profiles / f"{LIAISON}.profile.toml")) as liaison, \
            Client(load_profile(profiles / f"{JUNIOR}.profile.toml")) as junior:
        wait_until_serving(analyst, process, work / f"{AGENCY}.log")
        say(f"   {AGENCY} node is serving.")
        say(f"3. Analyst {ANALYST} submits {len(samples)} sample records; the node signs each as {AGENCY}.")
        from exchange.cli.drafts import draft_from_json

        receipts = []
        for path in samples:
            draft, reference = draft_from_json(json.loads(path.read_text(encoding="utf-8")))
            receipt = analyst.call(analyst.submit, submission_pb2.SubmitRequest(draft=draft, reference=reference))
            receipts.append(receipt)
            say(f"   {path.name}: {receipt.ref.originator}/{receipt.ref.record_id} v{receipt.version} "
                f"({draft.marking.classification}, TLP:{draft.marking.tlp})")
        draft, reference = draft_from_json(json.loads(samples[0].read_text(encoding="utf-8")))
        again = analyst.call(analyst.submit, submission_pb2.SubmitRequest(draft=draft, reference=reference))
        say(f"   Resubmitting {samples[0].name} (same reference) creates nothing: created={again.created}.")
        say(f"4. Liaison officer {LIAISON} (cleared SECRET) queries what {AGENCY} holds.")
        show_search(liaison, LIAISON, query_pb2.SearchRequest(text="技術"), "for the word 技術")
        show_search(liaison, LIAISON, query_pb2.SearchRequest(
            observable=query_pb2.ObservableQuery(type="platform_handle", value="@yuki_webworks")),
            "for platform handle @yuki_webworks (stored full-width as ＠ＹＵＫＩ＿ＷＥＢＷＯＲＫＳ)")
        held = liaison.call(liaison.get, query_pb2.GetRequest(ref=receipts[-1].ref))
        shown = Shown.from_held(held)
        say(f"   {LIAISON} gets {receipts[-1].ref.record_id} by id:")
        for line in [banner([shown.record]), *record_lines(shown), banner([shown.record])]:
            say("    " + line)
        say(f"5. Liaison officer {JUNIOR} (cleared RESTRICTED only) runs the same search:")
        show_search(junior, JUNIOR, query_pb2.SearchRequest(), "for everything")
        above = next(r for r, path in zip(receipts, samples, strict=True) if path.name == "sns-approach.json")
        say("   Records above the officer's clearance are not shown, and asking for the CONFIDENTIAL one")
        say(f"   by id ({above.ref.record_id})")
        try:
            junior.call(junior.get, query_pb2.GetRequest(ref=above.ref))
        except NotFound as error:
            say(f"   answers exactly as for a record that does not exist: {error}")
        else:
            raise ExchangeError("the RESTRICTED officer was shown a CONFIDENTIAL record")
    say("6. The node was stopped with SIGTERM. Done: every record was signed, stored verbatim, and")
    say("   disclosed only through the one decision point.")


def run_demo(nodes: str | None = None, keep: bool = False) -> int:
    nodes_dir = find_nodes_dir(nodes)
    work = Path(tempfile.mkdtemp(prefix="exchange-demo-"))
    try:
        story(work, nodes_dir)
    finally:
        if keep:
            say(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_demo())
