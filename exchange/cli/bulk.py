"""``exchange submit --bulk FILE.jsonl``: many record drafts, one per line, over one channel.

Every line must carry the analyst's own ``reference``: the node returns the
existing record for a reference it already holds, so a rerun of the same file
(after a rejection was fixed, or after the node went away mid-file) creates
nothing twice. Lines are checked locally (JSON, structure, reference) as the run
reaches them, so the first call leaves at once and the node stores one call while the
next lines are read; only well-formed lines are sent, 500 to a SubmitBulk call; the node refuses
one line's content as that line's result, and outcomes are reported in line order.
Any failure of a whole call (unreachable node, certificate refused, role not allowed)
would fail every line alike, so the run stops at it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from exchange.cli.options import client_from
from exchange.cli.progress import Bar
from exchange.drafts import draft_from_json, load_json
from exchange.errors import ExchangeError, InternalError, InvalidInput, TransportError
from exchange.render import clean
from exchange.v1 import records_pb2, submission_pb2

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = [
    "BATCH", "DEFAULT_PARALLEL", "BulkFile", "BulkResult", "Line", "Outcome", "open_bulk", "parse_line", "read_lines",
    "run_bulk", "submit_lines",
]

# Drafts per SubmitBulk call (the node's limit, MAX_BULK_SUBMISSIONS): the node checks, signs
# and audits each on its own and commits the call's records in one transaction, so the commit
# (an fsync) and the call's queries are paid once per call, and the index pages a call's
# records share are written once: on the node, 500 to a call cost ~20% less CPU per record
# than 100 (bench/bulk_bench.py). The progress bar still moves a few times a second.
BATCH = 500
# ...and at most this many bytes of drafts, far below the node's message limit (4 MiB by
# default), which a few drafts near the record limit (256 KiB) would pass.
BATCH_BYTES = 1024 * 1024
# Calls in flight at once: the node stores one call while the next is sent and parsed, and
# a network round trip is hidden. More only makes calls queue for the node's one writer.
DEFAULT_PARALLEL = 2
SUFFIX = ".jsonl"

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
    held_draft: str | None = None  # release review: the draft it is held as, until approved

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"line": self.line, "reference": self.reference, "status": self.status}
        if self.status == "rejected":
            data["reason"] = self.reason
        else:
            if self.held_draft:
                data["held_draft"] = self.held_draft
            data["record"] = self.record
            data["version"] = self.version
        return data


@dataclass
class BulkResult:
    total: int  # lines with a draft (blank lines are not counted)
    new: int = 0
    existing: int = 0
    rejected: int = 0
    held: int = 0  # of new and existing: drafts held for release review
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
        if self.held:
            text += f"; {self.held} held for release review (exchange review list)"
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


@dataclass(frozen=True)
class BulkFile:
    """A bulk file read whole, its lines counted (for the progress bar) but not parsed yet."""

    chunks: list[bytes]  # the file split at newlines: chunk i is line i + 1
    total: int  # its non-blank lines

    def lines(self) -> Iterator[Line]:
        """Each non-blank line parsed, in order, as it is reached: parsing 100,000 lines takes
        seconds, which the node spends storing the first calls instead of waiting for them."""
        first_use: dict[str, int] = {}
        for number, chunk in enumerate(self.chunks, start=1):
            if not chunk.strip():
                continue  # blank lines (a trailing newline, spacing) are not records
            line = parse_line(number, chunk)
            if line.reference is not None:
                # Two lines with one reference would make the second an "already submitted"
                # copy of the first, silently dropping its content: refuse it instead.
                earlier = first_use.setdefault(line.reference, number)
                if earlier != number and line.problem is None:
                    line = Line(number, line.reference, None,
                                f"reference: {line.reference!r} is also on line {earlier}")
            yield line


def open_bulk(name: str) -> BulkFile:
    """Read a bulk file; a file that cannot be used at all (named otherwise, unreadable, without
    a line) is a usage error, raised before anything is sent."""
    path = Path(name)
    if path.suffix.lower() != SUFFIX:
        raise InvalidInput(name, f"expected a JSON Lines file named *{SUFFIX}, one record draft per line")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput("", f"cannot read {name}: {exc.strerror or exc}") from None
    chunks = raw.split(b"\n")
    total = sum(1 for chunk in chunks if chunk.strip())
    if not total:
        raise InvalidInput(name, "no records (the file is empty)")
    return BulkFile(chunks, total)


def read_lines(name: str) -> list[Line]:
    """Read and parse a whole bulk file (:func:`open_bulk`, every line parsed)."""
    return list(open_bulk(name).lines())


# --- submitting -----------------------------------------------------------------------------


def _record_name(receipt: submission_pb2.Receipt) -> str:
    return f"{receipt.ref.originator}/{receipt.ref.record_id}"


def _size(line: Line) -> int:
    return (line.draft.ByteSize() if line.draft is not None else 0) + len(line.reference or "")


def _chunks(lines: Iterable[Line], batch: int, max_bytes: int = BATCH_BYTES) -> Iterator[list[Line]]:
    """Consecutive lines holding at most ``batch`` sendable ones of at most ``max_bytes`` in
    all (one larger line goes alone); lines refused locally ride along unsent, so that
    outcomes stay in line order."""
    chunk: list[Line] = []
    sendable = size = 0
    for line in lines:
        if line.problem is None:
            if sendable and (sendable == batch or size + _size(line) > max_bytes):
                yield chunk
                chunk, sendable, size = [], 0, 0
            sendable += 1
            size += _size(line)
        chunk.append(line)
    if chunk:
        yield chunk


def submit_lines(
    client: Client | None,
    lines: Sequence[Line] | Iterable[Line],
    emit: Callable[[Outcome], None],
    *,
    parallel: int = DEFAULT_PARALLEL,
    batch: int = BATCH,
    total: int | None = None,
    connect: Callable[[], Client] | None = None,
) -> BulkResult:
    """Send every well-formed line, ``batch`` to a SubmitBulk call and ``parallel`` calls at a
    time; ``emit`` gets outcomes in line order.

    ``lines`` may be an iterator, read as calls are sent (``total``: how many it holds, or
    ``len(lines)``). ``client`` may be None if ``connect`` makes one, called once when the
    first well-formed line is reached, or if no line is well-formed (nothing to send).

    A refusal of one line's content rejects that line; any other failure stops the run at
    the first line of the call it failed: nothing more is sent, calls already in flight are
    waited for and their outcomes kept (they may have been stored).
    """
    if total is None:
        if not isinstance(lines, Sequence):
            raise InternalError("lines to submit from an iterator, and no total")
        total = len(lines)
    result = BulkResult(total=total)

    def submit(chunk: list[Line]) -> list[submission_pb2.SubmitBulkResult]:
        if client is None:  # made before the first call is sent (below)
            raise InternalError("a line to send, and no client to send it")
        request = submission_pb2.SubmitBulkRequest(submissions=[
            submission_pb2.SubmitRequest(draft=line.draft, reference=line.reference or "")
            for line in chunk if line.problem is None
        ])
        answer = list(client.call(client.submit_bulk, request).results)
        if len(answer) != len(request.submissions):
            raise TransportError(f"the node answered {len(answer)} results for {len(request.submissions)} lines")
        return answer

    def record(outcome: Outcome) -> None:
        if outcome.status == "new":
            result.new += 1
        elif outcome.status == "existing":
            result.existing += 1
        else:
            result.rejected += 1
        if outcome.held_draft:
            result.held += 1
        emit(outcome)

    def settle(chunk: list[Line], future: Future[list[submission_pb2.SubmitBulkResult]] | None) -> None:
        answers: Iterator[submission_pb2.SubmitBulkResult] = iter(())
        if future is not None:
            try:
                answers = iter(future.result())
            except ExchangeError as exc:
                if result.error is None:
                    first = next(line for line in chunk if line.problem is None)
                    for line in chunk[: chunk.index(first)]:  # refused locally, before the stop
                        record(Outcome(line.number, line.reference, "rejected", reason=line.problem))
                    result.error, result.stopped_at = exc, first.number
                return
        for line in chunk:
            if line.problem is not None:
                if result.error is None:
                    record(Outcome(line.number, line.reference, "rejected", reason=line.problem))
                continue
            # After a stop, a call that was already in flight and succeeded is still
            # reported: its records are on the node, and the report must say so.
            answer = next(answers)
            if answer.WhichOneof("outcome") == "refusal":
                if result.error is None:
                    record(Outcome(line.number, line.reference, "rejected", reason=answer.refusal))
                continue
            receipt = answer.receipt
            status: Status = "new" if receipt.created else "existing"
            record(Outcome(line.number, line.reference, status, _record_name(receipt), receipt.version,
                           held_draft=receipt.held_draft_id or None))

    pending: deque[tuple[list[Line], Future[list[submission_pb2.SubmitBulkResult]] | None]] = deque()
    upcoming = _chunks(lines, batch)
    in_flight = 0
    executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="bulk-submit")
    try:
        while True:
            # Keep `parallel` calls in flight: the node stores one while the next is on its way.
            while result.error is None and in_flight < parallel:
                chunk = next(upcoming, None)
                if chunk is None:
                    break
                if all(line.problem is not None for line in chunk):
                    pending.append((chunk, None))
                else:
                    if client is None and connect is not None:
                        client = connect()  # here, before any outcome is reported
                    pending.append((chunk, executor.submit(submit, chunk)))
                    in_flight += 1
            if not pending:
                break
            chunk, future = pending.popleft()
            if future is not None:
                in_flight -= 1
            settle(chunk, future)
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
    bulk = open_bulk(args.bulk)  # usage errors first, before any profile or node is needed
    done = 0
    with ExitStack() as stack:
        report: IO[str] | None = None
        if args.report:
            report = stack.enter_context(open(args.report, "w", encoding="utf-8"))
        bar = stack.enter_context(Bar("submitting", "lines", bulk.total, force=args.progress))

        def emit(outcome: Outcome) -> None:
            nonlocal done
            if outcome.status == "rejected":
                print(clean(f"line {outcome.line}: {outcome.reason}"), flush=True)
            if report is not None:
                report.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")
            done += 1
            bar.update(done)

        # A file whose every line is refused locally needs no profile or node to say so: the
        # client is made once a line is to be sent.
        result = submit_lines(None, bulk.lines(), emit, parallel=args.parallel, batch=BATCH, total=bulk.total,
                              connect=lambda: stack.enter_context(client_from(args)))
    print(result.summary(), flush=True)
    if result.error is not None:
        print(f"exchange: {' '.join(_stopped_message(result).split())}", file=sys.stderr)
        return 1
    return 1 if result.rejected else 0
