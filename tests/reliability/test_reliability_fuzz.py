"""Fuzz: >= 1,000 malformed requests against a live replay and a live weight service over real gRPC.

Every request must end in a clean status code (never UNKNOWN or INTERNAL, i.e. no unhandled server
exception), the servers stay up, and a well-formed client writing concurrently finds its data and
counts exact afterwards. Seeded, so a failure reproduces.
"""

from __future__ import annotations

import collections
import math
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mamql.codec import encode_batch, encode_tensor  # noqa: E402
from mamql.config import TableConfig, with_updates  # noqa: E402
from mamql.weights import split_weights  # noqa: E402
from mamql.protos import replay_pb2, rpc, tensor_pb2, weights_pb2  # noqa: E402
from mamql.protos.rpc import Security  # noqa: E402
from mamql.replay.client import ReplayClient  # noqa: E402
from mamql.replay.server import ReplayServer  # noqa: E402
from replay_helpers import gems_batch, make_config  # noqa: E402

IDENTITY = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
CLEAN = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "CANCELLED", "FAILED_PRECONDITION",
         "DEADLINE_EXCEEDED", "OUT_OF_RANGE"}
R = "/mamql.v1.ReplayService/"
W = "/mamql.v1.WeightService/"
TABLES = (TableConfig(name="online", capacity=100_000), TableConfig(name="fuzz", capacity=1000),
          TableConfig(name="expert", capacity=100, read_only=True), TableConfig(name="small", capacity=8))


def tensor(dtype="float32", shape=(4,), data=None) -> tensor_pb2.Tensor:
    size = math.prod(shape) if all(d >= 0 for d in shape) else 0
    if data is None:
        from mamql.codec import ITEMSIZE

        data = bytes(size * ITEMSIZE.get(dtype, 4))
    return tensor_pb2.Tensor(dtype=dtype, shape=list(shape), data=data)


class Fuzzer:
    """Seeded generators of malformed requests; each returns (method, kind, payload)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def noise(self, max_len=200) -> bytes:
        return self.rng.integers(0, 256, int(self.rng.integers(1, max_len)), dtype=np.uint8).tobytes()

    def good_batch(self, n=4) -> tensor_pb2.TransitionBatch:
        return encode_batch(gems_batch(n, start=int(self.rng.integers(1000))))

    def bad_batch(self) -> tuple[str, tensor_pb2.TransitionBatch]:
        msg = self.good_batch()
        case = int(self.rng.integers(14))
        agent = msg.agents["agent_0"]
        if case == 0:
            agent.obs.dtype = str(self.rng.choice(["complex128", "object", "", "float128", "U8", "<f4"]))
        elif case == 1:
            agent.obs.shape[1] = int(self.rng.integers(-(1 << 40), 0))  # negative size
        elif case == 2:
            agent.obs.shape[:] = [1 << 40, 1 << 40, 1 << 20]  # huge declared shape, tiny payload
        elif case == 3:
            agent.obs.data = agent.obs.data[: int(self.rng.integers(len(agent.obs.data)))]  # truncated payload
        elif case == 4:
            bad = np.full(4, self.rng.choice([np.nan, np.inf, -np.inf]), np.float32)
            agent.reward.CopyFrom(encode_tensor(bad))
        elif case == 5:
            agent.action.CopyFrom(encode_tensor(np.zeros(5, np.int64)))  # column length mismatch
        elif case == 6:
            agent.obs.CopyFrom(encode_tensor(np.zeros((4, 5, 15, 14), np.uint8)))  # wrong per-row shape
        elif case == 7:
            agent.obs.CopyFrom(encode_tensor(np.zeros((4, 5, 15, 15), np.float64)))  # wrong dtype for the table
        elif case == 8:
            msg.done.CopyFrom(tensor("bool", ()))  # scalar column
        elif case == 9:
            agent.obs.shape[:] = [1] * 17  # too many dimensions
            agent.obs.data = b"\0"
        elif case == 10:
            msg.agents["bad/name"].obs.CopyFrom(encode_tensor(np.zeros((4, 2), np.float32)))
        elif case == 11:
            msg = tensor_pb2.TransitionBatch()  # no fields at all
        elif case == 12:
            msg.extras["done"].CopyFrom(encode_tensor(np.zeros(4, bool)))  # duplicates a named field
        else:
            msg.policy_version.data = self.noise(64)  # random payload bytes
        return f"batch-{case}", msg

    def replay_case(self):
        kind = int(self.rng.integers(9))
        if kind == 0:
            method = str(self.rng.choice(["Info", "Insert", "Sample"]))
            return f"noise-{method}", method, self.noise()
        if kind in (1, 2, 3):
            name, batch = self.bad_batch()
            return name, "Insert", [replay_pb2.InsertRequest(table="fuzz", batch=batch, timeout_seconds=1.0)]
        if kind == 4:
            table = str(self.rng.choice(["nope", "", "online/../x", "\u2603" * 50, "expert", "small"]))
            n = 32 if table == "small" else 4  # bigger than the table, or a read-only / unknown table
            return f"table-{table[:8]}", "Insert", [replay_pb2.InsertRequest(table=table, batch=self.good_batch(n))]
        if kind == 5:
            size = int(self.rng.choice([0, 2**32 - 1, 1 << 31, 100_000]))
            table = str(self.rng.choice(["fuzz", "nope", ""]))
            timeout = float(self.rng.choice([0.0, -1.0, np.nan, np.inf, 0.3]))
            return f"sample-{size}", "Sample", replay_pb2.SampleRequest(
                table=table, batch_size=size, num_batches=1, timeout_seconds=timeout)
        if kind == 6:  # a good request then garbage on the same stream
            good = replay_pb2.InsertRequest(table="fuzz", batch=self.good_batch(), sequence=1)
            return "truncated-stream", "Insert", [good, self.noise()]
        if kind == 7:  # the stream is cancelled by the client while the server waits for more
            return "cancelled-insert", "Insert-cancel", [replay_pb2.InsertRequest(table="fuzz", batch=self.good_batch())]
        return "cancelled-sample", "Sample-cancel", replay_pb2.SampleRequest(table="fuzz", batch_size=2, num_batches=0)

    def weight_case(self):
        kind = int(self.rng.integers(8))
        if kind == 0:
            method = str(self.rng.choice(["Publish", "Subscribe", "GetLatest"]))
            return f"noise-{method}", method, self.noise()
        chunks = split_weights({"agent_0/w": np.ones((3, 4), np.float32), "agent_0/b": np.ones(4, np.float32)},
                               version=10**6 + int(self.rng.integers(1000)), max_chunk_bytes=16)
        if kind == 1:
            return "no-last", "Publish", chunks[:-1]  # truncated: stream ends before last=true
        if kind == 2:
            chunks[0].slices[0].offset = int(self.rng.integers(1, 1 << 62))
            return "bad-offset", "Publish", chunks
        if kind == 3:
            chunks[0].slices[0].shape[:] = [int(self.rng.choice([-1, 1 << 40])), 4]
            return "bad-shape", "Publish", chunks
        if kind == 4:
            chunks[0].slices[0].data.dtype = str(self.rng.choice(["object", "complex64", ""]))
            return "bad-dtype", "Publish", chunks
        if kind == 5:
            for c in chunks:
                c.version = 1  # not newer than the latest
            return "stale-version", "Publish", chunks
        if kind == 6:
            chunks[-1].version += 1  # versions mixed inside one publish
            return "mixed-version", "Publish", chunks
        return "empty-version", "Publish", [weights_pb2.WeightChunk(version=10**7, last=True)]


def run_case(channel, service: str, method: str, payload) -> str:
    def ser(x):
        return x if isinstance(x, bytes) else x.SerializeToString()

    if method in ("Insert", "Publish") and isinstance(payload, bytes):
        payload = [payload]  # raw noise as the stream's only message
    try:
        if method == "Insert":
            list(channel.stream_stream(service + "Insert", **IDENTITY)(iter([ser(p) for p in payload]), timeout=5))
        elif method == "Insert-cancel":
            done = threading.Event()

            def requests():
                yield from (ser(p) for p in payload)
                done.wait(5)  # hold the stream open: the client cancels it

            call = channel.stream_stream(service + "Insert", **IDENTITY)(requests(), timeout=5)
            next(call)  # the ack of the complete batch
            call.cancel()
            done.set()
            list(call)
        elif method == "Sample-cancel":
            call = channel.unary_stream(service + "Sample", **IDENTITY)(ser(payload), timeout=5)
            call.cancel()
            list(call)
        elif method in ("Sample", "Subscribe", "GetLatest"):
            call = channel.unary_stream(service + method, **IDENTITY)(ser(payload), timeout=5)
            for i, _ in enumerate(call):
                if i >= 2:  # a subscription streams forever
                    call.cancel()
        elif method == "Publish":
            channel.stream_unary(service + "Publish", **IDENTITY)(iter([ser(p) for p in payload]), timeout=5)
        else:
            channel.unary_unary(service + method, **IDENTITY)(ser(payload), timeout=5)
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


@pytest.fixture
def replay_server():
    cfg = with_updates(make_config(tables=TABLES), replay={"wait_timeout_s": 1.0})
    server = ReplayServer(cfg)
    server.start()
    yield server
    server.stop(grace=0.5, final_checkpoint=False)


def test_replay_fuzz_clean_codes_server_up_and_good_client_exact(replay_server):
    fuzz = Fuzzer(seed=1234)
    stop = threading.Event()
    good = {"sent": 0, "error": None}

    def good_client():  # a well-formed writer running throughout the fuzzing
        try:
            with ReplayClient(replay_server.address) as client:
                i = 0
                while not stop.is_set() and i < 10_000:
                    good["sent"] += client.insert("online", gems_batch(8, start=8 * i), timeout=5)
                    i += 1
                    time.sleep(0.002)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            good["error"] = exc

    writer = threading.Thread(target=good_client, daemon=True)
    writer.start()
    results: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    # a well-formed first insert fixes the fuzz table's schema, so schema-mismatch cases are reachable
    with ReplayClient(replay_server.address) as client:
        client.insert("fuzz", gems_batch(4), timeout=2)
    cancelled_inserts = 0
    started = time.monotonic()
    with grpc.insecure_channel(replay_server.address, options=rpc.channel_options(64)) as channel:
        for _ in range(1200):
            name, method, payload = fuzz.replay_case()
            code = run_case(channel, R, method, payload)
            results[name][code] += 1
            cancelled_inserts += method == "Insert-cancel"
    stop.set()
    writer.join(timeout=10)
    elapsed = time.monotonic() - started
    bad = {n: dict(c) for n, c in results.items() if set(c) - CLEAN}
    assert not bad, f"unclean status codes: {bad}"
    # malformed batches are all refused; the only OKs are the complete batches of the stream cases
    for name, counts in results.items():
        if name.startswith(("batch-", "table-")):
            assert set(counts) <= {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}, (
                name, counts)
    assert sum(sum(c.values()) for c in results.values()) == 1200
    assert good["error"] is None, good["error"]
    assert good["sent"] > 0
    info = replay_server.replay.tables["online"].info()
    assert info.size == info.inserted == good["sent"]  # exact: nothing lost, nothing extra
    with ReplayClient(replay_server.address) as client:
        sample = client.sample("online", 64, timeout=2)
        assert set(sample.batch) == set(gems_batch(1))
        assert np.all(sample.batch["actor_id"] == 0)
        # the fuzz table holds the first insert plus exactly one 4-row batch per stream case that
        # sent a complete, valid batch before being truncated or cancelled: never a partial batch
        fuzz_info = client.info()["fuzz"]
        stream_ok = results["truncated-stream"]["INVALID_ARGUMENT"] + cancelled_inserts
        assert fuzz_info.inserted == 4 + 4 * stream_ok, (fuzz_info, stream_ok)
    print(f"replay fuzz: 1200 malformed requests in {elapsed:.1f}s: "
          + ", ".join(f"{n}={dict(c)}" for n, c in sorted(results.items())))


def test_weight_service_fuzz_clean_codes_and_latest_version_intact():
    from mamql.learner.weight_service import WeightStore, serve_weights

    security = Security()
    server, _ = rpc.make_server(security, 64)
    store = WeightStore()
    serve_weights(store, server)
    port = rpc.bind(server, security, "127.0.0.1", 0)
    server.start()
    try:
        expected = {"agent_0/w": np.arange(12, dtype=np.float32).reshape(3, 4)}
        store.publish(expected, version=5)
        fuzz = Fuzzer(seed=99)
        results: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(600):
                name, method, payload = fuzz.weight_case()
                results[name][run_case(channel, W, method, payload)] += 1
            bad = {n: dict(c) for n, c in results.items() if set(c) - CLEAN}
            assert not bad, f"unclean status codes: {bad}"
            for name, counts in results.items():
                if not name.startswith("noise-"):
                    assert "OK" not in counts, (name, counts)  # no malformed version was accepted
            assert store.version == 5
            from mamql.weights import iter_assembled

            latest = list(channel.unary_stream(W + "GetLatest", request_serializer=lambda b: b,
                                               response_deserializer=weights_pb2.WeightChunk.FromString)(b"", timeout=5))
            (got,) = list(iter_assembled(latest))
            assert got.version == 5 and np.array_equal(got.tensors["agent_0/w"], expected["agent_0/w"])
        print("weight fuzz: 600 malformed requests: " + ", ".join(f"{n}={dict(c)}" for n, c in sorted(results.items())))
    finally:
        store.close()
        server.stop(0.5).wait(2)
