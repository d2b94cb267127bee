"""TAXII 2.1 paging: a liaison officer's taxii2-client pages a whole collection, 1,000 objects a page.

A real node (JPN-NPA, SQLite or PostgreSQL with ``--postgres``) with its TAXII server on
loopback, mutual TLS, the OASIS client (taxii2-client) with the officer's certificate. The
node holds partners' records, one STIX object each (a threat-actor), nine in ten released to
JPN-NPA and one in ten not (so pages pass records through the disclosure decision, as in
life). Prints objects/s over the whole collection and the latency of the first and the last
page: paging keyed on log order (exchange/node/taxii/feed.py) should make the last page cost
what the first does.

    .venv/bin/python bench/taxii_bench.py --objects 100000

Aims (issue 12): first and last page within 2x of each other, >= 2,000 objects/s. The node
and the client share this process (and its interpreter lock), so the figure is a floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from taxii2client.v21 import as_pages  # noqa: E402

from exchange.config import TaxiiConfig, default_collection  # noqa: E402
from exchange.node.server import Node  # noqa: E402
from exchange.v1 import records_pb2  # noqa: E402
from tests.backends import Backend  # noqa: E402
from tests.federation import Federation, make_federation  # noqa: E402
from tests.fill import fill  # noqa: E402
from tests.taxii_client import collection, user_connection  # noqa: E402

NODE = "JPN-NPA"
SHARED = 11  # the shared objects every collection starts with (identity, extension, 5 TLP, 4 agencies)
TARGET_RATIO = 2.0
TARGET_RATE = 2_000.0


def run(objects: int, page: int, root: Path, postgres: str | None) -> dict[str, float]:
    federation = make_federation(root / "federation")
    if postgres:
        federation.backend = Backend("postgresql", server_url=postgres)
    try:
        return _run(federation, objects, page, root)
    finally:
        if postgres:
            federation.backend.drop_schemas()  # the schema this run made


def _run(federation: Federation, objects: int, page: int, root: Path) -> dict[str, float]:
    federation.backend.migrated(root / "jpn")
    config = dataclasses.replace(federation.node_config(NODE, root / "jpn"),
                                 listen=federation.manifest.partner(NODE).address,
                                 taxii=TaxiiConfig("127.0.0.1:0", (default_collection(NODE),)))
    node = Node(config, manifest=federation.manifest, schedule=False)
    node.start()
    try:
        shown = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=[NODE, "USA-DTSF"], tlp="GREEN")
        hidden = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["KOR-KNPA"], tlp="AMBER")
        visible_records = max(0, objects - SHARED)
        started = time.perf_counter()
        for start in range(0, visible_records, 9_000):
            count = min(9_000, visible_records - start)
            fill(node.store, federation.manifest, federation.pki_dir, "USA-DTSF", count, shown)
            fill(node.store, federation.manifest, federation.pki_dir, "USA-DTSF", max(1, count // 9), hidden)
        print(f"filled:      {visible_records:,} visible records (+1 in 10 hidden) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)

        conn = user_connection(federation.pki_dir, NODE, "suzuki")
        feed = collection(node.taxii_port, default_collection(NODE).id, conn)
        latencies: list[float] = []
        total = 0
        started = time.perf_counter()
        pages = as_pages(feed.get_objects, per_request=page)
        while True:
            before = time.perf_counter()
            envelope = next(pages, None)
            if envelope is None:
                break
            latencies.append(time.perf_counter() - before)
            total += len(envelope.get("objects", []))
        elapsed = time.perf_counter() - started
        conn.close()
    finally:
        node.stop()
    if total != visible_records + SHARED:
        raise SystemExit(f"paged {total} objects, expected {visible_records + SHARED}")
    first, last = latencies[0] * 1000, latencies[-1] * 1000
    return {"objects": float(total), "pages": float(len(latencies)), "objects_per_second": total / elapsed,
            "first_page_ms": first, "last_page_ms": last, "median_page_ms": statistics.median(latencies) * 1000,
            "last_over_first": last / first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000, help="objects in the collection (default 100,000)")
    parser.add_argument("--page", type=int, default=1_000, help="objects per page (default 1,000)")
    parser.add_argument("--postgres", metavar="URL", nargs="?", const="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="store on PostgreSQL (a schema of its own, dropped at the end) instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taxii-bench-") as tmp:
        result = run(args.objects, args.page, Path(tmp), args.postgres)
    print(f"storage:     {'postgresql' if args.postgres else 'sqlite'}")
    print(f"objects:     {result['objects']:,.0f} in {result['pages']:,.0f} pages of {args.page:,}")
    print(f"rate:        {result['objects_per_second']:,.0f} objects/s (aim >= {TARGET_RATE:,.0f})")
    print(f"first page:  {result['first_page_ms']:,.1f} ms")
    print(f"last page:   {result['last_page_ms']:,.1f} ms")
    print(f"median page: {result['median_page_ms']:,.1f} ms")
    print(f"last/first:  {result['last_over_first']:.2f} (aim <= {TARGET_RATIO:.0f})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
