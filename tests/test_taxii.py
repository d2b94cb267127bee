"""TAXII 2.1 through the OASIS client (taxii2-client) against a real node over real mutual TLS.

A liaison officer's certificate lists the collections and pages every object the disclosure
decision releases to the officer and nothing else (a federation's records under mixed
markings, checked record by record against ``decide``); no certificate, a partner's user
certificate or a rogue CA end at the TLS handshake, a certificate that claims another agency
or names no registered user gets 401/403; ``added_after`` and ``next`` neither skip nor
repeat while records arrive between pages; media types, the date-added headers, and TAXII
error objects (never a traceback) for bad parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from taxii2client.v21 import as_pages

from exchange.config import TaxiiCollection, TaxiiConfig, default_collection, load_node_config
from exchange.core.identity import Identity, Principal
from exchange.errors import ConfigError, InvalidInput
from exchange.node.reads import visible
from exchange.node.server import Node
from exchange.node.taxii.feed import AUDIT_ACTION, parse_timestamp, timestamp
from exchange.node.taxii.server import MEDIA_STIX, MEDIA_TAXII
from exchange.pki import issue, make_ca
from exchange.stix.common import EXTENSION_ID
from exchange.store import audit
from exchange.store.current import select_current, to_record
from exchange.v1 import records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft
from tests.fill import fill
from tests.markings import LEVELS, TLPS
from tests.taxii_client import api_root, collection, connection, server, user_connection

NODE = "JPN-NPA"
PARTNERS_ONLY = TaxiiCollection("7d0c5d4e-1f5a-4c1e-9a77-3a1f6f0b2c11", "From partners", from_partners=True)


def _start(federation: Federation, data_dir: Path) -> Node:
    federation.backend.migrated(data_dir)
    config = federation.node_config(NODE, data_dir)
    config = dataclasses.replace(config, listen=federation.manifest.partner(NODE).address,
                                 taxii=TaxiiConfig("127.0.0.1:0", (default_collection(NODE), PARTNERS_ONLY)))
    node = Node(config, manifest=federation.manifest, schedule=False)
    node.start()
    federation.nodes.append(node)
    return node


def _mixed(federation: Federation, node: Node) -> None:
    """Records of every agency under markings that cover the decision's rules."""
    releases = [["JPN-NPA"], ["USA-DTSF"], ["JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA"]]
    for n, originator in enumerate(("JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA")):
        for i, level in enumerate(LEVELS):
            rel = releases[(i + n) % len(releases)]
            caveats = ["ORCON"] if (i + n) % 4 == 0 else []
            marking = records_pb2.Marking(classification=level, releasable_to=rel, tlp=TLPS[(i + n) % len(TLPS)],
                                          caveats=caveats)
            fill(node.store, federation.manifest, federation.pki_dir, originator, 2, marking)


def _submit(federation: Federation, node: Node, **fields: Any) -> records_pb2.RecordRef:
    analyst = UserClient.of(federation.user_channel(node, NODE, "sato"))
    return analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft(**fields)), timeout=10).receipt.ref


def _linked(federation: Federation, node: Node) -> None:
    """Records with several STIX objects each (SCOs, an indicator, a relationship)."""
    rel = records_pb2.Marking(classification="RESTRICTED", releasable_to=["USA-DTSF"], tlp="GREEN")
    actor = _submit(federation, node, kind=records_pb2.KIND_ACTOR, title="Front company", marking=rel,
                    observables=[records_pb2.Observable(type="domain", value="front.example"),
                                 records_pb2.Observable(type="email", value="buyer@front.example")])
    _submit(federation, node, kind=records_pb2.KIND_OBSERVABLE_SET, title="Lures", related=[actor], marking=rel,
            observables=[records_pb2.Observable(type="url", value="https://front.example/jobs"),
                         records_pb2.Observable(type="ip", value="192.0.2.9")])


def _allowed(node: Node, agency: str, handle: str, *, from_partners: bool = False) -> set[str]:
    """Record ids the decision releases to the user, judged here record by record."""
    user = node.config.users[handle]
    caller = Principal(Identity(agency, handle), user.role, user.clearance)
    with node.store.engine.connect() as conn:
        rows = conn.execute(select_current(node.store)).all()
    return {r.record_id for r in map(to_record, rows)
            if r.status == "active" and visible(NODE, node.manifest, r, caller)
            and not (from_partners and r.originator == NODE)}


def _record_of(obj: dict[str, Any]) -> str | None:
    ext = obj.get("extensions", {}).get(EXTENSION_ID)
    return ext["record_id"] if ext else None


def _page_all(node: Node, conn: Any, collection_id: str, per_page: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for envelope in as_pages(collection(node.taxii_port, collection_id, conn).get_objects, per_request=per_page):
        assert len(envelope.get("objects", [])) <= per_page
        found += envelope.get("objects", [])
    return found


def test_an_officer_lists_collections_and_pages_exactly_what_the_decision_allows(
    federation: Federation, tmp_path: Path
) -> None:
    node = _start(federation, tmp_path / "jpn")
    _mixed(federation, node)
    _linked(federation, node)

    conn = user_connection(federation.pki_dir, NODE, "suzuki")
    assert server(node.taxii_port, conn).api_roots[0].url == f"https://127.0.0.1:{node.taxii_port}/exchange/"
    root = api_root(node.taxii_port, conn)
    listed = {c.id: c for c in root.collections}
    assert set(listed) == {default_collection(NODE).id, PARTNERS_ONLY.id}
    assert listed[PARTNERS_ONLY.id].can_read and not listed[PARTNERS_ONLY.id].can_write

    for handle in ("suzuki", "ito", "sato"):  # SECRET and RESTRICTED liaison officers, an analyst
        objects = _page_all(node, user_connection(federation.pki_dir, NODE, handle), default_collection(NODE).id, 7)
        ids = [o["id"] for o in objects]
        assert len(ids) == len(set(ids)), "an object came twice"
        shown = {r for r in map(_record_of, objects) if r is not None}
        allowed = _allowed(node, NODE, handle)
        assert shown == allowed and allowed  # everything the decision allows, nothing else
        types = Counter(o["type"] for o in objects)
        assert types["marking-definition"] == 5 and types["extension-definition"] == 1
        if handle == "suzuki":
            assert {"domain-name", "email-addr", "url", "ipv4-addr", "relationship", "indicator"} <= set(types)

    partners = {r for r in map(_record_of, _page_all(node, conn, PARTNERS_ONLY.id, 1000)) if r is not None}
    assert partners == _allowed(node, NODE, "suzuki", from_partners=True) and partners

    entries = [e for e in audit.read_entries(node.store, AUDIT_ACTION)
               if e.actor == "urn:exchange:JPN-NPA:user:ito"]
    audited = {rid for e in entries for _, rid, _ in e.detail["records"]}
    assert audited == _allowed(node, NODE, "ito")  # each page audited as a disclosure, like a Search


def test_without_a_certificate_with_a_partners_or_a_rogue_certificate_the_node_refuses(
    federation: Federation, tmp_path: Path
) -> None:
    node = _start(federation, tmp_path / "jpn")
    url = f"https://127.0.0.1:{node.taxii_port}/exchange/collections/"
    pki = federation.pki_dir

    def refused(conn: Any) -> None:
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            conn.session.get(url, headers={"Accept": MEDIA_TAXII}, timeout=10)

    refused(connection(pki, NODE, cert=None))
    partner = pki / "USA-DTSF" / "users" / "rchen"
    refused(connection(pki, NODE, cert=(partner.with_suffix(".crt"), partner.with_suffix(".key"))))
    rogue_ca = make_ca(NODE, now=dt.datetime.now(dt.UTC))  # JPN-NPA's name, not its CA
    rogue = issue(rogue_ca, Identity(NODE, "suzuki"), now=dt.datetime.now(dt.UTC), lifetime=dt.timedelta(days=1))
    (tmp_path / "rogue.crt").write_bytes(rogue.cert_pem)
    (tmp_path / "rogue.key").write_bytes(rogue.key_pem)
    refused(connection(pki, NODE, cert=(tmp_path / "rogue.crt", tmp_path / "rogue.key")))

    # Past TLS (issued by JPN-NPA's CA), identity decides: claims another agency, no such user,
    # the node's own certificate (the operator may not read).
    for identity, status in ((Identity("USA-DTSF", "rchen"), 401), (Identity(NODE, "nobody"), 403),
                             (Identity(NODE, None), 403)):
        key, cert = federation.issue_cert(NODE, identity)
        (tmp_path / "c.crt").write_bytes(cert)
        (tmp_path / "c.key").write_bytes(key)
        answer = connection(pki, NODE, cert=(tmp_path / "c.crt", tmp_path / "c.key")).session.get(
            url, headers={"Accept": MEDIA_TAXII}, timeout=10)
        assert answer.status_code == status, identity
        assert answer.headers["Content-Type"] == MEDIA_TAXII
        assert answer.json()["http_status"] == str(status)


def _raw(conn: Any, url: str, **params: Any) -> requests.Response:
    return conn.session.get(url, params=params, headers={"Accept": MEDIA_TAXII}, timeout=30)


def test_added_after_and_next_never_skip_or_repeat_while_records_arrive(
    federation: Federation, tmp_path: Path
) -> None:
    node = _start(federation, tmp_path / "jpn")
    released = records_pb2.Marking(classification="RESTRICTED", releasable_to=["JPN-NPA", "USA-DTSF"],
                                   tlp="GREEN")
    fill(node.store, federation.manifest, federation.pki_dir, "USA-DTSF", 25, released)
    conn = user_connection(federation.pki_dir, NODE, "suzuki")
    url = f"https://127.0.0.1:{node.taxii_port}/exchange/collections/{default_collection(NODE).id}/objects/"

    seen: list[str] = []
    last_added = ""
    params: dict[str, Any] = {"limit": 4, "added_after": "2000-01-01T00:00:00Z"}
    arrivals = 0
    while True:
        answer = _raw(conn, url, **params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [o["id"] for o in body.get("objects", [])]
        last_added = answer.headers.get("X-TAXII-Date-Added-Last", last_added)
        if arrivals < 6:  # new records between pages: a partner's batch, an analyst's record
            fill(node.store, federation.manifest, federation.pki_dir, "KOR-KNPA", 3, released)
            _submit(federation, node, marking=released, observables=[])
            arrivals += 1
        if not body["more"]:
            break
        params["next"] = body["next"]
    assert len(seen) == len(set(seen)), "an object came twice"
    assert len(seen) == 25 + 6 * 4  # every record there at the start and every one that arrived

    # Polling: what arrives after the last page's date added, exactly once.
    fill(node.store, federation.manifest, federation.pki_dir, "GBR-NPSA", 5, released)
    later = _raw(conn, url, added_after=last_added, limit=1000).json()
    assert len(later["objects"]) == 5 and not later["more"]
    assert not set(seen) & {o["id"] for o in later["objects"]}


def test_media_types_headers_lookups_and_taxii_errors(federation: Federation, tmp_path: Path) -> None:
    node = _start(federation, tmp_path / "jpn")
    _linked(federation, node)
    conn = user_connection(federation.pki_dir, NODE, "suzuki")
    base = f"https://127.0.0.1:{node.taxii_port}"
    coll = f"{base}/exchange/collections/{default_collection(NODE).id}/"

    for path in ("/taxii2/", "/exchange/", "/exchange/collections/", coll[len(base):]):
        answer = _raw(conn, base + path)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == MEDIA_TAXII, path
    assert _raw(conn, base + "/exchange/").json()["versions"] == [MEDIA_TAXII]
    assert _raw(conn, coll).json()["media_types"] == [MEDIA_STIX]

    objects = _raw(conn, coll + "objects/", limit=1000)
    body = objects.json()
    manifest = _raw(conn, coll + "manifest/", limit=1000)
    entries = manifest.json()["objects"]
    assert [e["id"] for e in entries] == [o["id"] for o in body["objects"]]
    assert all(e["media_type"] == MEDIA_STIX for e in entries)
    added = [e["date_added"] for e in entries]
    assert added == sorted(added)
    assert objects.headers["X-TAXII-Date-Added-First"] == added[0] == manifest.headers["X-TAXII-Date-Added-First"]
    assert objects.headers["X-TAXII-Date-Added-Last"] == added[-1] == manifest.headers["X-TAXII-Date-Added-Last"]

    indicator = next(o for o in body["objects"] if o["type"] == "indicator")
    one = _raw(conn, coll + f"objects/{indicator['id']}/")
    assert one.status_code == 200 and one.json()["objects"] == [indicator]
    versions = _raw(conn, coll + f"objects/{indicator['id']}/versions/").json()
    assert versions["versions"] == [indicator["modified"]]
    assert _raw(conn, coll + "objects/", **{"match[type]": "indicator,url"}).json()["objects"] == [
        o for o in body["objects"] if o["type"] in ("indicator", "url")]
    assert _raw(conn, coll + "objects/", **{"match[id]": indicator["id"]}).json()["objects"] == [indicator]
    assert _raw(conn, coll + "objects/", **{"match[version]": indicator["modified"],
                                            "match[type]": "indicator"}).json()["objects"] == [indicator]
    assert "objects" not in _raw(conn, coll + "objects/", **{"match[spec_version]": "2.0"}).json()

    # Not yours to see looks like not there, by id too (ito's clearance is RESTRICTED).
    _submit(federation, node, title="Secret lead", observables=[],
            marking=records_pb2.Marking(classification="SECRET", releasable_to=["USA-DTSF"], tlp="AMBER"))
    everything = _raw(conn, coll + "objects/", limit=1000).json()["objects"]
    secret = next(o for o in everything if o.get("name") == "Secret lead")
    ito = user_connection(federation.pki_dir, NODE, "ito")
    hidden = _raw(ito, coll + f"objects/{secret['id']}/")
    assert hidden.status_code == 404 and hidden.json() == _raw(ito, coll + "objects/attack-pattern--"
                                                               "00000000-0000-5000-8000-000000000000/").json()
    assert "objects" not in _raw(ito, coll + "objects/", **{"match[id]": secret["id"]}).json()
    assert _raw(conn, coll + f"objects/{secret['id']}/").json()["objects"] == [secret]

    bad: list[tuple[str, dict[str, Any], int]] = [
        (coll + "objects/", {"limit": "many"}, 400),
        (coll + "objects/", {"limit": "0"}, 400),
        (coll + "objects/", {"added_after": "yesterday"}, 400),
        (coll + "objects/", {"next": "forged"}, 400),
        (coll + "objects/", {"match[colour]": "red"}, 400),
        (coll + "objects/", {"match[version]": "newest"}, 400),
        (coll + "objects/indicator--00000000-0000-4000-8000-000000000000/", {}, 404),
        (f"{base}/exchange/collections/00000000-0000-4000-8000-000000000000/objects/", {}, 404),
        (f"{base}/exchange/status/1/", {}, 404),
    ]
    for url, params, status in bad:
        answer = _raw(conn, url, **params)
        assert answer.status_code == status, (url, params, answer.text)
        assert answer.headers["Content-Type"] == MEDIA_TAXII
        error = answer.json()
        assert error["http_status"] == str(status) and error["title"] and "Traceback" not in answer.text
    # A next token is bound to its caller and its query.
    token = _raw(conn, coll + "objects/", limit=1).json()["next"]
    assert _raw(ito, coll + "objects/", limit=1, next=token).status_code == 400
    tampered = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    assert _raw(conn, coll + "objects/", limit=1, next=tampered).status_code == 400
    assert _raw(conn, coll + "objects/", limit=1, next=token).status_code == 200
    assert _raw(conn, coll + "objects/", limit=1, next=token, **{"match[type]": "url"}).status_code == 400
    posted = conn.session.post(coll + "objects/", json={"objects": []}, headers={"Accept": MEDIA_TAXII}, timeout=10)
    assert posted.status_code == 405 and posted.json()["http_status"] == "405"
    wrong = conn.session.get(coll, headers={"Accept": "application/json"}, timeout=10)
    assert wrong.status_code == 406 and wrong.headers["Content-Type"] == MEDIA_TAXII


@given(st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1)))
def test_timestamps_round_trip_to_the_microsecond(when: dt.datetime) -> None:
    micros = (when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    assert parse_timestamp(timestamp(micros), "t") == micros


@pytest.mark.parametrize("value", ["", "2026-01-01", "2026-01-01T00:00:00", "2026-01-01T00:00:00.x1Z",
                                   "2026-13-01T00:00:00Z", "2026-01-01T00:00:00+09:00"])
def test_a_malformed_timestamp_is_refused_by_name(value: str) -> None:
    with pytest.raises(InvalidInput, match="added_after"):
        parse_timestamp(value, "added_after")


def _node_toml(tmp_path: Path, taxii: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'agency = "JPN-NPA"\nlisten = "127.0.0.1:7000"\n{taxii}', encoding="utf-8")
    return path


def test_taxii_is_off_by_default_and_its_table_is_checked(tmp_path: Path) -> None:
    assert load_node_config(_node_toml(tmp_path, "")).taxii is None
    default = load_node_config(_node_toml(tmp_path, '[taxii]\nlisten = "127.0.0.1:9443"\n')).taxii
    assert default == TaxiiConfig("127.0.0.1:9443", (default_collection(NODE),))
    chosen = load_node_config(_node_toml(tmp_path, textwrap.dedent(f"""
        [taxii]
        listen = "127.0.0.1:9443"
        [[taxii.collections]]
        id = "{PARTNERS_ONLY.id}"
        title = "From partners"
        from_partners = true
        originators = ["USA-DTSF"]
        """))).taxii
    assert chosen is not None and chosen.collections == (dataclasses.replace(PARTNERS_ONLY, originators=("USA-DTSF",)),)
    for body, named in (('listen = "nowhere"', "taxii.listen"), ('listen = "127.0.0.1:1"\nport = 3', "'port'"),
                        ('listen = "127.0.0.1:1"\ncollections = []', "taxii.collections"),
                        ('listen = "127.0.0.1:1"\n[[taxii.collections]]\nid = "x"\ntitle = "t"', "collections[0].id"),
                        (f'listen = "127.0.0.1:1"\n[[taxii.collections]]\nid = "{PARTNERS_ONLY.id}"', ".title"),
                        (f'listen = "127.0.0.1:1"\n[[taxii.collections]]\nid = "{PARTNERS_ONLY.id}"\ntitle = "t"\n'
                         'originators = ["usa"]', "originators")):
        with pytest.raises(ConfigError, match=re.escape(named)):
            load_node_config(_node_toml(tmp_path, "[taxii]\n" + body + "\n"))


def test_a_taxii_request_counts_against_the_users_calls_in_progress(federation: Federation, tmp_path: Path) -> None:
    node = _start(federation, tmp_path / "jpn")
    conn = user_connection(federation.pki_dir, NODE, "suzuki")
    url = f"https://127.0.0.1:{node.taxii_port}/exchange/collections/"
    user = node.config.users["suzuki"]
    suzuki = Principal(Identity(NODE, "suzuki"), user.role, user.clearance)
    with contextlib.ExitStack() as held:  # the user's other calls (gRPC ones, say) in progress
        for _ in range(node.config.limits.user_concurrent_calls):
            held.enter_context(node.admission.call("/exchange.v1.QueryService/Search", suzuki, None, _NoContext()))
        busy = _raw(conn, url)
        assert busy.status_code == 429 and busy.json()["http_status"] == "429"
        assert _raw(user_connection(federation.pki_dir, NODE, "ito"), url).status_code == 200  # others go on
    assert _raw(conn, url).status_code == 200
    assert node.admission.in_progress(suzuki.identity.uri) == 0


class _NoContext:
    def cancel(self) -> None:
        pass

    def add_callback(self, callback: Any) -> bool:
        return False
