"""Receives new policy weight versions in the background; the actor swaps them in between steps.

The stream runs on its own thread and only ever hands over a complete version (see
mamql.weights.WeightAssembler) that is newer than the last one handed over, so an actor never acts
with torn weights or goes back to an older version of the same learner. A version of another
learner epoch (a learner restarted without its checkpoint, whose versions begin again at 1) is
handed over at once. When the weight service goes away the thread reconnects with exponential
backoff and jitter, resuming after the newest (epoch, version) it holds.

Chunks are parsed by mamql.wire into views of the received messages: a parameter that arrives in
one slice is handed over as a read-only view (copy it, as the actor does when loading weights).
"""

from __future__ import annotations

import logging
import random
import threading
import time

import grpc

from mamql.codec import CodecError
from mamql.metrics import Counter, Gauge, Histogram, LATENCY_BUCKETS
from mamql import wire
from mamql.weights import WeightAssembler, WeightSet
from mamql.protos import rpc, weights_pb2

SUBSCRIBE = "/mamql.v1.WeightService/Subscribe"


def chunk_or_error(data: bytes) -> wire.WireChunk | CodecError:
    """The Subscribe response deserializer: a malformed chunk comes back as its error (gRPC would
    turn a raising deserializer into INTERNAL)."""
    try:
        return wire.parse_chunk(data)
    except CodecError as exc:
        return exc

log = logging.getLogger("mamql.actor.weights")


class WeightSubscriber:
    def __init__(
        self,
        address: str,
        name: str,
        security: rpc.Security | None = None,
        max_message_mb: int = 64,
        registry=None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ):
        self.address, self.name = address, name
        wire.tune_allocator()  # received chunk buffers stay in the heap between versions
        self.security = security or rpc.Security()
        self.max_message_mb = max_message_mb
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self._lock = threading.Lock()
        self._pending: WeightSet | None = None
        self._received_epoch = 0  # (epoch, version) of the newest complete version seen on the stream
        self._received_version = 0
        self._stop = threading.Event()
        self._call = None
        self._connected = threading.Event()
        self.versions_received = 0
        self.reconnects = Counter(
            "mamql_actor_weight_reconnects_total", "Reconnects to the weight service", registry=registry
        )
        self.latency = Histogram(
            "mamql_weights_apply_latency_seconds",
            "Learner publish to the actor acting with the new version",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received = Gauge("mamql_actor_weight_version_received", "Newest weight version received", registry=registry)
        self._thread = threading.Thread(target=self._run, name=f"weights-{name}", daemon=True)

    def start(self) -> "WeightSubscriber":
        self._thread.start()
        return self

    def take(self) -> WeightSet | None:
        """The newest complete version not yet taken, or None (cheap: called every env step)."""
        if self._pending is None:
            return None
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = self.backoff_initial_s
        while not self._stop.is_set():
            try:
                with rpc.make_channel(self.address, self.security, self.max_message_mb) as channel:
                    subscribe = channel.unary_stream(
                        SUBSCRIBE, request_serializer=weights_pb2.SubscribeRequest.SerializeToString,
                        response_deserializer=chunk_or_error)
                    request = weights_pb2.SubscribeRequest(after_version=self._received_version,
                                                           epoch=self._received_epoch, subscriber=self.name)
                    self._call = subscribe(request, metadata=self.security.call_metadata())
                    self._connected.set()
                    assembler = WeightAssembler()
                    for chunk in self._call:
                        if isinstance(chunk, CodecError):
                            raise chunk
                        delay = self.backoff_initial_s
                        done = assembler.add(chunk)
                        if done is not None:
                            self._deliver(done)
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    log.error("weight service rejected our token: %s", exc.details())
                else:
                    log.warning("weight stream to %s lost (%s); retrying in %.1fs", self.address, code, delay)
            except CodecError as exc:
                log.error("malformed weights from %s: %s", self.address, exc)
            finally:
                self._connected.clear()
                self._call = None
            if self._stop.wait(delay * random.uniform(0.5, 1.5)):
                break
            self.reconnects.inc()
            delay = min(delay * 2, self.backoff_max_s)

    def _deliver(self, weights: WeightSet) -> None:
        if not weights.supersedes(self._received_epoch, self._received_version):
            return  # never older after newer within an epoch
        if weights.epoch != self._received_epoch and self._received_version:
            log.warning("weights of a new learner epoch (%d, version %d) replace epoch %d version %d",
                        weights.epoch, weights.version, self._received_epoch, self._received_version)
        with self._lock:
            self._received_epoch, self._received_version = weights.epoch, weights.version
            self._pending = weights
        self.versions_received += 1
        self.received.set(weights.version)

    def applied(self, weights: WeightSet) -> None:
        """Record publish -> applied latency once the actor swapped `weights` in."""
        if weights.published_unix_s:
            self.latency.observe(max(time.time() - weights.published_unix_s, 0.0))
