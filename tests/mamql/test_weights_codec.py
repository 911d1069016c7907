import numpy as np
import pytest

from mamql.codec import CodecError, encode_tensor
from mamql.weights import WeightAssembler, iter_assembled, split_weights
from mamql.protos import weights_pb2


def params():
    rng = np.random.default_rng(0)
    return {
        "agent_0/fc.weight": rng.normal(size=(300, 200)).astype(np.float32),
        "agent_0/fc.bias": rng.normal(size=300).astype(np.float32),
        "agent_1/empty": np.zeros((0, 4), np.float32),
        "agent_1/half": rng.integers(0, 1 << 16, size=(7, 3), dtype=np.uint16),
    }


@pytest.mark.parametrize("chunk_bytes", [64, 10_000, 1 << 22])
def test_split_and_reassemble_is_exact(chunk_bytes):
    tensors = params()
    chunks = split_weights(tensors, 5, chunk_bytes, dtypes={"agent_1/half": "bfloat16"}, metadata={"step": "9"})
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.ByteSize() <= chunk_bytes + 512 for c in chunks)  # payload bound plus headers
    (got,) = list(iter_assembled(weights_pb2.WeightChunk.FromString(c.SerializeToString()) for c in chunks))
    assert got.version == 5 and got.metadata == {"step": "9"}
    assert got.dtypes["agent_1/half"] == "bfloat16"
    for name, array in tensors.items():
        np.testing.assert_array_equal(got.tensors[name], array)
        assert got.tensors[name].shape == array.shape


def test_partial_version_is_never_returned():
    chunks = split_weights(params(), 2, 1000)
    assembler = WeightAssembler()
    for chunk in chunks[:-1]:
        assert assembler.add(chunk) is None
    chunks[-1].ClearField("slices")
    with pytest.raises(CodecError, match="incomplete"):
        assembler.add(chunks[-1])


def test_mixed_versions_and_bad_slices_are_rejected():
    a = split_weights(params(), 1, 1000)
    b = split_weights(params(), 2, 1000)
    assembler = WeightAssembler()
    assembler.add(a[0])
    with pytest.raises(CodecError, match="version 2 arrived inside version 1"):
        assembler.add(b[1])

    bad = weights_pb2.WeightChunk(version=1, last=True)
    piece = bad.slices.add(name="w", shape=[2], offset=1)
    piece.data.CopyFrom(encode_tensor(np.zeros(2, np.float32)))
    with pytest.raises(CodecError, match="expected 0"):
        WeightAssembler().add(bad)

    bad = weights_pb2.WeightChunk(version=1, last=True)
    piece = bad.slices.add(name="w", shape=[2], offset=0)
    piece.data.CopyFrom(encode_tensor(np.zeros(3, np.float32)))
    with pytest.raises(CodecError, match="overruns"):
        WeightAssembler().add(bad)

    bad = weights_pb2.WeightChunk(version=1, last=True)
    piece = bad.slices.add(name="w", shape=[1 << 40], offset=0)
    piece.data.CopyFrom(encode_tensor(np.zeros(1, np.float32)))
    with pytest.raises(CodecError, match="limit"):
        WeightAssembler(max_bytes=1 << 20).add(bad)


def test_versions_start_at_one():
    with pytest.raises(ValueError):
        split_weights(params(), 0)


def test_slices_of_one_parameter_that_disagree_on_shape_are_refused():
    """Found by the wire fuzz test: a second slice declaring another shape (here (0, 4) after (3, 4))
    raised numpy's ValueError on the final reshape instead of a CodecError."""
    chunk = weights_pb2.WeightChunk(version=1, last=True)
    chunk.slices.add(name="w", shape=[3, 4], offset=0).data.CopyFrom(encode_tensor(np.zeros(6, np.float32)))
    chunk.slices.add(name="w", shape=[0, 4], offset=6).data.CopyFrom(encode_tensor(np.zeros(6, np.float32)))
    with pytest.raises(CodecError, match="slices disagree on shape"):
        WeightAssembler().add(chunk)
