"""The weight service: the learner publishes versioned policy weights, actors subscribe.

It is hosted inside the learner process (one fewer process to deploy and no extra hop for the
largest messages the system sends); `Publish` also accepts versions over gRPC, so the same service
can run stand-alone if several learners ever feed one fleet. Subscribers always receive the newest
version: when the learner publishes faster than a slow actor reads, intermediate versions are
skipped, never reordered. Versions are ordered within a learner epoch (mamql/weights.py); a
version of another epoch replaces the latest whatever its number, and subscribers holding the old
epoch get it at once. Imports no torch: weights arrive here as numpy arrays.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator, Mapping

import grpc
import numpy as np

from mamql.codec import CodecError
from mamql.metrics import Counter, Gauge, Histogram
from mamql.weights import WeightAssembler, split_weights
from mamql.protos import weights_pb2, weights_pb2_grpc

log = logging.getLogger("mamql.weights")

SERVICE_NAME = "mamql.v1.WeightService"


class WeightStore:
    """The latest version's chunks and a condition subscribers wait on."""

    def __init__(self, max_chunk_bytes: int = 4 << 20):
        self.max_chunk_bytes = max_chunk_bytes
        self._cond = threading.Condition()
        self._epoch = 0
        self._version = 0
        self._chunks: list[bytes] = []  # serialized once per version, whatever the number of subscribers
        self._closed = False

    @property
    def version(self) -> int:
        return self._version

    @property
    def epoch(self) -> int:
        return self._epoch

    def publish(
        self,
        tensors: Mapping[str, np.ndarray],
        version: int | None = None,
        dtypes: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        epoch: int | None = None,
        alpha: float = 0.0,
    ) -> int:
        """Publish one version (epoch None = the current one) at temperature `alpha`."""
        with self._cond:
            epoch = self._epoch if epoch is None else epoch
            if version is None:
                version = self._version + 1 if epoch == self._epoch else 1
        chunks = split_weights(tensors, version, self.max_chunk_bytes, dtypes, metadata, epoch=epoch, alpha=alpha)
        self.publish_chunks(chunks)
        return version

    def publish_chunks(self, chunks: list[weights_pb2.WeightChunk]) -> None:
        epoch, version = chunks[0].epoch, chunks[0].version
        serialized = [chunk.SerializeToString() for chunk in chunks]
        with self._cond:
            if epoch == self._epoch and version <= self._version:
                raise ValueError(f"version {version} is not newer than the latest {self._version} of epoch {epoch}")
            if epoch != self._epoch and self._version:
                log.warning("weights of epoch %d replace epoch %d (a new learner)", epoch, self._epoch)
            self._epoch, self._version, self._chunks = epoch, version, serialized
            self._cond.notify_all()

    def wait_newer(self, after: int, timeout: float, epoch: int | None = None) -> tuple[int, int, list[bytes]] | None:
        """(epoch, version, chunks) of the latest version if it supersedes `after` of `epoch` (None =
        the current epoch): any version of another epoch, a newer one of the same. Waits at most
        `timeout` seconds."""
        def ready() -> bool:
            return self._version > 0 and ((epoch is not None and self._epoch != epoch) or self._version > after)

        with self._cond:
            self._cond.wait_for(lambda: ready() or self._closed, timeout=timeout)
            return (self._epoch, self._version, self._chunks) if ready() else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WeightServicer(weights_pb2_grpc.WeightServiceServicer):
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
    """Register the service. Subscribe and GetLatest stream the store's pre-serialized chunks (an
    identity serializer), so N subscribers cost one serialization per version, not N."""
    servicer = WeightServicer(store, registry, max_bytes)
    handlers = {
        "Publish": grpc.stream_unary_rpc_method_handler(
            servicer.Publish,
            request_deserializer=weights_pb2.WeightChunk.FromString,
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


