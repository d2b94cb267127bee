"""``exchange submit --bulk``: a JSON Lines file against a real node, rerun safely."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from exchange.cli import bulk as cli_bulk
from exchange.cli.bulk import BulkResult, Line, Outcome, parse_line, read_lines, submit_lines
from exchange.cli.main import main
from exchange.cli.progress import Bar
from exchange.errors import InvalidInput
from exchange.node.server import Node
from exchange.store.schema import records, references
from tests.federation import Federation

TOTAL = 1000


def good(i: int) -> dict[str, Any]:
    return {
        "reference": f"BULK-{i:05d}",
        "kind": "actor",
        "title": f"仲介業者 {i}",
        "summary": "輸出規制を回避するフロント企業",
        "countries": ["CHN"],
        "sectors": ["semiconductors"],
        "observables": [{"type": "company_name", "value": f"ABC商事 {i}"}],
        "confidence": 60,
        "marking": {"classification": "CONFIDENTIAL", "releasable_to": ["USA-DTSF"], "tlp": "AMBER"},
    }


def changed(i: int, **changes: Any) -> str:
    data = good(i)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data, ensure_ascii=False)


MARKING = good(0)["marking"]

# line number -> (the line, the reason reported for it). A mix of what the CLI refuses
# itself (JSON, structure, reference) and what only the node can judge (values).
BAD: dict[int, tuple[str, str]] = {
    17: (changed(16, marking={**MARKING, "tlp": "WHITE"}), "draft.marking.tlp: unknown TLP label 'WHITE'"),
    42: (changed(41)[:-20], "invalid JSON at column "),
    99: (changed(98, title=None), "title: missing"),
    123: (changed(122, marking={**MARKING, "releasable_to": ["USA-DTSF", "FRA-DGSI"]}),
          "draft.marking.releasable_to[1]: 'FRA-DGSI' is not a partner agency"),
    256: (changed(255, reference=None), "reference: missing (required with --bulk"),
    400: (changed(399, observables=[{"type": "shoe_size", "value": "42"}]),
          "draft.observables[0]: unknown observable type 'shoe_size'"),
    512: (changed(5), "reference: 'BULK-00005' is also on line 6"),
    640: (changed(639, colour="red"), "colour: unknown field"),
    777: (changed(776, confidence=150), "draft.confidence: expected 0..100, got 150"),
    1000: (changed(999, countries=["China"]), "draft.countries[0]: expected an ISO 3166-1 alpha-3 code"),
}


def write_file(path: Path) -> Path:
    lines = [BAD[n][0] if n in BAD else changed(n - 1) for n in range(1, TOTAL + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def profile(federation: Federation, handle: str = "sato") -> str:
    return str(federation.pki_dir / "JPN-NPA" / "users" / f"{handle}.profile.toml")


def stored(node: Node) -> tuple[int, int]:
    """(records, references) held by the node's store."""
    with node.store.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(records)).scalar_one()
        refs = conn.execute(select(func.count()).select_from(references)).scalar_one()
    return count, refs


def read_report(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_rejections(out: str) -> list[str]:
    *rejected, summary = out.splitlines()
    assert [line.split(":", 1)[0] for line in rejected] == [f"line {n}" for n in sorted(BAD)]
    for line, n in zip(rejected, sorted(BAD), strict=True):
        assert line.startswith(f"line {n}: {BAD[n][1]}"), line
    return [summary]


@pytest.mark.slow
def test_bulk_stores_the_good_lines_once_and_reports_the_bad(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    bulk = write_file(tmp_path / "records.jsonl")
    report = tmp_path / "report.jsonl"
    command = ["submit", "--bulk", str(bulk), "--profile", profile(federation), "--report", str(report)]

    assert main(command) == 1  # some lines were rejected
    captured = capsys.readouterr()
    assert captured.err == ""  # stderr is not a terminal here: no progress bar, and no error
    assert check_rejections(captured.out) == ["990 submitted (990 new, 0 already submitted), 10 rejected"]
    assert stored(node) == (990, 990)
    first = read_report(report)
    assert [entry["line"] for entry in first] == list(range(1, TOTAL + 1))
    assert {entry["status"] for entry in first if entry["line"] not in BAD} == {"new"}
    assert len({entry["record"] for entry in first if entry["status"] == "new"}) == 990
    for entry in first:
        if entry["line"] in BAD:
            assert entry["status"] == "rejected" and entry["reason"].startswith(BAD[entry["line"]][1])
    assert first[0] == {"line": 1, "reference": "BULK-00000", "status": "new",
                        "record": first[0]["record"], "version": 1}
    assert first[41]["reference"] is None  # bad JSON: no reference can be read
    assert first[16]["reference"] == "BULK-00016"  # a refused line can still be matched up

    # The same file again: nothing new, the same record for every stored line.
    assert main(command) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    assert check_rejections(captured.out) == ["990 submitted (0 new, 990 already submitted), 10 rejected"]
    assert stored(node) == (990, 990)
    second = read_report(report)
    for before, after in zip(first, second, strict=True):
        if before["status"] == "new":
            assert after == {**before, "status": "existing"}
        else:
            assert after == before


@pytest.mark.slow
def test_a_node_going_away_mid_file_stops_the_run_and_a_rerun_finishes_it(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    bulk = tmp_path / "records.jsonl"
    bulk.write_text("".join(changed(i) + "\n" for i in range(300)), encoding="utf-8")
    command = ["submit", "--bulk", str(bulk), "--profile", profile(federation)]
    monkeypatch.setattr(cli_bulk, "BATCH", 50)  # several calls, so that the run can stop between them

    # Stop the node once 100 lines are done, from inside the run (the bar is told of every line).
    update = Bar.update

    def stop_at_100(self: Bar, done: int) -> None:
        if done == 100:
            federation.stop()
        update(self, done)

    monkeypatch.setattr(Bar, "update", stop_at_100)
    assert main(command) == 1
    captured = capsys.readouterr()
    summary = captured.out.splitlines()[-1]
    assert "not submitted (stopped at line" in summary
    assert captured.err.count("\n") == 1
    address = federation.manifest.partner("JPN-NPA").address
    assert captured.err.startswith("exchange: stopped at line ")
    assert f": node at {address} " in captured.err
    assert "rerun the same file" in captured.err
    monkeypatch.setattr(Bar, "update", update)

    # Whatever reached the node before it went is kept (including a call cut off after the
    # node had stored it, which the first run could not know of); the rerun adds the rest.
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    assert main(command) == 0
    match = re.fullmatch(r"300 submitted \((\d+) new, (\d+) already submitted\), 0 rejected",
                         capsys.readouterr().out.splitlines()[-1])
    assert match is not None
    new, existing = int(match[1]), int(match[2])
    assert new + existing == 300 and 100 <= existing < 300
    assert stored(node) == (300, 300)


def test_lines_are_read_as_calls_go_out_and_the_client_made_for_the_first_sent(
    federation: Federation, tmp_path: Path
) -> None:
    """A large file is not parsed whole before the first call: with two calls in flight, the
    lines of the third are read once the first is stored. The client is made when the first
    well-formed line is reached, before any outcome is reported."""
    from exchange.client import Client, load_profile

    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    events: list[str] = []

    def lines() -> Iterator[Line]:
        for n in range(1, 41):
            if n in (1, 3, 21, 31):
                events.append(f"read {n}, {stored(node)[0]} stored")
            yield parse_line(n, (changed(n) if n > 2 else "{oops").encode())

    def connect() -> Client:
        events.append("connect")
        return stack.enter_context(Client(load_profile(Path(profile(federation))), timeout=30))

    def emit(outcome: Outcome) -> None:
        events.append(f"{outcome.status} {outcome.line}")

    with ExitStack() as stack:
        result = submit_lines(None, lines(), emit, parallel=2, batch=10, total=40, connect=connect)
    assert (result.new, result.rejected, result.total) == (38, 2, 40)
    assert events[:3] == ["read 1, 0 stored", "read 3, 0 stored", "connect"]
    assert events.index("read 21, 0 stored") < events.index("rejected 1")  # calls 1 and 2 sent first
    # Line 31 is read for the third call, once the first (lines 1-12, two refused here) is
    # stored and reported; the second may be stored by then too.
    [read_31] = [n for n, e in enumerate(events) if e.startswith("read 31, ")]
    assert read_31 > events.index("new 12") and int(events[read_31].split()[2]) in (10, 20)
    assert [e for e in events if e.split()[0] in ("new", "rejected")] == (
        ["rejected 1", "rejected 2"] + [f"new {n}" for n in range(3, 41)])


def test_a_file_of_only_bad_lines_needs_no_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXCHANGE_PROFILE", raising=False)
    bulk = tmp_path / "bad.jsonl"
    bulk.write_text(changed(0, reference=None) + "\n\n" + "{oops\n", encoding="utf-8")
    assert main(["submit", "--bulk", str(bulk)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("line 1: reference: missing")
    assert out[1].startswith("line 3: invalid JSON at column 2: ")  # the blank line 2 is skipped, not renumbered
    assert out[2] == "0 submitted (0 new, 0 already submitted), 2 rejected"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "cannot read {path}: No such file or directory"),
        ("records.json", "{}\n", "{path}: expected a JSON Lines file named *.jsonl, one record draft per line"),
        ("empty.jsonl", "", "{path}: no records (the file is empty)"),
        ("blank.jsonl", "\n  \n\n", "{path}: no records (the file is empty)"),
    ],
)
def test_an_unusable_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["submit", "--bulk", str(path)]) == 2
    assert capsys.readouterr().err == f"exchange: {message.format(path=path)}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["draft.json"], "give either a draft FILE or --bulk FILE.jsonl, not both"),
        (["--reference", "X"], "--reference: not with --bulk: each line carries its own reference"),
        (["--json"], "--json: not with --bulk: use --report FILE for a machine-readable report"),
    ],
)
def test_conflicting_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["submit", "--bulk", str(tmp_path / "x.jsonl"), *extra]) == 2
    assert capsys.readouterr().err == f"exchange: {message}\n"


def test_submit_needs_a_file_or_bulk(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit"]) == 2
    assert capsys.readouterr().err.startswith("exchange: give a draft FILE, or --bulk FILE.jsonl")
    assert main(["submit", "x.json", "--report", "r.jsonl"]) == 2
    assert capsys.readouterr().err == "exchange: --report: only with --bulk\n"


def test_line_parsing_names_each_problem() -> None:
    assert parse_line(1, b"\xef\xbb\xbf" + changed(0).encode()).problem is None  # a BOM on line 1 is fine
    assert parse_line(3, b'{"title": "\xff"}').problem == "not UTF-8 text (byte 12 of the line)"
    assert parse_line(4, b"[" * 100_000).problem == "invalid JSON: nested too deeply"
    assert parse_line(5, changed(0, reference="  ").encode()).problem == (
        "reference: missing (required with --bulk, so that a rerun cannot submit a line twice)"
    )
    assert parse_line(6, changed(0, reference=7).encode()).problem == "reference: expected a string"
    duplicate_key = changed(0)[:-1] + ', "title": "again"}'
    assert parse_line(7, duplicate_key.encode()).problem == "duplicate key 'title'"


def test_lines_keep_their_numbers_across_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(f"{changed(0)}\r\n\r\n{changed(1)}\n\n", encoding="utf-8")
    assert [(line.number, line.reference, line.problem) for line in read_lines(str(path))] == [
        (1, "BULK-00000", None), (3, "BULK-00001", None),
    ]
    with pytest.raises(InvalidInput):
        read_lines(str(tmp_path / "nothing.jsonl"))


class Terminal(io.StringIO):
    """A stand-in for a terminal's stderr."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_with_rate_and_eta() -> None:
    terminal = Terminal()
    with Bar("submitting", "lines", 4, force=None, stream=terminal) as bar:
        bar.update(4)
    shown = terminal.getvalue()
    assert "submitting" in shown and "4/4" in shown and "lines/s" in shown and "ETA" in shown


def test_progress_bar_stays_silent_off_a_terminal() -> None:
    log = io.StringIO()
    with Bar("submitting", "lines", 4, force=None, stream=log) as bar:
        bar.update(4)
    assert log.getvalue() == ""


def test_summary_of_a_stopped_run_counts_what_was_not_sent() -> None:
    result = BulkResult(total=10, new=3, existing=1, rejected=2, stopped_at=7)
    assert result.summary() == (
        "4 submitted (3 new, 1 already submitted), 2 rejected, 4 not submitted (stopped at line 7)"
    )


def test_calls_are_bounded_by_lines_and_bytes_and_keep_line_order() -> None:
    """Lines go to the node at most BATCH, and at most BATCH_BYTES of drafts, to a call (one
    larger draft alone), far below the node's message limit; lines refused locally ride along."""
    from exchange.cli.bulk import BATCH, BATCH_BYTES, _chunks
    from exchange.node.submission import MAX_BULK_SUBMISSIONS

    assert BATCH <= MAX_BULK_SUBMISSIONS  # a full call is never refused whole
    small = [parse_line(n, changed(n).encode()) for n in range(1, 2 * BATCH + 2)]
    small[4] = parse_line(5, b"{oops")
    chunks = list(_chunks(small, BATCH))
    assert [line.number for chunk in chunks for line in chunk] == list(range(1, 2 * BATCH + 2))
    assert [sum(line.problem is None for line in chunk) for chunk in chunks] == [BATCH, BATCH]

    observables = [{"type": "domain", "value": f"front-{i:05d}.example.net"} for i in range(5000)]
    big = [parse_line(n, changed(n, observables=observables).encode()) for n in range(1, 13)]
    size = big[0].draft.ByteSize() + len("BULK-00001")  # type: ignore[union-attr]  # all the same size
    per_call = BATCH_BYTES // size
    assert 1 < per_call < 12
    assert [len(chunk) for chunk in _chunks(big, BATCH)] == [per_call] * (12 // per_call) + (
        [12 % per_call] if 12 % per_call else [])
    assert [len(chunk) for chunk in _chunks(big[:3], BATCH, max_bytes=size - 1)] == [1, 1, 1]
