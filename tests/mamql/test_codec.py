import numpy as np
import pytest

from mamql.batch import BatchError, check_schema, find_non_finite, schema_of
from mamql.codec import CodecError, decode_batch, decode_tensor, encode_batch, encode_tensor
from mamql.protos import tensor_pb2


def gems_batch(n=4):
    rng = np.random.default_rng(0)
    batch = {}
    for agent in ("agent_0", "agent_1"):
        batch[f"obs/{agent}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
        batch[f"action/{agent}"] = rng.integers(0, 5, n).astype(np.int64)
        batch[f"reward/{agent}"] = rng.normal(size=n).astype(np.float32)
        batch[f"next_obs/{agent}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
    batch["done"] = np.zeros(n, bool)
    batch["truncated"] = np.zeros(n, bool)
    batch["actor_id"] = np.full(n, 3, np.int32)
    batch["episode_id"] = np.arange(n, dtype=np.int64)
    batch["step"] = np.arange(n, dtype=np.int32)
    batch["policy_version"] = np.full(n, 7, np.int64)
    batch["extra/logits"] = rng.normal(size=(n, 5)).astype(np.float32)
    return batch


def test_batch_round_trip_keeps_every_field_dtype_and_value():
    batch = gems_batch()
    decoded = decode_batch(tensor_pb2.TransitionBatch.FromString(encode_batch(batch).SerializeToString()))
    assert set(decoded) == set(batch)
    for name, array in batch.items():
        assert decoded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(decoded[name], array)


@pytest.mark.parametrize(
    "dtype", ["bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64"]
)
def test_every_allowed_dtype_round_trips(dtype):
    array = (np.arange(12) % 2).astype(dtype).reshape(3, 4)
    np.testing.assert_array_equal(decode_tensor(encode_tensor(array)), array)


def test_big_endian_input_is_sent_little_endian():
    array = np.arange(5, dtype=">i4")
    decoded = decode_tensor(encode_tensor(array))
    assert decoded.dtype.byteorder in ("<", "=")
    np.testing.assert_array_equal(decoded, np.arange(5))


def test_scalar_and_empty_tensors():
    assert decode_tensor(encode_tensor(np.float32(2.5))) == 2.5
    assert decode_tensor(encode_tensor(np.zeros((0, 3), np.float32))).shape == (0, 3)


@pytest.mark.parametrize(
    "tensor, message",
    [
        (tensor_pb2.Tensor(dtype="object", shape=[1], data=b"x" * 8), "not supported"),
        (tensor_pb2.Tensor(dtype="complex64", shape=[1], data=b"x" * 8), "not supported"),
        (tensor_pb2.Tensor(dtype="", shape=[1], data=b"x"), "not supported"),
        (tensor_pb2.Tensor(dtype="float32", shape=[3], data=b"\x00" * 11), "need 12"),
        (tensor_pb2.Tensor(dtype="float32", shape=[3], data=b"\x00" * 13), "need 12"),
        (tensor_pb2.Tensor(dtype="int64", shape=[-1], data=b""), "negative"),
        (tensor_pb2.Tensor(dtype="int64", shape=[2, -2], data=b"\x00" * 32), "negative"),
        (tensor_pb2.Tensor(dtype="uint8", shape=[1 << 40, 1 << 20], data=b"\x00"), "exceeds"),
        (tensor_pb2.Tensor(dtype="uint8", shape=[1] * 17, data=b"\x00"), "dimensions"),
        (tensor_pb2.Tensor(dtype="float32", shape=[2], data=b"\xde\xad\xbe\xef\x00"), "need 8"),
    ],
)
def test_bad_tensors_raise_clear_errors(tensor, message):
    with pytest.raises(CodecError, match=message):
        decode_tensor(tensor)


def test_size_limit_is_enforced():
    with pytest.raises(CodecError, match="exceeds"):
        decode_tensor(encode_tensor(np.zeros(1000, np.uint8)), max_bytes=999)


def test_garbage_bytes_fail_to_parse_or_decode():
    rng = np.random.default_rng(1)
    failures = 0
    for _ in range(200):
        raw = rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
        try:
            decode_batch(tensor_pb2.TransitionBatch.FromString(raw))
        except (CodecError, Exception):  # protobuf DecodeError or our CodecError, never a crash
            failures += 1
    assert failures == 200


def test_ragged_batch_and_scalar_fields_are_rejected():
    msg = encode_batch({"done": np.zeros(3, bool)})
    msg.actor_id.CopyFrom(encode_tensor(np.zeros(2, np.int32)))
    with pytest.raises(CodecError, match="different lengths"):
        decode_batch(msg)
    msg = tensor_pb2.TransitionBatch(done=encode_tensor(np.bool_(True)))
    with pytest.raises(CodecError, match="scalar"):
        decode_batch(msg)
    with pytest.raises(CodecError, match="no fields"):
        decode_batch(tensor_pb2.TransitionBatch())


def test_bad_agent_names_are_rejected():
    msg = encode_batch({"obs/a/b": np.zeros((2, 3), np.float32)})
    with pytest.raises(CodecError, match="agent name"):
        decode_batch(msg)


def test_decoded_batch_budget_counts_all_fields():
    batch = gems_batch(8)
    total = sum(a.nbytes for a in batch.values())
    decode_batch(encode_batch(batch), max_bytes=total)
    with pytest.raises(CodecError, match="exceeds"):
        decode_batch(encode_batch(batch), max_bytes=total - 1)


def test_nan_detection_helper():
    batch = gems_batch()
    assert find_non_finite(batch) == []
    batch["reward/agent_1"][2] = np.nan
    batch["extra/logits"][0, 0] = np.inf
    assert sorted(find_non_finite(batch)) == ["extra/logits", "reward/agent_1"]


def test_check_schema_names_the_problem():
    batch = gems_batch()
    schema = schema_of(batch)
    check_schema(batch, schema)
    wrong = dict(batch, **{"action/agent_0": batch["action/agent_0"].astype(np.int32)})
    with pytest.raises(BatchError, match="action/agent_0.*int32"):
        check_schema(wrong, schema)
    wrong = dict(batch, **{"obs/agent_0": np.zeros((4, 5, 15, 14), np.uint8)})
    with pytest.raises(BatchError, match="row shape"):
        check_schema(wrong, schema)
    wrong = {k: v for k, v in batch.items() if k != "done"}
    with pytest.raises(BatchError, match="missing \\['done'\\]"):
        check_schema(wrong, schema)
