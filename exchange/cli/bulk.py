"""``exchange submit --bulk FILE.jsonl``: many record drafts, one per line, over one channel.

Every line must carry the analyst's own ``reference``: the node returns the
existing record for a reference it already holds, so a rerun of the same file
(after a rejection was fixed, or after the node went away mid-file) creates
nothing twice. Lines are checked locally first (JSON, structure, reference);
only well-formed lines are sent, a few at a time, and outcomes are reported in
line order whatever order the answers arrive in.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from exchange.cli.options import client_from
from exchange.cli.progress import Bar
from exchange.drafts import draft_from_json, load_json
from exchange.errors import Conflict, ExchangeError, InternalError, InvalidInput, NotFound, TooLarge, VerificationError
from exchange.render import clean
from exchange.v1 import records_pb2, submission_pb2

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = ["DEFAULT_PARALLEL", "BulkResult", "Line", "Outcome", "parse_line", "read_lines", "run_bulk", "submit_lines"]

# Calls in flight at once. Measured (node and CLI in separate processes, 20 ms round
# trip): 1 -> 37 records/s, 2 -> 66, 4 -> 115, 8 -> 91. Round trips are what a real
# network adds, so 4 is the default; past it the node's single SQLite writer is the
# limit. On loopback, where there is no round trip to hide, 4 is ~35% slower than 1
# (concurrent writers wait in SQLite's busy back-off): use --parallel 1 there.
DEFAULT_PARALLEL = 4
SUFFIX = ".jsonl"

# Refusals that concern one line's content: that line is rejected and the rest go on.
# Anything else (unreachable node, certificate refused, role not allowed) would fail
# every line alike, so the run stops at the first one.
LINE_REFUSALS: tuple[type[ExchangeError], ...] = (InvalidInput, TooLarge, Conflict, NotFound, VerificationError)

Status = Literal["new", "existing", "rejected"]


@dataclass(frozen=True)
class Line:
    """One non-blank line of the file, parsed; ``problem`` set if it will not be sent."""

    number: int  # 1-based line number in the file
    reference: str | None  # None when the line has no readable reference
    draft: records_pb2.RecordDraft | None
    problem: str | None = None


@dataclass(frozen=True)
class Outcome:
    line: int
    reference: str | None
    status: Status
    record: str | None = None  # ORIGINATOR/RECORD_ID, as `exchange revise` takes it
    version: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"line": self.line, "reference": self.reference, "status": self.status}
        if self.status == "rejected":
            data["reason"] = self.reason
        else:
            data["record"] = self.record
            data["version"] = self.version
        return data


@dataclass
class BulkResult:
    total: int  # lines with a draft (blank lines are not counted)
    new: int = 0
    existing: int = 0
    rejected: int = 0
    stopped_at: int | None = None  # the line the run stopped at, if it did
    error: ExchangeError | None = None

    @property
    def done(self) -> int:
        return self.new + self.existing + self.rejected

    def summary(self) -> str:
        text = (
            f"{self.new + self.existing} submitted ({self.new} new, {self.existing} already submitted), "
            f"{self.rejected} rejected"
        )
        if self.stopped_at is not None:
            text += f", {self.total - self.done} not submitted (stopped at line {self.stopped_at})"
        return text


# --- reading --------------------------------------------------------------------------------


def _reference_of(data: object) -> str | None:
    """The line's reference if one can be read, so even a rejected line can be matched up."""
    if isinstance(data, dict):
        value = data.get("reference")
        if isinstance(value, str) and value.strip():
            return value
    return None


def parse_line(number: int, raw: bytes) -> Line:
    """Parse one line; every problem becomes the line's ``problem``, never an exception."""
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return Line(number, None, None, f"not UTF-8 text (byte {exc.start + 1} of the line)")
    try:
        data = load_json(text, one_line=True)
    except InvalidInput as exc:
        return Line(number, None, None, str(exc))
    reference = _reference_of(data)
    try:
        draft, _ = draft_from_json(data)
    except InvalidInput as exc:
        return Line(number, reference, None, str(exc))
    if reference is None:
        problem = "reference: missing (required with --bulk, so that a rerun cannot submit a line twice)"
        return Line(number, None, None, problem)
    return Line(number, reference, draft)


def read_lines(name: str) -> list[Line]:
    """Read and parse a bulk file; a file that cannot be used at all is a usage error."""
    path = Path(name)
    if path.suffix.lower() != SUFFIX:
        raise InvalidInput(name, f"expected a JSON Lines file named *{SUFFIX}, one record draft per line")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput("", f"cannot read {name}: {exc.strerror or exc}") from None
    lines: list[Line] = []
    first_use: dict[str, int] = {}
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        if not chunk.strip():
            continue  # blank lines (a trailing newline, spacing) are not records
        line = parse_line(number, chunk)
        if line.reference is not None:
            # Two lines with one reference would make the second an "already submitted"
            # copy of the first, silently dropping its content: refuse it instead.
            earlier = first_use.setdefault(line.reference, number)
            if earlier != number and line.problem is None:
                line = Line(number, line.reference, None, f"reference: {line.reference!r} is also on line {earlier}")
        lines.append(line)
    if not lines:
        raise InvalidInput(name, "no records (the file is empty)")
    return lines


# --- submitting -----------------------------------------------------------------------------


def _record_name(receipt: submission_pb2.Receipt) -> str:
    return f"{receipt.ref.originator}/{receipt.ref.record_id}"


def submit_lines(
    client: Client | None,
    lines: list[Line],
    emit: Callable[[Outcome], None],
    *,
    parallel: int = DEFAULT_PARALLEL,
) -> BulkResult:
    """Send every well-formed line, ``parallel`` at a time; ``emit`` gets outcomes in line order.

    ``client`` may be None only if no line is well-formed (there is nothing to send).

    A refusal of one line's content rejects that line; any other failure stops the
    run at that line: nothing more is sent, calls already in flight are waited for
    and their outcomes kept (they may have been stored).
    """
    result = BulkResult(total=len(lines))

    def submit(line: Line) -> submission_pb2.Receipt:
        if client is None:  # a client is required exactly when some line is sent
            raise InternalError("a line to send, and no client to send it")
        request = submission_pb2.SubmitRequest(draft=line.draft, reference=line.reference or "")
        return client.call(client.submit, request).receipt

    def record(outcome: Outcome) -> None:
        if outcome.status == "new":
            result.new += 1
        elif outcome.status == "existing":
            result.existing += 1
        else:
            result.rejected += 1
        emit(outcome)

    pending: deque[tuple[Line, Future[submission_pb2.Receipt] | None]] = deque()
    upcoming: Iterator[Line] = iter(lines)
    in_flight = 0
    executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="bulk-submit")
    try:
        while True:
            # Keep `parallel` calls in flight; lines rejected locally queue up between
            # them so that the report stays in line order.
            while result.error is None and in_flight < parallel:
                line = next(upcoming, None)
                if line is None:
                    break
                if line.problem is not None:
                    pending.append((line, None))
                else:
                    pending.append((line, executor.submit(submit, line)))
                    in_flight += 1
            if not pending:
                break
            line, future = pending.popleft()
            if future is None:
                if result.error is None:
                    record(Outcome(line.number, line.reference, "rejected", reason=line.problem))
                continue
            in_flight -= 1
            try:
                receipt = future.result()
            except LINE_REFUSALS as exc:
                if result.error is None:
                    record(Outcome(line.number, line.reference, "rejected", reason=str(exc)))
                continue
            except ExchangeError as exc:
                if result.error is None:
                    result.error, result.stopped_at = exc, line.number
                continue
            # After a stop, a call that was already in flight and succeeded is still
            # reported: the record is on the node, and the report must say so.
            status: Status = "new" if receipt.created else "existing"
            record(Outcome(line.number, line.reference, status, _record_name(receipt), receipt.version))
    finally:
        # On Ctrl-C nothing new starts; calls already sent end by their deadline.
        executor.shutdown(wait=True, cancel_futures=True)
    return result


# --- the command ----------------------------------------------------------------------------


def _stopped_message(result: BulkResult) -> str:
    if result.done == 0:  # e.g. the node is down, or this profile may not submit: nothing to resume
        return f"stopped at line {result.stopped_at}: {result.error}; nothing was submitted"
    return (
        f"stopped at line {result.stopped_at}: {result.error}; {result.done} of {result.total} lines done, "
        "every line before it included; rerun the same file to submit the rest "
        "(lines already stored report as already submitted)"
    )


def run_bulk(args: argparse.Namespace) -> int:
    """Submit every line of ``args.bulk``; 0 if all were stored, 1 if any was rejected or the run stopped."""
    lines = read_lines(args.bulk)  # usage errors first, before any profile or node is needed
    done = 0
    with ExitStack() as stack:
        report: IO[str] | None = None
        if args.report:
            report = stack.enter_context(open(args.report, "w", encoding="utf-8"))
        bar = stack.enter_context(Bar("submitting", "lines", len(lines), force=args.progress))

        def emit(outcome: Outcome) -> None:
            nonlocal done
            if outcome.status == "rejected":
                print(clean(f"line {outcome.line}: {outcome.reason}"), flush=True)
            if report is not None:
                report.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")
            done += 1
            bar.update(done)

        # A file whose every line is refused locally needs no profile or node to say so.
        sendable = any(line.problem is None for line in lines)
        client = stack.enter_context(client_from(args)) if sendable else None
        result = submit_lines(client, lines, emit, parallel=args.parallel)
    print(result.summary(), flush=True)
    if result.error is not None:
        print(f"exchange: {' '.join(_stopped_message(result).split())}", file=sys.stderr)
        return 1
    return 1 if result.rejected else 0
