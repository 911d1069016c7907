"""mamql.wire against the generated protobuf classes, both directions: our bytes parse with the
generated classes to the messages mamql.codec builds, and any valid encoding a protobuf encoder may
emit (canonical or not: field order, unknown fields and groups, split messages, packed or unpacked
shapes, overlong varints) decodes with ours to the same arrays."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mamql import codec, wire
from mamql.batch import schema_of
from mamql.protos import replay_pb2, tensor_pb2, weights_pb2
from mamql.weights import encode_weights, iter_assembled, split_weights
from wire_helpers import DTYPES, array, batches, inside, reencode, same_batch

def parsed(cls, data: bytes):
    """The generated class's parse, less the unknown fields (which take part in its ==)."""
    msg = cls.FromString(data)
    msg.DiscardUnknownFields()
    return msg


SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(batches(), st.text(max_size=8), st.integers(0, (1 << 64) - 1), st.floats(0, 1e6, width=32))
def test_insert_bytes_parse_with_the_generated_class(batch, table, sequence, timeout):
    data = wire.encode_insert(table, batch, sequence, timeout)
    want = replay_pb2.InsertRequest(table=table, batch=codec.encode_batch(batch), sequence=sequence,
                                    timeout_seconds=timeout)
    assert replay_pb2.InsertRequest.FromString(data) == want
    assert tensor_pb2.TransitionBatch.FromString(wire.encode_batch(batch)) == codec.encode_batch(batch)


@SETTINGS
@given(batches(), st.randoms(use_true_random=False))
def test_any_protobuf_encoding_of_an_insert_decodes_to_the_same_arrays(batch, rnd):
    msg = replay_pb2.InsertRequest(table="online", batch=codec.encode_batch(batch), sequence=rnd.getrandbits(64),
                                   timeout_seconds=rnd.random())
    canonical = msg.SerializeToString()
    other = reencode(msg, rnd)
    assert parsed(replay_pb2.InsertRequest, other) == msg  # the re-encoding is valid protobuf
    for data in (canonical, other):
        view = wire.parse_insert(data)
        assert (view.table, view.sequence, view.timeout_seconds) == (msg.table, msg.sequence, msg.timeout_seconds)
        same_batch(view.batch.decode(), codec.decode_batch(msg.batch))
        same_batch(view.batch.decode(), batch)


@SETTINGS
@given(batches(min_rows=1), st.randoms(use_true_random=False))
def test_table_layout_decodes_any_encoding_of_its_schema_and_refuses_another(batch, rnd):
    data = codec.encode_batch(batch)
    schema = schema_of(batch)
    same_batch(wire.decode_batch(reencode(data, rnd), layout=wire.Layout(schema)), batch)
    name = rnd.choice(sorted(schema))
    dtype, shape = schema[name]
    other = {**schema, name: ("int8" if dtype != "int8" else "uint8", shape)}
    with pytest.raises(wire.WireError, match=re.escape(f"field {name!r}: dtype")):
        wire.decode_batch(data.SerializeToString(), layout=wire.Layout(other))


@SETTINGS
@given(batches(min_rows=1), st.randoms(use_true_random=False))
def test_sample_template_bytes_equal_the_generated_response_and_decode_back(batch, rnd):
    n = len(next(iter(batch.values())))
    keys = np.array([rnd.getrandbits(64) for _ in range(n)], np.uint64)
    template = wire.BatchTemplate(schema_of(batch), n)
    data, views, keys_view = template.allocate()
    for name, view in views.items():
        view[...] = batch[name]
    keys_view[...] = keys
    want = replay_pb2.SampleResponse(batch=codec.encode_batch(batch), keys=codec.encode_tensor(keys))
    assert replay_pb2.SampleResponse.FromString(data) == want
    assert wire.encode_sample(batch, keys) == data
    for encoded in (data, want.SerializeToString(), reencode(want, rnd)):
        got, got_keys = wire.parse_sample(encoded)
        same_batch(got, batch)
        assert got_keys.tobytes() == keys.tobytes()


@st.composite
def weight_sets(draw):
    tensors, dtypes = {}, {}
    for i in range(draw(st.integers(1, 4))):
        name = f"agent_{i % 2}/p{i}"
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=3)))
        if draw(st.booleans()):
            tensors[name] = array(draw, "uint16", shape)
            dtypes[name] = "bfloat16"
        else:
            tensors[name] = array(draw, draw(st.sampled_from(["float32", "float64", "float16"])), shape)
    return tensors, dtypes


@SETTINGS
@given(weight_sets(), st.integers(1, 200), st.integers(1, 1 << 40), st.integers(0, (1 << 63) - 1),
       st.floats(0, 10), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
       st.randoms(use_true_random=False))
def test_weight_chunks_both_ways(weights, chunk_bytes, version, epoch, alpha, metadata, rnd):
    tensors, dtypes = weights
    args = dict(dtypes=dtypes, metadata=metadata, published_unix_s=123.5, epoch=epoch, alpha=alpha)
    ours = encode_weights(tensors, version, chunk_bytes, **args)
    theirs = split_weights(tensors, version, chunk_bytes, **args)
    assert [weights_pb2.WeightChunk.FromString(c) for c in ours] == theirs
    for chunks in ([wire.parse_chunk(c) for c in ours],
                   [wire.parse_chunk(reencode(c, rnd)) for c in theirs],
                   theirs):
        (got,) = list(iter_assembled(chunks))
        assert (got.version, got.epoch, got.alpha, got.metadata) == (version, epoch, alpha, metadata)
        assert set(got.tensors) == set(tensors)
        for name, arr in tensors.items():
            assert got.tensors[name].shape == arr.shape
            assert got.tensors[name].tobytes() == arr.tobytes()
            assert got.dtypes[name] == dtypes.get(name, arr.dtype.name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_as_a_tensor(dtype):
    arr = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    data = wire.encode_tensor(arr)
    assert tensor_pb2.Tensor.FromString(data) == codec.encode_tensor(arr)
    got = wire.decode_tensor(codec.encode_tensor(arr).SerializeToString())
    assert got.dtype == arr.dtype and np.array_equal(got, arr) and not got.flags.writeable


def test_big_endian_input_is_sent_little_endian():
    got = wire.decode_batch(wire.encode_batch({"x": np.arange(5, dtype=">i4")}))["x"]
    assert got.dtype == np.dtype("<i4") and got.tolist() == list(range(5))


def test_decoded_arrays_are_views_of_the_message_not_copies():
    batch = {"obs/a": np.arange(4 * 300, dtype=np.float32).reshape(4, 300), "done": np.zeros(4, bool)}
    data = wire.encode_insert("t", batch, 1)
    got = wire.parse_insert(data).batch.decode()
    for arr in got.values():
        assert inside(arr, data) and arr.flags.c_contiguous and not arr.flags.writeable


@SETTINGS
@given(batches(min_rows=1))
def test_our_encodings_align_every_tensors_data(batch):
    """Data starts at a multiple of 8 bytes into the message (numpy's fast aligned loops)."""
    keys = np.arange(len(next(iter(batch.values()))), dtype=np.uint64)
    insert = wire.encode_insert("t", batch, 12345)
    samples = [wire.encode_sample(batch, keys), wire.BatchTemplate(schema_of(batch), len(keys)).allocate()[0]]
    decoded = [(insert, wire.parse_insert(insert).batch.decode())] + [(d, wire.parse_sample(d)[0]) for d in samples]
    for data, arrays in decoded:
        base = np.frombuffer(data, np.uint8).ctypes.data
        assert all((a.ctypes.data - base) % wire.ALIGN == 0 for a in arrays.values() if a.nbytes)


def test_a_batchless_insert_is_an_ack_request():
    view = wire.parse_insert(wire.ack_request("online", 7))
    assert (view.table, view.sequence, view.batch) == ("online", 7, None)
    empty = replay_pb2.InsertRequest(table="t", batch=tensor_pb2.TransitionBatch()).SerializeToString()
    with pytest.raises(wire.WireError, match="no fields"):
        wire.parse_insert(empty).batch.decode()  # present but empty is a bad batch, not an ack request


@pytest.mark.parametrize("tensor, message", [
    (tensor_pb2.Tensor(dtype="object", shape=[1], data=b"x" * 8), "not supported"),
    (tensor_pb2.Tensor(dtype="", shape=[1], data=b"x"), "not supported"),
    (tensor_pb2.Tensor(dtype="float32", shape=[3], data=b"\x00" * 11), "need 12"),
    (tensor_pb2.Tensor(dtype="int64", shape=[2, -2], data=b"\x00" * 32), "negative"),
    (tensor_pb2.Tensor(dtype="uint8", shape=[1 << 40, 1 << 20], data=b"\x00"), "exceeds"),
    (tensor_pb2.Tensor(dtype="uint8", shape=[1] * 17, data=b"\x00"), "dimensions"),
])
def test_bad_tensors_raise_the_codec_errors(tensor, message):
    with pytest.raises(codec.CodecError, match=message):
        wire.decode_tensor(tensor.SerializeToString())


@pytest.mark.parametrize("data, message", [
    (b"\x0a\x05abc", "truncated"),  # a string declares 5 bytes, 3 left
    (b"\x18" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),  # an 11-byte varint
    (b"\x18\x80", "truncated"),  # a varint cut short
    (b"\x0d\x00\x00\x80\x3f", "wire type"),  # table (a string) sent as fixed32
    (b"\x12\x05\x0a\x03\x0a\x01", "truncated"),  # a batch whose nested entry runs past it
    (b"\x0f", "invalid wire type"),  # wire type 7 does not exist
    (b"\x0c", "invalid wire type"),  # an end-group with no group
    (b"\x00\x01", "field number"),  # field number 0
    (b"\x0a\x02\xc3\x28", "UTF-8"),
    (b"\x0b" * 70, "nested too deeply"),  # groups within groups
    (b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "malformed length"),  # a length of 2**63
    (b"\x12\xff\xff\xff\xff\x07", "malformed length"),  # 2**31 - 1: over protobuf's limit
    (b"\x8a\x80\x80\x80\x80\x00\x01x", "malformed tag"),  # a 6-byte tag
])
def test_malformed_wire_bytes_raise_wire_errors(data, message):
    with pytest.raises(wire.WireError, match=message):
        view = wire.parse_insert(data)
        view.batch.decode()


def test_layout_names_what_is_wrong():
    schema = {"obs/a": ("float32", (3,)), "action/a": ("int64", ())}
    layout = wire.Layout(schema)
    good = {"obs/a": np.zeros((2, 3), np.float32), "action/a": np.zeros(2, np.int64)}
    assert wire.decode_batch(wire.encode_batch(good), layout=layout)["obs/a"].shape == (2, 3)
    cases = [
        ({**good, "obs/a": np.zeros((2, 4), np.float32)}, "row shape"),
        ({**good, "obs/a": np.zeros((2, 3), np.float64)}, "dtype float64"),
        ({"obs/a": good["obs/a"]}, "missing"),
        ({**good, "x": np.zeros(2)}, "unexpected"),
    ]
    for batch, message in cases:
        with pytest.raises(wire.WireError, match=message):
            wire.decode_batch(wire.encode_batch(batch), layout=layout)
    ragged = codec.encode_batch(good)
    ragged.agents["a"].action.CopyFrom(codec.encode_tensor(np.zeros(3, np.int64)))
    with pytest.raises(wire.WireError, match="different lengths"):
        wire.decode_batch(ragged.SerializeToString(), layout=layout)
    short = codec.encode_batch(good)
    short.agents["a"].obs.data = short.agents["a"].obs.data[:-1]
    with pytest.raises(wire.WireError, match="payload"):
        wire.decode_batch(short.SerializeToString(), layout=layout)
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.decode_batch(wire.encode_batch(good), max_bytes=10, layout=layout)


def test_fresh_bytes_are_filled_before_anyone_sees_them():
    data, view = wire.fresh_bytes(16)
    view[:] = np.arange(16, dtype=np.uint8)
    assert data == bytes(range(16)) and hash(data) == hash(bytes(range(16)))
    template = wire.BatchTemplate({"x": ("float64", (2,))}, 3)
    assert template.size == len(template.allocate()[0]) and math.prod((3, 2)) * 8 < template.size
