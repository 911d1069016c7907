"""Hostile or malformed requests: each gets its exact status code and the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from mamql.codec import encode_batch
from mamql.config import TableConfig
from mamql.protos import replay_pb2, replay_pb2_grpc, tensor_pb2
from replay_helpers import make_config, small_batch

SCHEMA = {"obs/a": ["float32", [3]], "action/a": ["int64", []], "policy_version": ["int64", []]}
TABLES = (
    TableConfig(name="t", capacity=16, schema=SCHEMA),
    TableConfig(name="q", capacity=16, sampler="fifo", schema=SCHEMA),
    TableConfig(name="ro", capacity=16, read_only=True, schema=SCHEMA),
)


@pytest.fixture(scope="module")
def stub():
    from mamql.replay.server import ReplayServer

    server = ReplayServer(make_config(TABLES, max_message_mb=1))
    server.start()
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 8 << 20)])
    yield replay_pb2_grpc.ReplayServiceStub(channel), server
    channel.close()
    server.stop(grace=0.5, final_checkpoint=False)


def req(batch_msg, table="t"):
    return replay_pb2.InsertRequest(table=table, batch=batch_msg, sequence=1)


def enc(**changes):
    batch = small_batch(4)
    batch.update(changes)
    return encode_batch({k: v for k, v in batch.items() if v is not None})


def tensor(dtype, shape, data):
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data)


def raw(mutate):
    msg = enc()
    mutate(msg)
    return msg


def _nan():
    obs = np.ones((4, 3), np.float32)
    obs[1, 1] = np.nan
    return obs


INSERT_CASES = [
    ("unknown table", req(enc(), table="nope"), "NOT_FOUND"),
    ("empty table name", req(enc(), table=""), "NOT_FOUND"),
    ("wrong dtype", req(enc(**{"obs/a": np.ones((4, 3), np.float64)})), "INVALID_ARGUMENT"),
    ("wrong row shape", req(enc(**{"obs/a": np.ones((4, 4), np.float32)})), "INVALID_ARGUMENT"),
    ("missing field", req(enc(policy_version=None)), "INVALID_ARGUMENT"),
    ("extra field", req(enc(step=np.zeros(4, np.int32))), "INVALID_ARGUMENT"),
    ("ragged lengths", req(raw(lambda m: m.agents["a"].action.CopyFrom(tensor("int64", [3], b"\0" * 24)))),
     "INVALID_ARGUMENT"),
    ("nan", req(enc(**{"obs/a": _nan()})), "INVALID_ARGUMENT"),
    ("inf", req(enc(**{"obs/a": np.full((4, 3), np.inf, np.float32)})), "INVALID_ARGUMENT"),
    ("payload too short", req(raw(lambda m: m.agents["a"].obs.CopyFrom(tensor("float32", [4, 3], b"\0" * 47)))),
     "INVALID_ARGUMENT"),
    ("unsupported dtype", req(raw(lambda m: m.agents["a"].obs.CopyFrom(tensor("object", [4, 3], b"")))),
     "INVALID_ARGUMENT"),
    ("negative dimension", req(raw(lambda m: m.agents["a"].obs.CopyFrom(tensor("float32", [4, -3], b"")))),
     "INVALID_ARGUMENT"),
    ("huge declared shape", req(raw(lambda m: m.agents["a"].obs.CopyFrom(tensor("float32", [10**12, 3], b"")))),
     "INVALID_ARGUMENT"),
    ("scalar field", req(raw(lambda m: m.policy_version.CopyFrom(tensor("int64", [], b"\0" * 8)))),
     "INVALID_ARGUMENT"),
    ("no fields", req(tensor_pb2.TransitionBatch()), "INVALID_ARGUMENT"),
    ("zero rows", req(encode_batch({k: v[:0] for k, v in small_batch(4).items()})), "INVALID_ARGUMENT"),
    ("agent name with slash", req(raw(lambda m: m.agents["x/y"].action.CopyFrom(m.agents["a"].action))),
     "INVALID_ARGUMENT"),
    ("extra duplicates a field", req(raw(lambda m: m.extras["policy_version"].CopyFrom(m.policy_version))),
     "INVALID_ARGUMENT"),
    ("bfloat16 where float32 expected",
     req(raw(lambda m: m.agents["a"].obs.CopyFrom(tensor("bfloat16", [4, 3], b"\0" * 24)))), "INVALID_ARGUMENT"),
    ("batch larger than capacity", req(encode_batch(small_batch(17))), "RESOURCE_EXHAUSTED"),
    ("message over max_message_mb", req(encode_batch({"obs/a": np.ones((90_000, 3), np.float32),
                                                      "action/a": np.zeros(90_000, np.int64),
                                                      "policy_version": np.zeros(90_000, np.int64)})),
     "RESOURCE_EXHAUSTED"),
    ("read-only table", req(enc(), table="ro"), "FAILED_PRECONDITION"),
]

SAMPLE_CASES = [
    ("sample unknown table", replay_pb2.SampleRequest(table="nope", batch_size=1, num_batches=1), "NOT_FOUND"),
    ("sample batch_size 0", replay_pb2.SampleRequest(table="t", batch_size=0, num_batches=1), "INVALID_ARGUMENT"),
    ("fifo batch beyond capacity", replay_pb2.SampleRequest(table="q", batch_size=17, num_batches=1),
     "INVALID_ARGUMENT"),
    ("sample empty table", replay_pb2.SampleRequest(table="ro", batch_size=1, num_batches=1, timeout_seconds=0.2),
     "DEADLINE_EXCEEDED"),
]


def assert_still_serves(stub):
    before = stub.Info(replay_pb2.InfoRequest(table="t"), timeout=5).tables[0].size
    acks = list(stub.Insert(iter([req(enc())]), timeout=5))
    assert [a.inserted for a in acks] == [4]
    assert stub.Info(replay_pb2.InfoRequest(table="t"), timeout=5).tables[0].size == min(16, before + 4)
    assert len(list(stub.Sample(replay_pb2.SampleRequest(table="t", batch_size=2, num_batches=1), timeout=5))) == 1


@pytest.mark.parametrize("name,request_,code", INSERT_CASES, ids=[c[0] for c in INSERT_CASES])
def test_bad_insert(stub, name, request_, code):
    stub, server = stub
    sizes = {n: t.size for n, t in server.replay.tables.items()}
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Insert(iter([request_]), timeout=5))
    assert err.value.code().name == code, err.value.details()
    assert {n: t.size for n, t in server.replay.tables.items()} == sizes  # nothing stored
    assert_still_serves(stub)


@pytest.mark.parametrize("name,request_,code", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_bad_sample(stub, name, request_, code):
    stub, _ = stub
    stub.Insert(iter([req(enc())]), timeout=5).next()
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Sample(request_, timeout=5))
    assert err.value.code().name == code, err.value.details()
    assert_still_serves(stub)


def test_info_unknown_table(stub):
    stub, _ = stub
    with pytest.raises(grpc.RpcError) as err:
        stub.Info(replay_pb2.InfoRequest(table="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert_still_serves(stub)


def test_bad_batch_mid_stream_keeps_earlier_acks_and_stores_nothing_partial(stub):
    stub, server = stub
    table = server.replay.tables["q"]
    before = table.info().inserted
    good = replay_pb2.InsertRequest(table="q", batch=enc(), sequence=1)
    bad = replay_pb2.InsertRequest(table="q", batch=enc(**{"obs/a": _nan()}), sequence=2)
    after = replay_pb2.InsertRequest(table="q", batch=enc(), sequence=3)
    call = stub.Insert(iter([good, bad, after]), timeout=5)
    acks = []
    with pytest.raises(grpc.RpcError) as err:
        for ack in call:
            acks.append(ack.sequence)
    assert acks == [1] and err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert table.info().inserted == before + 4
    assert_still_serves(stub)


def test_rejections_are_counted(stub):
    _, server = stub
    from mamql.metrics import sample_value

    assert sample_value(server.registry, "mamql_replay_rejected_requests_total", {"reason": "invalid_argument"}) > 0
    assert sample_value(server.registry, "mamql_replay_rejected_requests_total", {"reason": "not_found"}) > 0
