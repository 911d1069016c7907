"""The weight service: the learner publishes versioned policy weights, actors subscribe.

It is hosted inside the learner process (one fewer process to deploy and no extra hop for the
largest messages the system sends); `Publish` also accepts versions over gRPC, so the same service
can run stand-alone if several learners ever feed one fleet. Subscribers always receive the newest
version: when the learner publishes faster than a slow actor reads, intermediate versions are
skipped, never reordered. Versions are ordered within a learner epoch (mamql/weights.py); a
version of another epoch replaces the latest whatever its number, and subscribers holding the old
epoch get it at once. Imports no torch: weights arrive here as numpy arrays.

Chunks travel in mamql.wire's codec: a version is written to bytes once (each parameter's bytes
copied once, into its chunk), streamed to subscribers while the rest is being written, and the same
bytes objects go to every subscriber; a chunk published over gRPC is parsed into views of its
message and stored as the bytes it came in.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator, Mapping

import grpc
import numpy as np

from mamql import wire
from mamql.codec import CodecError
from mamql.metrics import Counter, Gauge, Histogram
from mamql.weights import WeightAssembler, WeightEncoder
from mamql.protos import weights_pb2

log = logging.getLogger("mamql.weights")

SERVICE_NAME = "mamql.v1.WeightService"


class _Version:
    """One published version: its chunk bytes (appended while it is being encoded) and whether
    they are all there."""

    __slots__ = ("epoch", "version", "chunks", "complete")

    def __init__(self, epoch: int, version: int, chunks: list[bytes], complete: bool):
        self.epoch, self.version, self.chunks, self.complete = epoch, version, chunks, complete


class WeightStore:
    """The latest version's chunks and a condition subscribers wait on. A version is encoded once,
    whatever the number of subscribers, and streamed while it is encoded: subscribers receive its
    first chunks while the publisher writes the rest (they apply a version only once it is whole)."""

    def __init__(self, max_chunk_bytes: int = 4 << 20):
        wire.tune_allocator()  # chunk buffers stay in the heap between versions
        self.max_chunk_bytes = max_chunk_bytes
        self._cond = threading.Condition()
        self._latest = _Version(0, 0, [], True)
        self._closed = False

    @property
    def version(self) -> int:
        return self._latest.version

    @property
    def epoch(self) -> int:
        return self._latest.epoch

    def publish(
        self,
        tensors: Mapping[str, np.ndarray],
        version: int | None = None,
        dtypes: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        epoch: int | None = None,
        alpha: float = 0.0,
    ) -> int:
        """Publish one version (epoch None = the current one) at temperature `alpha`; returns when
        every chunk is encoded."""
        with self._cond:
            epoch = self.epoch if epoch is None else epoch
            if version is None:
                version = self.version + 1 if epoch == self.epoch else 1
        encoder = WeightEncoder(tensors, version, self.max_chunk_bytes, dtypes, metadata, epoch=epoch, alpha=alpha)
        current = _Version(epoch, version, [], False)
        previous = self._begin(current)
        try:
            for i in range(len(encoder)):
                data = encoder.chunk(i)
                with self._cond:
                    current.chunks.append(data)
                    self._cond.notify_all()
        except BaseException:
            with self._cond:  # never leave a torn version as the latest
                if self._latest is current:
                    self._latest = previous
                current.complete = True
                self._cond.notify_all()
            raise
        with self._cond:
            current.complete = True
            self._cond.notify_all()
        return version

    def publish_chunks(self, chunks: list) -> None:
        """Publish a version given as its chunks: generated WeightChunk messages or mamql.wire
        WireChunks (those keep the bytes they arrived in)."""
        serialized = [chunk.raw if isinstance(chunk, wire.WireChunk) else chunk.SerializeToString() for chunk in chunks]
        self._begin(_Version(chunks[0].epoch, chunks[0].version, serialized, True))

    def _begin(self, new: _Version) -> _Version:
        """Make `new` the latest (it must supersede it); returns the one it replaces."""
        with self._cond:
            latest = self._latest
            if new.epoch == latest.epoch and new.version <= latest.version:
                raise ValueError(f"version {new.version} is not newer than the latest {latest.version} "
                                 f"of epoch {new.epoch}")
            if new.epoch != latest.epoch and latest.version:
                log.warning("weights of epoch %d replace epoch %d (a new learner)", new.epoch, latest.epoch)
            self._latest = new
            self._cond.notify_all()
            return latest

    def wait_newer(self, after: int, timeout: float, epoch: int | None = None) -> tuple[int, int, Iterator[bytes]] | None:
        """(epoch, version, its chunks) of the latest version if it supersedes `after` of `epoch`
        (None = the current epoch): any version of another epoch, a newer one of the same. Waits at
        most `timeout` seconds. The chunks iterator yields them as they are encoded."""
        def ready() -> bool:
            v = self._latest
            return v.version > 0 and ((epoch is not None and v.epoch != epoch) or v.version > after)

        with self._cond:
            self._cond.wait_for(lambda: ready() or self._closed, timeout=timeout)
            if not ready():
                return None
            v = self._latest
            return v.epoch, v.version, self._chunks(v)

    def _chunks(self, v: _Version) -> Iterator[bytes]:
        i = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: i < len(v.chunks) or v.complete or self._closed, timeout=5.0)
                if i >= len(v.chunks):
                    if v.complete or self._closed:
                        return
                    continue
                data = v.chunks[i]
            i += 1
            yield data

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WeightServicer:
    def __init__(self, store: WeightStore, registry=None, max_bytes: int = 1 << 31):
        self.store = store
        self.max_bytes = max_bytes
        self._subscribers = Gauge(
            "mamql_weights_subscribers", "Actors subscribed to weight updates", registry=registry
        )
        self._sent = Counter(
            "mamql_weights_versions_sent_total", "Weight versions sent to subscribers", registry=registry
        )
        self._version = Gauge("mamql_weights_version", "Latest published weight version", registry=registry)
        self._version.set_function(lambda: self.store.version)
        self._publish_bytes = Histogram(
            "mamql_weights_publish_bytes", "Payload of a published version",
            buckets=(1e4, 1e5, 1e6, 1e7, 1e8, 1e9), registry=registry,
        )

    def Publish(self, request_iterator, context):
        assembler = WeightAssembler(self.max_bytes)
        chunks = []
        try:
            for chunk in request_iterator:
                chunks.append(chunk)
                done = assembler.add(chunk)
                if done is not None:
                    if not done.tensors:  # found by tests/reliability fuzz: an empty version was accepted
                        raise CodecError(f"version {done.version} has no parameters")
                    self.store.publish_chunks(chunks)
                    self._publish_bytes.observe(done.nbytes)
                    return weights_pb2.PublishResponse(version=done.version, bytes=done.nbytes)
        except CodecError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ValueError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream ended before a chunk with last=true")

    def Subscribe(self, request, context) -> Iterator[bytes]:
        epoch, after = request.epoch, request.after_version
        self._subscribers.inc()
        try:
            while context.is_active():
                newer = self.store.wait_newer(after, timeout=0.5, epoch=epoch)
                if newer is None:
                    continue
                epoch, after, chunks = newer
                yield from chunks
                self._sent.inc()
        finally:
            self._subscribers.dec()

    def GetLatest(self, request, context):
        newer = self.store.wait_newer(0, timeout=0)
        if newer is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no weights published yet")
        yield from newer[2]


def serve_weights(store: WeightStore, server: grpc.Server, registry=None, max_bytes: int = 1 << 31) -> WeightServicer:
    """Register the service. Subscribe and GetLatest stream the store's chunk bytes as they are (an
    identity serializer), so N subscribers cost one encoding per version, not N."""
    servicer = WeightServicer(store, registry, max_bytes)
    handlers = {
        "Publish": grpc.stream_unary_rpc_method_handler(
            servicer.Publish,
            request_deserializer=wire.parse_chunk,  # a malformed chunk: INVALID_ARGUMENT (rpc.MalformedRequestInterceptor)
            response_serializer=weights_pb2.PublishResponse.SerializeToString,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            servicer.Subscribe,
            request_deserializer=weights_pb2.SubscribeRequest.FromString,
            response_serializer=_identity,
        ),
        "GetLatest": grpc.unary_stream_rpc_method_handler(
            servicer.GetLatest,
            request_deserializer=weights_pb2.GetLatestRequest.FromString,
            response_serializer=_identity,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    return servicer


def _identity(data: bytes) -> bytes:
    return data


