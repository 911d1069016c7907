"""ReplayWriter: batched inserts over one long-lived Insert stream, with bounded memory and acks.

Delivery is AT-LEAST-ONCE: a batch leaves `unacked` only when the server's ack (sent after the batch
is stored) arrives. After a broken stream the writer reconnects (exponential backoff, full jitter)
and re-sends every unacked batch in order, so a batch whose ack was lost in flight may be stored
twice. Exactly-once would need server-side de-duplication by (writer, sequence); for replay data a
rare duplicate transition is harmless, a lost one is not observable anyway. A batch the server
refuses for good (INVALID_ARGUMENT, NOT_FOUND, ...) is dropped, counted in `failed_batches` and kept
in `errors`; the stream is reopened for the rest. Memory is bounded: queued + unacked batches never
exceed `max_queue_batches`, and `put` blocks (up to its timeout) when full.

Each `put` is one message (the actor's `send_batch_size` sets the transitions per message), encoded
at once by mamql.wire: the batch's bytes are copied once, into the request. `ack_every=k` asks the
server for one cumulative ack per k messages instead of one each (fewer small messages on the
return path; the semantics above are unchanged: an ack covers every earlier message of its stream,
and acks still pending are sent before any error). When the writer has nothing left to send but
unacked messages (and someone waits for them, or ACK_LINGER_S passed), it sends an ack request (an
InsertRequest without a batch) so that no ack is held back; `k` is in effect capped by
`max_queue_batches`, since a full queue asks for its acks.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Mapping

import grpc
import numpy as np

from mamql.replay.client import RETRYABLE, Backoff, from_rpc_error, insert_encoder
from mamql.replay.errors import DeadlineExceeded, ReplayError, Unavailable
from mamql.wire import ACK_EVERY_METADATA, ack_request

log = logging.getLogger("mamql.replay.writer")
ACK_LINGER_S = 0.05  # with ack_every > 1, an idle writer asks for its pending acks after this long


class WriterFull(DeadlineExceeded):
    """`put` could not queue a batch before its timeout (the replay is slower than the producer)."""


class ReplayWriter:
    def __init__(self, client, table: str, max_queue_batches: int = 64, insert_timeout: float | None = None,
                 registry=None, backoff: Backoff | None = None, ack_every: int = 1):
        self.client = client
        self.table = table
        self.max_queue_batches = max(1, int(max_queue_batches))
        self.ack_every = max(1, int(ack_every))
        self._waiters = 0  # threads waiting for acks (flush, a put on a full queue)
        self._ack_asked = 0  # sequence of the last ack request sent on the current stream
        self._last_send = 0.0
        self.insert_timeout = insert_timeout
        self.backoff = backoff or Backoff()
        self._cond = threading.Condition()
        self._pending: collections.deque = collections.deque()  # (seq, n, request) not yet sent
        self._unacked: collections.OrderedDict = collections.OrderedDict()  # seq -> (n, request)
        self._next_seq = 1
        self._generation = 0
        self._closing = False
        self.acked_seq = 0  # highest acknowledged sequence number
        self.acked_transitions = 0
        self.acked_batches = 0
        self.reconnects = 0
        self.failed_batches = 0
        self.errors: collections.deque = collections.deque(maxlen=16)
        self._call = None
        self._metrics = _WriterMetrics(registry, table) if registry is not None else None
        self._thread = threading.Thread(target=self._run, name=f"replay-writer-{table}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side
    def put(self, batch: Mapping[str, np.ndarray], timeout: float | None = None) -> int:
        """Queue a batch; returns its sequence number. Raises WriterFull after `timeout` seconds
        (None = wait indefinitely, 0 = never wait) and InvalidArgument if it cannot be encoded."""
        encoder = insert_encoder(self.table, batch, self.insert_timeout)  # checked and laid out outside the lock
        n = encoder.rows
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closing:
                raise Unavailable("writer is closed")
            if self.depth >= self.max_queue_batches:
                self._waiters += 1
                self._cond.notify_all()  # the sender may ask for acks
                try:
                    while self.depth >= self.max_queue_batches:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise WriterFull(f"send queue full ({self.depth} batches) for {timeout}s")
                        self._cond.wait(remaining)
                        if self._closing:
                            raise Unavailable("writer is closed")
                finally:
                    self._waiters -= 1
            seq = self._next_seq
            self._next_seq += 1
            # the one copy of the batch, into the request (under the lock, which it would hold the GIL anyway)
            request = encoder.encode(seq)
            self._pending.append((seq, n, request))
            self._cond.notify_all()
            self._gauge()
            return seq

    @property
    def depth(self) -> int:
        """Batches queued or in flight (not yet acknowledged)."""
        return len(self._pending) + len(self._unacked)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued batch is acknowledged (or dropped as refused)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            self._cond.notify_all()
            try:
                while self.depth:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining if remaining is not None else 0.5)
                return True
            finally:
                self._waiters -= 1

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, end the stream and stop the thread; True when everything was acknowledged."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not flushed and self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=5.0)
        return flushed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ background thread
    def _requests(self, generation: int, resend: collections.deque):
        """The request iterator of one stream generation (bytes); ends when the writer closes."""
        self._ack_asked = 0
        while True:
            with self._cond:
                while True:
                    if self._generation != generation:
                        return
                    if resend:
                        req = resend.popleft()
                        self._last_send = time.monotonic()
                        break
                    if self._pending:
                        seq, n, req = self._pending.popleft()
                        self._unacked[seq] = (n, req)
                        self._last_send = time.monotonic()
                        break
                    if self._closing and not self._unacked:
                        return
                    linger = self._ack_due()
                    if linger <= 0:
                        self._ack_asked = next(reversed(self._unacked))
                        req = ack_request(self.table, self._ack_asked)
                        break
                    self._cond.wait(linger)
            yield req

    def _ack_due(self) -> float:
        """Seconds until the sender should ask for the pending acks (<= 0: now); lock held."""
        if self.ack_every == 1 or not self._unacked or next(reversed(self._unacked)) == self._ack_asked:
            return 0.2
        if self._waiters or self._closing:
            return 0.0
        return self._last_send + ACK_LINGER_S - time.monotonic()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closing and not self.depth:
                    return
                self._generation += 1
                generation = self._generation
                resend = collections.deque(req for _, req in self._unacked.values())
            metadata = tuple(self.client.metadata)
            if self.ack_every > 1:
                metadata += ((ACK_EVERY_METADATA, str(self.ack_every)),)
            try:
                self._call = self.client.insert_call(self._requests(generation, resend), metadata=metadata)
                for ack in self._call:
                    self._on_ack(ack)
                    self.backoff.reset()
                with self._cond:  # stream ended normally: everything sent was acked
                    if self._closing and not self.depth:
                        return
            except grpc.RpcError as err:
                exc = from_rpc_error(err)
                with self._cond:
                    self._generation += 1  # stop this stream's request iterator
                    if self._closing and exc.code == "CANCELLED" and self.depth:
                        return  # close() gave up waiting
                    if exc.code not in RETRYABLE and self._unacked:
                        self._drop_oldest(exc)
                        continue
                self._reconnect(exc)

    def _on_ack(self, ack) -> None:
        """An ack covers its request and, in send order, every earlier one still unacked."""
        total = 0
        with self._cond:
            if ack.sequence in self._unacked:
                while True:
                    seq, (n, _) = self._unacked.popitem(last=False)
                    total += n
                    self.acked_batches += 1
                    if seq == ack.sequence:
                        break
            self.acked_seq = max(self.acked_seq, ack.sequence)
            self.acked_transitions += total
            self._cond.notify_all()
            self._gauge()
        if self._metrics and total:
            self._metrics.acked.inc(total)

    def _drop_oldest(self, exc: ReplayError) -> None:
        """Acks come in order, so the refused batch is the oldest unacked one."""
        seq, (n, _) = self._unacked.popitem(last=False)
        self.failed_batches += 1
        self.errors.append((seq, exc))
        log.warning("replay refused batch %d (%d transitions): %s", seq, n, exc)
        self._cond.notify_all()
        self._gauge()

    def _reconnect(self, exc: ReplayError) -> None:
        delay = self.backoff.next()
        self.reconnects += 1
        if self._metrics:
            self._metrics.reconnects.inc()
        log.info("insert stream broke (%s); reconnecting in %.2fs with %d unacked batches",
                 exc, delay, len(self._unacked))
        with self._cond:
            self._cond.wait_for(lambda: self._closing and not self.depth, timeout=delay)

    def _gauge(self) -> None:
        if self._metrics:
            self._metrics.depth.set(self.depth)


class _WriterMetrics:
    def __init__(self, registry, table: str):
        from mamql.metrics import Counter, Gauge

        self.depth = Gauge("mamql_replay_writer_queue_depth", "Batches queued or unacked", ["table"],
                           registry=registry).labels(table)
        self.reconnects = Counter("mamql_replay_writer_reconnects", "Insert stream reconnects", ["table"],
                                  registry=registry).labels(table)
        self.acked = Counter("mamql_replay_writer_acked_transitions", "Transitions acknowledged", ["table"],
                             registry=registry).labels(table)
