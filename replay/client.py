"""ReplayClient: the gRPC `Replay` (same contract as LocalReplay), plus re-exports of the streaming
helpers ReplayWriter (batched, acked, reconnecting inserts) and SampleStream (prefetching samples).

gRPC failures become replay.errors exceptions of the same class LocalReplay raises; the status code
stays available as `exc.code` (name) and `exc.grpc_code`. Insert requests and sample responses go
through mamql.wire (bytes written around the arrays; samples decoded into read-only views of the
received message), the other calls through the generated classes.
"""

from __future__ import annotations

import random
from typing import Mapping

import grpc
import numpy as np

from mamql.batch import BatchError
from mamql.codec import CodecError, decode_batch, decode_tensor, encode_batch
from mamql.protos import replay_pb2, replay_pb2_grpc
from mamql.wire import InsertEncoder, parse_sample, tune_allocator
from mamql.protos.rpc import Security, make_channel
from mamql.replay.errors import InvalidArgument, ReplayError, from_code
from mamql.replay.interface import Sample, TableInfo

RPC_SLACK_S = 5.0  # network allowance on top of the server-side wait
DEFAULT_RPC_TIMEOUT_S = 120.0
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED", "INTERNAL", "UNKNOWN"})


def from_rpc_error(err: grpc.RpcError) -> ReplayError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    exc = from_code(code.name, err.details() if hasattr(err, "details") else str(err))
    exc.grpc_code = code
    return exc


def encode_request(table: str, batch: Mapping[str, np.ndarray], sequence: int = 0,
                   timeout: float | None = None) -> replay_pb2.InsertRequest:
    """The generated-class InsertRequest (for tests and baselines; the client sends insert_encoder's bytes)."""
    try:
        msg = encode_batch({k: np.asarray(v) for k, v in batch.items()})
    except (CodecError, BatchError) as exc:
        raise InvalidArgument(f"cannot encode batch: {exc}") from None
    return replay_pb2.InsertRequest(table=table, batch=msg, sequence=sequence, timeout_seconds=timeout or 0.0)


def insert_encoder(table: str, batch: Mapping[str, np.ndarray], timeout: float | None = None) -> InsertEncoder:
    """An InsertRequest laid out for mamql.wire (`.encode(sequence)` -> bytes); InvalidArgument
    when the batch cannot travel (unsupported dtype, ragged columns)."""
    try:
        return InsertEncoder(table, batch, timeout)
    except (CodecError, BatchError) as exc:
        raise InvalidArgument(f"cannot encode batch: {exc}") from None


def decode_sample(resp: replay_pb2.SampleResponse | bytes) -> Sample:
    """A SampleResponse (its bytes, or a generated message) -> Sample of read-only views."""
    try:
        if isinstance(resp, (bytes, bytearray, memoryview)):
            batch, keys = parse_sample(resp, 1 << 62)
            return Sample(batch=batch, keys=keys)
        return Sample(batch=decode_batch(resp.batch, 1 << 62), keys=decode_tensor(resp.keys, 1 << 62))
    except CodecError as exc:
        raise InvalidArgument(f"undecodable sample from the server: {exc}") from None


def sample_or_error(data: bytes) -> Sample | ReplayError:
    """The Sample response deserializer: an undecodable response comes back as the error (gRPC
    would turn a raising deserializer into INTERNAL, which clients retry forever)."""
    try:
        return decode_sample(data)
    except ReplayError as exc:
        return exc


class Backoff:
    """Exponential backoff with full jitter; reset() after a success."""

    def __init__(self, initial: float = 0.05, maximum: float = 5.0, factor: float = 2.0):
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.current = initial

    def next(self) -> float:
        delay = random.uniform(0, self.current)
        self.current = min(self.maximum, self.current * self.factor)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class ReplayClient:
    """Implements replay.interface.Replay over one channel; thread-safe like the channel."""

    def __init__(self, address: str, security: Security | None = None, max_message_mb: int = 64):
        self.address = address
        tune_allocator()  # message buffers stay in the heap (mamql.wire.tune_allocator)
        self.security = security or Security()
        self.max_message_mb = max_message_mb
        self.channel = make_channel(address, self.security, max_message_mb)
        self.stub = replay_pb2_grpc.ReplayServiceStub(self.channel)
        service = "/mamql.v1.ReplayService/"
        # the hot methods with mamql.wire: Insert takes request bytes, Sample yields Sample (or the error)
        self.insert_call = self.channel.stream_stream(
            service + "Insert", request_serializer=None, response_deserializer=replay_pb2.InsertAck.FromString)
        self.sample_call = self.channel.unary_stream(
            service + "Sample", request_serializer=replay_pb2.SampleRequest.SerializeToString,
            response_deserializer=sample_or_error)
        self.metadata = self.security.call_metadata()

    def _deadline(self, timeout: float | None) -> float:
        return DEFAULT_RPC_TIMEOUT_S if timeout is None else max(float(timeout), 0.0) + RPC_SLACK_S

    def insert(self, table: str, batch: Mapping[str, np.ndarray], timeout: float | None = None) -> int:
        req = insert_encoder(table, batch, timeout).encode(0)
        try:
            for ack in self.insert_call(iter([req]), metadata=self.metadata, timeout=self._deadline(timeout)):
                return int(ack.inserted)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        raise ReplayError("Insert stream ended without an ack")

    def sample(self, table: str, batch_size: int, timeout: float | None = None) -> Sample:
        if int(batch_size) <= 0:
            raise InvalidArgument(f"batch_size must be positive, got {batch_size}")
        req = replay_pb2.SampleRequest(table=table, batch_size=int(batch_size), num_batches=1,
                                       timeout_seconds=timeout or 0.0)
        try:
            for resp in self.sample_call(req, metadata=self.metadata, timeout=self._deadline(timeout)):
                if isinstance(resp, ReplayError):
                    raise resp
                return resp
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        raise ReplayError("Sample stream ended without a batch")

    def info(self, timeout: float = 10.0) -> dict[str, TableInfo]:
        try:
            resp = self.stub.Info(replay_pb2.InfoRequest(), metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return {
            t.name: TableInfo(
                name=t.name, size=t.size, capacity=t.capacity, bytes=t.bytes, inserted=t.inserted,
                sampled=t.sampled, schema={f.name: (f.dtype, tuple(f.shape)) for f in t.schema},
            )
            for t in resp.tables
        }

    def checkpoint(self, path: str = "", timeout: float = 300.0) -> tuple[str, int]:
        try:
            resp = self.stub.Checkpoint(replay_pb2.CheckpointRequest(path=path), metadata=self.metadata,
                                        timeout=timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return resp.path, int(resp.transitions)

    def writer(self, table: str, **kwargs) -> "ReplayWriter":
        return ReplayWriter(self, table, **kwargs)

    def sample_stream(self, table: str, batch_size: int, **kwargs) -> "SampleStream":
        return SampleStream(self, table, batch_size, **kwargs)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


from mamql.replay.stream import SampleStream  # noqa: E402  (re-exported)
from mamql.replay.writer import ReplayWriter  # noqa: E402  (re-exported)
