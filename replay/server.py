"""The replay gRPC service: a thin shell around LocalReplay (status codes, streams, shutdown).

Every request is decoded and validated before it touches a table; a refused request ends its RPC
with a status code (see replay.errors) and leaves the tables and the server as they were. RPC time
is booked by phase (insert, sample and their rate-limiter waits) in mamql_replay_phase_seconds_total.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import grpc
import numpy as np

from mamql.codec import CodecError
from mamql.config import Config
from mamql.metrics import MetricsServer, new_registry
from mamql.protos import replay_pb2
from mamql.protos.rpc import Security, bind, make_server, set_serving
from mamql.replay import checkpoint
from mamql.replay.errors import DeadlineExceeded, InvalidArgument, ReplayError, ResourceExhausted, Unavailable
from mamql.replay.local import LocalReplay
from mamql.replay.metrics import thread_blocked_seconds
from mamql.wire import ACK_EVERY_METADATA, BatchTemplate, InsertView, Layout, parse_insert, tune_allocator

log = logging.getLogger("mamql.replay")
SERVICE_NAME = "mamql.v1.ReplayService"
WAIT_SLICE_S = 0.5  # a waiting Insert/Sample re-checks that its client is still there this often
MAX_ACK_EVERY = 4096


def _status(context, exc: ReplayError):
    message = exc.args[0] if exc.args else exc.code
    context.abort(getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN), message)


class _Ack(NamedTuple):
    sequence: int
    inserted: int
    table: object

    def message(self) -> replay_pb2.InsertAck:
        return replay_pb2.InsertAck(sequence=self.sequence, inserted=self.inserted, table_size=self.table.size)


def _ack_every(context) -> int:
    for key, value in context.invocation_metadata() or ():
        if key == ACK_EVERY_METADATA:
            try:
                return min(max(int(value), 1), MAX_ACK_EVERY)
            except ValueError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{ACK_EVERY_METADATA} must be an integer, got {value!r}")
    return 1


class ReplayServicer:
    def __init__(self, replay: LocalReplay, max_bytes: int, checkpoint_dir: str, prefetch_workers: int = 128):
        self.replay = replay
        self.max_bytes = max_bytes
        self.checkpoint_dir = checkpoint_dir
        self.stopping = threading.Event()
        self._ckpt_lock = threading.Lock()
        self._layouts: dict[str, Layout] = {}
        self._templates: dict[tuple[str, int], BatchTemplate] = {}
        # one worker per concurrent RPC at most, so that no stream's prefetch waits for another's
        self._prefetch = ThreadPoolExecutor(prefetch_workers, thread_name_prefix="replay-sample")

    def _clients(self, delta: int) -> None:
        if self.replay.metrics is not None:
            self.replay.metrics.connected_clients.inc(delta)

    def _spent(self, phase: str, seconds: float) -> None:
        """Book RPC time by phase (mamql_replay_phase_seconds_total, mamql/phases.py)."""
        if self.replay.metrics is not None and seconds > 0:
            self.replay.metrics.phases[phase].inc(seconds)

    def _timeout(self, seconds: float, context) -> float | None:
        timeout = float(seconds) if seconds > 0 else None
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = remaining if timeout is None else min(timeout, remaining)
        return timeout

    def _waiting(self, context, call, timeout: float | None, op: str):
        """Run a rate-limited table call in slices of at most WAIT_SLICE_S seconds until it succeeds,
        its deadline passes or the client goes away. Without slicing, a cancelled or disconnected
        client's call kept its worker thread for the whole wait (up to replay.wait_timeout_s), so a
        burst of abandoned streams made the server answer RESOURCE_EXHAUSTED for that long
        (found by tests/reliability/test_reliability_security.py::test_stream_flood...). Each
        slice's time is booked as `op` (work) and `<op>_blocked` (the table's rate-limiter wait)."""
        limit = self.replay.config.wait_timeout_s if timeout is None else min(timeout, self.replay.config.wait_timeout_s)
        deadline = time.monotonic() + max(limit, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            waited, started = thread_blocked_seconds(), time.perf_counter()
            try:
                return call(max(min(remaining, WAIT_SLICE_S), 0.0))
            except DeadlineExceeded:
                if remaining <= WAIT_SLICE_S or not context.is_active() or self.stopping.is_set():
                    raise
            finally:
                waited = thread_blocked_seconds() - waited
                self._spent(f"{op}_blocked", waited)
                self._spent(op, time.perf_counter() - started - waited)

    def _check_sample_size(self, name: str, n: int) -> None:
        """Refuse a Sample whose response could not be sent anyway, before gathering it.

        Uniform sampling draws with replacement, so any batch_size used to be accepted: a request for
        2**32 - 1 rows made the server allocate the whole batch (tens of GB, under the table lock) and
        got the process OOM-killed (found by tests/reliability/test_reliability_fuzz.py). Now the
        batch must fit the message limit; before the first insert fixes the row size, batch_size may
        not exceed the table's capacity (which bounds the gather by the table's own storage)."""
        table = self.replay.table(name)
        storage = table.storage
        if storage is None:
            if n > table.capacity:
                raise ResourceExhausted(f"batch_size {n} exceeds table {name!r} capacity {table.capacity} "
                                        "(row size unknown until the first insert)")
            return
        row = sum(np.dtype(d).itemsize * math.prod(shape) for d, shape in storage.schema.values())
        if n * row > self.max_bytes:
            raise ResourceExhausted(f"a batch of {n} rows is {n * row} bytes, over the {self.max_bytes}-byte "
                                    "message limit")

    def _layout(self, table) -> Layout | None:
        """The table's precomputed wire layout (None until the first insert fixes its schema)."""
        storage = table.storage
        if storage is None:
            return None
        layout = self._layouts.get(table.name)
        if layout is None or layout.schema is not storage.schema:  # restore() may swap the storage
            layout = self._layouts[table.name] = Layout(storage.schema)
        return layout

    def _parse(self, data: bytes) -> InsertView:
        try:
            return parse_insert(data)
        except CodecError as exc:
            self.replay.reject("invalid_argument")
            raise InvalidArgument(f"undecodable insert request: {exc}") from None

    def _decode(self, request: InsertView, table) -> dict:
        try:
            return request.batch.decode(self.max_bytes, self._layout(table))
        except CodecError as exc:
            self.replay.reject("invalid_argument")
            raise InvalidArgument(f"undecodable batch: {exc}") from None

    def Insert(self, request_iterator, context):
        """Requests arrive as bytes and are parsed here (mamql.wire): views of the message, checked
        once against the table's layout, copied once into the ring. Acks: one per request, or with
        `ack-every: k` metadata one per k requests (cumulative: it acknowledges every earlier request
        of the stream too) plus one at once for each request without a batch; acks still pending
        are sent before any error status, so a client always knows exactly what was stored."""
        self._clients(1)
        try:
            ack_every = _ack_every(context)
            pending = inserted = 0
            last = None
            for data in request_iterator:
                try:
                    if self.stopping.is_set():
                        raise Unavailable("replay server is shutting down")
                    started = time.perf_counter()
                    req = self._parse(data)
                    table = self.replay.table(req.table)  # NOT_FOUND before the batch is decoded
                    if req.batch is None and ack_every > 1:  # an ack request: nothing to store
                        yield replay_pb2.InsertAck(sequence=req.sequence, inserted=inserted, table_size=table.size)
                        pending = inserted = 0
                        continue
                    if req.batch is None:
                        self.replay.reject("invalid_argument")
                        raise InvalidArgument("undecodable batch: the request has no batch")
                    batch = self._decode(req, table)
                    self._spent("insert", time.perf_counter() - started)
                    n = self._waiting(context, lambda t: self.replay.insert(table.name, batch, t),
                                      self._timeout(req.timeout_seconds, context), "insert")
                except ReplayError as exc:
                    if exc.code == "NOT_FOUND":
                        self.replay.reject("not_found")
                    if pending:
                        yield last.message()
                    _status(context, exc)
                pending += 1
                inserted += n
                last = _Ack(req.sequence, inserted, table)
                if pending >= ack_every:
                    yield last.message()
                    pending = inserted = 0
            if pending:
                yield last.message()
        finally:
            self._clients(-1)

    def Sample(self, request, context):
        """Each response is laid out before the gather and the rows are gathered straight into it
        (mamql.wire.BatchTemplate): one copy from the ring to the socket's buffer. While one
        response is being sent, the next is gathered on another thread (prefetch one), so gRPC's
        send and the table's gather overlap; a single-batch request gathers inline."""
        self._clients(1)
        try:
            want = request.num_batches
            produce = lambda: self._gather(request, context)  # noqa: E731
            try:
                data = produce()
            except ReplayError as exc:
                self._refused(context, exc)
            sent = 0
            while True:
                sent += 1
                more = (want == 0 or sent < want) and not self.stopping.is_set() and context.is_active()
                try:
                    upcoming = self._prefetch.submit(produce) if more else None
                except RuntimeError:  # the pool is shut down: the server is stopping
                    upcoming = None
                yield data
                if upcoming is None:
                    return
                try:
                    data = upcoming.result()
                except ReplayError as exc:
                    self._refused(context, exc)
                if self.stopping.is_set() or not context.is_active():
                    return
        finally:
            self._clients(-1)

    def _refused(self, context, exc: ReplayError) -> None:
        if exc.code == "NOT_FOUND":
            self.replay.reject("not_found")
        _status(context, exc)

    def _gather(self, request, context) -> bytes:
        """One SampleResponse's bytes."""
        if request.batch_size == 0:
            raise InvalidArgument("batch_size must be positive")
        self._check_sample_size(request.table, request.batch_size)
        message: list[bytes] = []
        keys_view: list[np.ndarray] = []

        def into(schema, n):
            template = self._templates.get((request.table, n))
            if template is None or template.schema is not schema:
                template = self._templates[(request.table, n)] = BatchTemplate(schema, n)
            data, views, keys = template.allocate()
            message.append(data)
            keys_view.append(keys)
            return views

        sample = self._waiting(context, lambda t: self.replay.sample(request.table, request.batch_size, t, into),
                               self._timeout(request.timeout_seconds, context), "sample")
        keys_view[0][...] = sample.keys
        return message[0]

    def Info(self, request, context):
        try:
            tables = [self.replay.table(request.table)] if request.table else list(self.replay.tables.values())
        except ReplayError as exc:
            _status(context, exc)
        out = replay_pb2.InfoResponse()
        for t in tables:
            i = t.info()
            status = out.tables.add(name=i.name, size=i.size, capacity=i.capacity, bytes=i.bytes,
                                    inserted=i.inserted, sampled=i.sampled, sampler=t.sampler.name)
            for name, (dtype, shape) in i.schema.items():
                status.schema.add(name=name, dtype=dtype, shape=list(shape))
        return out

    def Checkpoint(self, request, context):
        path = request.path or self.checkpoint_dir
        if not checkpoint_path_allowed(path, self.checkpoint_dir):
            self.replay.reject("checkpoint_path")
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"checkpoint path {path!r} is outside the server's working directory and checkpoint root")
        try:
            return replay_pb2.CheckpointResponse(path=path, transitions=self.checkpoint(path))
        except OSError as exc:
            context.abort(grpc.StatusCode.INTERNAL, f"checkpoint to {path} failed: {exc}")

    def checkpoint(self, path: str) -> int:
        with self._ckpt_lock:  # one writer at a time; tables stay available meanwhile
            start = time.monotonic()
            n = checkpoint.save(self.replay.snapshot(), path)
            log.info("checkpoint: %d transitions to %s in %.2fs", n, path, time.monotonic() - start)
            return n


def service_handler(servicer: ReplayServicer) -> grpc.GenericRpcHandler:
    """The ReplayService with its hot messages in mamql.wire's codec: Insert takes raw bytes (parsed
    in the handler, so a malformed batch is an INVALID_ARGUMENT with its reason) and Sample returns
    the bytes it laid out; Info and Checkpoint use the generated classes."""
    handlers = {
        "Insert": grpc.stream_stream_rpc_method_handler(
            servicer.Insert, request_deserializer=None,
            response_serializer=replay_pb2.InsertAck.SerializeToString),
        "Sample": grpc.unary_stream_rpc_method_handler(
            servicer.Sample, request_deserializer=replay_pb2.SampleRequest.FromString, response_serializer=None),
        "Info": grpc.unary_unary_rpc_method_handler(
            servicer.Info, request_deserializer=replay_pb2.InfoRequest.FromString,
            response_serializer=replay_pb2.InfoResponse.SerializeToString),
        "Checkpoint": grpc.unary_unary_rpc_method_handler(
            servicer.Checkpoint, request_deserializer=replay_pb2.CheckpointRequest.FromString,
            response_serializer=replay_pb2.CheckpointResponse.SerializeToString),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def checkpoint_path_allowed(path: str, checkpoint_dir: str) -> bool:
    """A client may name where a checkpoint goes, but only below the server's working directory or
    its configured checkpoint root: the RPC must not become a write-anywhere primitive."""
    target = Path(path).resolve()
    roots = (Path.cwd().resolve(), Path(checkpoint_dir).resolve().parent)
    return any(target == root or root in target.parents for root in roots)


def default_checkpoint_dir(config: Config) -> str:
    return config.replay.checkpoint_dir or str(Path(config.run.root) / config.run.name / "checkpoints" / "replay")


class ReplayServer:
    """The service plus its /metrics endpoint; in-process for tests (`start()` -> port, `stop()`)."""

    def __init__(self, config: Config, registry=None, restore: str | None = None, max_workers: int | None = None):
        self.config = config
        tune_allocator()  # message buffers stay in the heap (mamql.wire.tune_allocator)
        self.registry = registry if registry is not None else new_registry()
        self.replay = LocalReplay(config.replay, registry=self.registry)
        if restore:
            self.replay.restore(checkpoint.load(restore))
            log.info("restored %s from %s", {n: t.size for n, t in self.replay.tables.items()}, restore)
        self.security = Security.from_config(config.auth)
        self.security.check_bind(config.replay.host, config.auth.insecure_no_auth)
        workers = max_workers or config.replay.max_workers
        self.servicer = ReplayServicer(self.replay, config.replay.max_message_mb << 20, default_checkpoint_dir(config),
                                       prefetch_workers=4 * workers)  # make_server admits 4 RPCs per worker
        self.server, self.health = make_server(
            self.security, config.replay.max_message_mb, max_workers=workers,
            on_reject=lambda method: self.replay.reject("unauthenticated"),
        )
        self.server.add_generic_rpc_handlers((service_handler(self.servicer),))
        self.port = 0
        self.metrics_server: MetricsServer | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.config.replay.host}:{self.port}"

    def start(self) -> int:
        """Bind and serve; a busy or unusable port is a PortInUse (one line from the CLI), checked
        for the gRPC and the metrics port before either is bound."""
        from mamql.ports import PortInUse, check_port_free

        replay, metrics = self.config.replay, self.config.metrics
        check_port_free(replay.host, replay.port, "replay.port")
        if metrics.enabled:
            check_port_free(metrics.host, metrics.port, "metrics.port")
        try:
            self.port = bind(self.server, self.security, replay.host, replay.port)
        except RuntimeError as exc:  # grpc's "Failed to bind ...": e.g. lost a race for the port
            raise PortInUse(f"replay.port: cannot listen on {replay.host}:{replay.port}: {str(exc).split(';')[0]}") from None
        self.server.start()
        set_serving(self.health, [SERVICE_NAME], True)
        if self.config.metrics.enabled:
            self.metrics_server = MetricsServer(self.registry, self.config.metrics.host, self.config.metrics.port)
        log.info("replay serving on %s (tables: %s)", self.address, ", ".join(self.replay.tables))
        return self.port

    def stop(self, grace: float = 5.0, final_checkpoint: bool | None = None) -> str | None:
        """NOT_SERVING, refuse new RPCs, let in-flight ones finish for `grace` s, then wake any
        rate-limiter waiters, optionally write a final checkpoint. Returns its path, if written."""
        if self._stopped.is_set():
            return None
        self._stopped.set()
        set_serving(self.health, [SERVICE_NAME], False)
        self.servicer.stopping.set()
        done = self.server.stop(grace)
        if not done.wait(grace + 1.0):
            log.warning("in-flight RPCs still running after %.1fs grace", grace)
        self.replay.close()
        done.wait(5.0)
        self.servicer._prefetch.shutdown(wait=False, cancel_futures=True)
        path = None
        if self.config.replay.checkpoint_on_exit if final_checkpoint is None else final_checkpoint:
            path = self.servicer.checkpoint_dir
            self.servicer.checkpoint(path)
        if self.metrics_server is not None:
            self.metrics_server.close()
        return path

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)
