"""Fuzz mamql.wire with malformed bytes: truncated, bytes flipped, inserted or deleted, lengths
past the end, huge varints, noise. Decoding either raises CodecError or returns views that lie
inside the message; a live replay and weight service answer every such request with a clean status
code (truncated inserts: INVALID_ARGUMENT), never UNKNOWN or INTERNAL, and keep serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamql import wire
from mamql.batch import schema_of
from mamql.codec import CodecError
from mamql.config import TableConfig, with_updates
from mamql.protos import rpc
from mamql.replay.client import ReplayClient
from mamql.replay.server import ReplayServer
from mamql.weights import WeightAssembler, encode_weights
from replay_helpers import make_config, small_batch
from wire_helpers import batches, inside

CLEAN = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "DEADLINE_EXCEEDED"}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA = {name: [dtype, list(shape)] for name, (dtype, shape) in schema_of(small_batch(1)).items()}


def _parses_as_protobuf(data: bytes) -> bool:
    from google.protobuf.message import DecodeError

    from mamql.protos import replay_pb2

    try:
        replay_pb2.InsertRequest.FromString(data)
    except DecodeError:
        return False
    return True


@st.composite
def mutations(draw, data: bytes) -> tuple[str, bytes]:
    """A malformed variant of `data` and the kind of damage."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "huge-length", "noise"]))
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "truncate":
        return kind, data[:at]
    if kind == "flip":
        out = bytearray(data)
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4)):
            out[pos] = draw(st.integers(0, 255))
        return kind, bytes(out)
    if kind == "insert":
        return kind, data[:at] + draw(st.binary(min_size=1, max_size=12)) + data[at:]
    if kind == "delete":
        return kind, data[:at] + data[at + draw(st.integers(1, 16)):]
    if kind == "huge-length":
        huge = draw(st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\xff" * 9 + b"\x01", b"\xff" * 11, b"\x80"]))
        return kind, data[:at] + huge + data[at + draw(st.integers(0, 5)):]
    return kind, draw(st.binary(max_size=64))


def checked_views(arrays, data) -> None:
    for arr in arrays:
        assert inside(arr, data), "a view outside the message"


@st.composite
def bad_inserts(draw):
    batch = draw(batches(max_rows=3))
    return (batch,) + draw(mutations(wire.encode_insert("fuzz", batch, draw(st.integers(0, (1 << 64) - 1)), 1.0)))


@SETTINGS
@given(bad_inserts())
def test_malformed_inserts_raise_codec_errors_or_decode_inside_the_message(case):
    batch, kind, data = case
    try:
        view = wire.parse_insert(data)
        if view.batch is not None:
            checked_views(view.batch.decode().values(), data)
    except CodecError:
        pass
    try:
        view = wire.parse_insert(data)
        if view.batch is not None:
            checked_views(view.batch.decode(layout=wire.Layout(schema_of(batch))).values(), data)
    except CodecError:
        pass


@st.composite
def bad_samples(draw):
    batch = draw(batches(min_rows=1, max_rows=3))
    keys = np.arange(len(next(iter(batch.values()))), dtype=np.uint64)
    return draw(mutations(wire.encode_sample(batch, keys)))


@SETTINGS
@given(bad_samples())
def test_malformed_sample_responses_raise_codec_errors(case):
    _, data = case
    try:
        batch, keys = wire.parse_sample(data)
    except CodecError:
        return
    checked_views([*batch.values(), keys], data)


@st.composite
def bad_chunks(draw):
    tensors = {"agent_0/w": np.arange(12, dtype=np.float32).reshape(3, 4), "agent_0/b": np.ones(5, np.float64)}
    chunks = encode_weights(tensors, 3, max_chunk_bytes=draw(st.sampled_from([16, 40, 1 << 20])), epoch=5,
                            alpha=0.5, metadata={"step": "1"})
    i = draw(st.integers(0, len(chunks) - 1))
    kind, bad = draw(mutations(chunks[i]))
    return kind, chunks[:i] + [bad] + chunks[i + 1:]


@SETTINGS
@given(bad_chunks())
def test_malformed_weight_chunks_raise_codec_errors(case):
    _, chunks = case
    assembler = WeightAssembler(max_bytes=1 << 20)
    try:
        for data in chunks:
            done = assembler.add(wire.parse_chunk(data))
            if done is not None:  # parameters kept as views of a message lie inside one
                assert all(any(inside(a, c) for c in chunks) for a in done.tensors.values() if not a.flags.writeable)
    except CodecError:
        pass


# ------------------------------------------------------------------------------ live services
@pytest.fixture(scope="module")
def replay():
    tables = (TableConfig(name="fuzz", capacity=1000, schema=SCHEMA), TableConfig(name="open", capacity=1000))
    server = ReplayServer(with_updates(make_config(tables=tables), replay={"wait_timeout_s": 1.0}))
    server.start()
    channel = grpc.insecure_channel(server.address, options=rpc.channel_options(64))
    yield server, channel.stream_stream("/mamql.v1.ReplayService/Insert")
    channel.close()
    server.stop(grace=0.5, final_checkpoint=False)


@st.composite
def bad_wire_inserts(draw):
    table = draw(st.sampled_from(["fuzz", "open"]))
    batch = small_batch(draw(st.integers(1, 3))) if draw(st.booleans()) else draw(batches(min_rows=1, max_rows=3))
    return draw(mutations(wire.encode_insert(table, batch, 1, 1.0)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_wire_inserts())
def test_live_replay_answers_malformed_inserts_cleanly(replay, case):
    server, insert = replay
    kind, data = case
    try:
        list(insert(iter([data]), timeout=10))
        code = "OK"
    except grpc.RpcError as err:
        code = err.code().name
    assert code in CLEAN, (kind, code)
    if kind == "truncate" and data and not _parses_as_protobuf(data):
        # a prefix ending on a field boundary is a whole, shorter message (e.g. without its table
        # name: NOT_FOUND); every prefix that protobuf itself refuses must be INVALID_ARGUMENT
        assert code == "INVALID_ARGUMENT", (data, code)
    with ReplayClient(server.address) as client:  # still serving
        assert client.insert("fuzz", small_batch(2), timeout=5) == 2


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_chunks())
def test_live_weight_service_answers_malformed_chunks_cleanly(case):
    from mamql.learner.weight_service import WeightStore, serve_weights

    store = WeightStore()
    server, _ = rpc.make_server(rpc.Security(), 64)
    serve_weights(store, server)
    port = rpc.bind(server, rpc.Security(), "127.0.0.1", 0)
    server.start()
    try:
        store.publish({"agent_0/w": np.zeros(3, np.float32)}, version=1, epoch=5)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                channel.stream_unary("/mamql.v1.WeightService/Publish")(iter(case[1]), timeout=10)
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
        assert code in CLEAN, (case[0], code)
        if code != "OK":
            assert store.version == 1  # a refused version leaves the latest as it was
    finally:
        store.close()
        server.stop(0.5).wait(2)
