"""SampleStream: an iterator over a server-streaming Sample, prefetched by a thread, reconnecting.

The prefetch queue is bounded (`prefetch` batches); gRPC flow control then slows the server down.
Batches are read-only numpy views of the received message (mamql.wire), decoded on this thread:
copy them (e.g. straight into pinned memory) rather than writing to them.
Retryable failures (server restart, rate-limiter deadline) reconnect with backoff; a permanent one
(NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED) is raised from `next()`.
"""

from __future__ import annotations

import logging
import queue
import threading

import grpc

from mamql.protos import replay_pb2
from mamql.replay.client import RETRYABLE, Backoff, from_rpc_error
from mamql.replay.errors import DeadlineExceeded, ReplayError
from mamql.replay.interface import Sample

log = logging.getLogger("mamql.replay.stream")


class SampleStream:
    def __init__(self, client, table: str, batch_size: int, prefetch: int = 4, wait_timeout: float = 0.0,
                 backoff: Backoff | None = None):
        self.client = client
        self.request = replay_pb2.SampleRequest(table=table, batch_size=int(batch_size), num_batches=0,
                                                timeout_seconds=wait_timeout)
        self.backoff = backoff or Backoff()
        self.reconnects = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._call = None
        self._thread = threading.Thread(target=self._run, name=f"replay-sample-{table}", daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self) -> Sample:
        return self.next()

    def next(self, timeout: float | None = None) -> Sample:
        """The next prefetched sample; DeadlineExceeded after `timeout` seconds without one."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise DeadlineExceeded(f"no sample within {timeout}s") from None
        if isinstance(item, BaseException):
            self._stop.set()
            raise item
        return item

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._call = self.client.sample_call(self.request, metadata=self.client.metadata)
                for resp in self._call:  # a Sample, or the ReplayError of an undecodable response
                    if isinstance(resp, ReplayError):
                        raise resp
                    self.backoff.reset()
                    if not self._put(resp):
                        return
                error: ReplayError | None = None  # server ended the stream (shutdown): reconnect
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if self._stop.is_set():
                    return
                if error.code not in RETRYABLE:
                    self._put(error)
                    return
            except ReplayError as exc:  # undecodable response
                self._put(exc)
                return
            self.reconnects += 1
            log.info("sample stream ended (%s); reconnecting", error or "server closed it")
            self._stop.wait(self.backoff.next())

    def close(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=5.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
