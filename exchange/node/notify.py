"""Pushing watch hits: a local command or an HTTPS webhook, retried with backoff, each hit once.

Every ``notify_check_seconds`` the notifier (one thread in the node):

1. looks for hits of the watch entries that have a notify target (records received from
   partners with a watched observable, after the entry was made, that the entry's owner
   may see: :func:`exchange.core.policy.decide` for that user, as ``WatchHits`` asks it)
   and puts each in the durable outbox (``exchange.store.outbox``) once. It looks only at
   current versions that entered the log since its mark for that user and target (a log
   position, kept in the database and moved in the transaction that queues the hits), so
   a round costs what is new, not every hit ever made;
2. delivers the outbox's due entries, oldest first: the decision is asked again (a record
   narrowed or withdrawn since is dropped unsent, and that is audited), then the hit goes
   out as JSON, to the command's stdin or as an HTTPS POST, with an idempotency key;
   success is marked in the transaction that audits the delivery; a failure is retried
   after ``retry_seconds``, doubled each time up to ``max_retry_seconds``;
3. prunes hits delivered more than ``notify_keep_delivered_days`` ago. A pruned hit is
   behind its mark, so it is never found, queued or sent again.

"Exactly once" here means: the receiver gets each hit at least once (a hit not marked
delivered is sent again after a restart or a lost answer) with the same
``Idempotency-Key``, so a receiver that drops keys it has seen acts on each hit once.
The webhook authenticates the node by mutual TLS or by the ``X-Exchange-Signature``
header, ``sha256=`` + HMAC-SHA256 of the body under the target's shared secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import ssl
import subprocess
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from exchange.config import NotifyTarget, UserEntry
from exchange.core.identity import Identity, Principal, identity_uri
from exchange.core.marking import within_clearance
from exchange.core.trust import Trust
from exchange.node.reads import visible
from exchange.node.rpc import ROLES
from exchange.runtime import Periodic
from exchange.store import Store, outbox, watch
from exchange.store.current import current_record
from exchange.store.store import now_us

__all__ = ["SEND_TIMEOUT_SECONDS", "Notifier"]

log = logging.getLogger("exchange.notify")

SEND_TIMEOUT_SECONDS = 10.0  # one attempt; a webhook slower than this is down
BATCH = 50  # deliveries per round; the rest in the next
# A hit is pushed in the name of a user who may read watch hits now (the role table's word,
# as for WatchHits): one whose role was changed gets nothing more, owed or new.
WATCHERS = ROLES["/exchange.v1.LiaisonService/WatchHits"]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook's 3xx is an answer, not a new address: followed, urllib would send the hit on
    as a GET without its body, to any host and over plain HTTP, with the idempotency key (which
    names the record) and the signature, and take a 2xx there for a delivery."""

    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: object, newurl: str) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def _close_abandoned_sockets(error: BaseException) -> None:
    """Close the TLS sockets a failed attempt made and could not hand back.

    CPython 3.11's ``SSLContext.wrap_socket``, given a socket the peer reset between the TCP
    connect and the wrap (a webhook stopping, a load balancer refusing), raises from its
    pre-handshake probe (``SSLSocket._create``: ``recv(1)`` gets ECONNRESET) without closing the
    ``SSLSocket`` it has already made. The descriptor then stays open until the collector finds
    the traceback, at no predictable time and with a ResourceWarning. The half-made socket is
    reachable only as ``self`` in the frames of the error's traceback (or of the error it
    wraps): close every one there, now. Closing a closed socket does nothing."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for frame, _ in traceback.walk_tb(current.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, ssl.SSLSocket):
                owner.close()
        pending.extend(e for e in (current.__cause__, current.__context__, getattr(current, "reason", None))
                       if isinstance(e, BaseException))


class Notifier:
    def __init__(
        self, *, agency: str, store: Store, trust: Trust, users: Mapping[str, UserEntry],
        targets: Mapping[str, NotifyTarget], interval: float, may_run: Callable[[], bool] = lambda: True,
        keep_delivered_seconds: float = 30 * 86400,
    ) -> None:
        self.agency = agency
        self.store = store
        self.trust = trust  # read at every round: the manifest may be replaced while the node runs
        self.users = users
        self.targets = targets
        self.interval = interval
        self.may_run = may_run  # of replicas sharing a database, only the schedule's leader pushes
        self.keep_delivered_us = int(keep_delivered_seconds * 1_000_000)
        self.rows_read = 0  # record rows the last round's search for hits read (what tests measure)
        self._thread = Periodic(f"{self.agency}-notify", interval, self._round)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop()

    def _round(self) -> None:
        if not self.may_run():
            return
        try:
            self.run_once()
        except Exception:  # a failure never stops the notifier; the outbox keeps what is owed
            log.exception("notifier round failed")

    def run_once(self) -> None:
        self.enqueue()
        for pending in outbox.due(self.store, limit=BATCH):
            if self._thread.stopping:
                return
            self.deliver(pending)
        outbox.prune(self.store, delivered_before=now_us() - self.keep_delivered_us)

    # --- finding hits -----------------------------------------------------------------------

    def _principal(self, owner: str) -> Principal | None:
        for handle, user in self.users.items():
            if identity_uri(self.agency, handle) == owner:
                if user.role not in WATCHERS:
                    return None
                return Principal(Identity(self.agency, handle), user.role, user.clearance)
        return None  # a user no longer configured, or no longer in a role that watches, gets nothing pushed

    def enqueue(self) -> int:
        """Queue the hits that entered the log since each (user, target)'s mark; move the marks."""
        self.rows_read = 0
        entries_by_owner = watch.notifying_watches(self.store)
        # Read after the entries: an entry made later is looked at from this position on, and
        # a record it matches received before it was made is not its hit anyway.
        top = watch.log_top(self.store)
        marks = outbox.marks(self.store)
        hits: list[outbox.Hit] = []
        moved: dict[tuple[str, str], int] = {}
        for owner, entries in entries_by_owner.items():
            principal = self._principal(owner)
            if principal is None:
                continue  # no mark moved: a user configured again gets what they were owed
            by_target: dict[str, list[watch.Watch]] = {}
            for entry in entries:
                if entry.notify in self.targets:
                    by_target.setdefault(entry.notify, []).append(entry)
            for target, group in by_target.items():
                since = marks.get((owner, target), 0)
                if since >= top:
                    continue
                moved[(owner, target)] = top
                by_id = {e.id: e for e in group}
                matched = watch.new_hits(self.store, owner, list(by_id), after_seq=since, upto_seq=top)
                self.rows_read += len(matched)
                candidates = watch.hit_records(
                    self.store, list(matched), audience_of=principal.agency,
                    classifications=within_clearance(principal.clearance), expired_before=now_us())
                for record in candidates:
                    if not visible(self.agency, self.trust.manifest, record, principal):
                        continue
                    if any(record.received_at >= by_id[w].created_at for w in matched.get(record.rid, [])):
                        hits.append((owner, target, record.originator, record.record_id, record.version))
        return outbox.enqueue(self.store, sorted(set(hits)), marks=moved)

    # --- delivering -------------------------------------------------------------------------

    def deliver(self, pending: outbox.Pending) -> bool:
        key = outbox.hit_key(self.agency, pending)
        target = self.targets.get(pending.target)
        principal = self._principal(pending.owner)
        record = current_record(self.store, pending.originator, pending.record_id)
        if (target is None or principal is None or record is None or record.status != "active"
                or not visible(self.agency, self.trust.manifest, record, principal)
                or not self._still_watched(pending, record.rid)):
            outbox.delivered(self.store, pending, key=key, sent=False)  # nothing to push any more
            return False
        body = json.dumps({
            "idempotency_key": key,
            "agency": self.agency,
            "user": pending.owner,
            "record": {"originator": record.originator, "record_id": record.record_id, "version": record.version,
                       "title": record.title, "classification": record.marking.classification,
                       "received_from": record.received_from},
        }, ensure_ascii=False, sort_keys=True).encode("utf-8")
        try:
            error = self._send(target, key, body)
        except Exception as exc:  # whatever the receiver does, the hit stays owed
            error = f"{type(exc).__name__}: {exc}"
        if error:
            delay = min(target.retry_seconds * 2 ** pending.attempts, target.max_retry_seconds)
            outbox.failed(self.store, pending, error=error, retry_at=now_us() + int(delay * 1_000_000))
            log.warning("notify %s failed (attempt %d, next in %.1f s): %s", target.name, pending.attempts + 1,
                        delay, error)
            return False
        outbox.delivered(self.store, pending, key=key, sent=True)
        return True

    def _still_watched(self, pending: outbox.Pending, rid: int) -> bool:
        """Whether one of the owner's entries that push to this target still matches the record
        (an entry removed, or its notify target changed, since the hit was queued: not pushed)."""
        ids = watch.matched_watches(self.store, pending.owner, [rid]).get(rid, [])
        return any(w.notify == pending.target for w in watch.list_watches(self.store, pending.owner) if w.id in ids)

    def _send(self, target: NotifyTarget, key: str, body: bytes) -> str:
        """Send once; "" on success, else what went wrong."""
        if target.command:
            env = {**os.environ, "EXCHANGE_IDEMPOTENCY_KEY": key}
            done = subprocess.run(list(target.command), input=body, env=env, capture_output=True,
                                  timeout=SEND_TIMEOUT_SECONDS, check=False)
            return "" if done.returncode == 0 else f"command exited with status {done.returncode}"
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if target.secret_file is not None:
            secret = target.secret_file.read_bytes().strip()
            headers["X-Exchange-Signature"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        context = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
        if target.client_cert is not None and target.client_key is not None:
            context.load_cert_chain(str(target.client_cert), str(target.client_key))
        request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects())
        try:
            with opener.open(request, timeout=SEND_TIMEOUT_SECONDS) as answer:
                status = int(answer.status)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the answer's connection: close it now, not when collected
            if 300 <= exc.code < 400:
                return f"HTTP {exc.code}: the webhook redirects, and redirects are not followed"
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            _close_abandoned_sockets(exc)
            return f"unreachable: {getattr(exc, 'reason', exc)}"
        return "" if 200 <= status < 300 else f"HTTP {status}"
