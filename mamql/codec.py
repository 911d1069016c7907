"""numpy <-> protobuf conversion for tensors and transition batches, with validation.

Network input is untrusted: every decode checks the dtype against an allow-list, every dimension
for sign and the byte length against prod(shape) * itemsize before touching the data, so a hostile
or corrupted message raises CodecError (services map it to INVALID_ARGUMENT) instead of allocating
or misreading memory.

These functions work on the generated protobuf classes (tests, tools, the benchmark's protobuf
baseline). The services' hot messages (Insert, Sample, weight chunks) go through mamql.wire instead:
the same wire format and the same checks, without the generated classes' copies.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from mamql.batch import METADATA_FIELDS, PER_AGENT_FIELDS, SHARED_FIELDS, Batch, batch_size
from mamql.protos import tensor_pb2

# dtype name -> bytes per element. bfloat16 has no numpy dtype: it decodes as raw uint16 words
# (torch code reinterprets them), so weights can travel in half the bytes.
ITEMSIZE = {
    "bool": 1, "uint8": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
    "int64": 8, "uint64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
}
DEFAULT_MAX_BYTES = 1 << 30


class CodecError(ValueError):
    """A tensor or batch message that cannot be decoded safely."""


def tensor_to_encode(array: np.ndarray, dtype_name: str | None = None,
                     error: type[CodecError] = CodecError) -> tuple[str, np.ndarray]:
    """(wire dtype name, little-endian array) for encoding `array`, or `error`: the checks both
    encoders (this module's and mamql.wire's) make before writing a tensor."""
    array = np.asarray(array)
    name = dtype_name or array.dtype.name
    if name not in ITEMSIZE:
        raise error(f"dtype {name!r} is not supported; allowed: {', '.join(ITEMSIZE)}")
    if name == "bfloat16" and array.dtype != np.uint16:
        raise error("bfloat16 tensors must be given as their uint16 bit patterns")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return name, array


def encode_tensor(array: np.ndarray, dtype_name: str | None = None) -> tensor_pb2.Tensor:
    """Encode a numpy array; `dtype_name="bfloat16"` marks a uint16 array holding bf16 words."""
    name, array = tensor_to_encode(array, dtype_name)
    return tensor_pb2.Tensor(dtype=name, shape=list(array.shape), data=np.ascontiguousarray(array).tobytes())


def check_tensor(msg: tensor_pb2.Tensor, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, tuple[int, ...]]:
    """Validate a Tensor message's header against its payload; returns (dtype, shape)."""
    if msg.dtype not in ITEMSIZE:
        raise CodecError(f"dtype {msg.dtype!r} is not supported; allowed: {', '.join(ITEMSIZE)}")
    shape = tuple(int(d) for d in msg.shape)
    if any(d < 0 for d in shape):
        raise CodecError(f"negative dimension in shape {shape}")
    if len(shape) > 16:
        raise CodecError(f"too many dimensions ({len(shape)} > 16)")
    expected = math.prod(shape) * ITEMSIZE[msg.dtype]
    if expected > max_bytes:
        raise CodecError(f"tensor of shape {shape} ({expected} bytes) exceeds the {max_bytes}-byte limit")
    if len(msg.data) != expected:
        raise CodecError(
            f"payload is {len(msg.data)} bytes but dtype {msg.dtype} and shape {shape} need {expected}"
        )
    return msg.dtype, shape


def decode_tensor(msg: tensor_pb2.Tensor, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """A read-only numpy view of the message's bytes (copy it before writing to it)."""
    dtype, shape = check_tensor(msg, max_bytes)
    np_dtype = np.dtype("<u2" if dtype == "bfloat16" else dtype).newbyteorder("<")
    return np.frombuffer(msg.data, dtype=np_dtype).reshape(shape)


def encode_batch(batch: Mapping[str, np.ndarray]) -> tensor_pb2.TransitionBatch:
    """Encode a batch dict (see mamql.batch for field names) as a TransitionBatch message."""
    batch_size(batch)
    msg = tensor_pb2.TransitionBatch()
    for name, array in batch.items():
        kind, sep, agent = name.partition("/")
        if sep and kind in PER_AGENT_FIELDS and agent:
            getattr(msg.agents[agent], kind).CopyFrom(encode_tensor(array))
        elif name in SHARED_FIELDS or name in METADATA_FIELDS:
            getattr(msg, name).CopyFrom(encode_tensor(array))
        else:
            msg.extras[name].CopyFrom(encode_tensor(array))
    return msg


def decode_batch(msg: tensor_pb2.TransitionBatch, max_bytes: int = DEFAULT_MAX_BYTES) -> Batch:
    """Decode and validate a TransitionBatch; all columns must have the same length."""
    out: Batch = {}
    budget = max_bytes
    for agent, fields in msg.agents.items():
        if not agent or "/" in agent:
            raise CodecError(f"invalid agent name {agent!r}")
        for kind in PER_AGENT_FIELDS:
            if fields.HasField(kind):
                out[f"{kind}/{agent}"] = arr = decode_tensor(getattr(fields, kind), budget)
                budget -= arr.nbytes
    for name in SHARED_FIELDS + METADATA_FIELDS:
        if msg.HasField(name):
            out[name] = arr = decode_tensor(getattr(msg, name), budget)
            budget -= arr.nbytes
    for name, tensor in msg.extras.items():
        if name in out:
            raise CodecError(f"extra field {name!r} duplicates a named field")
        out[name] = arr = decode_tensor(tensor, budget)
        budget -= arr.nbytes
    if not out:
        raise CodecError("batch has no fields")
    for name, arr in out.items():
        if arr.ndim == 0:
            raise CodecError(f"field {name!r} is a scalar; every field needs a leading batch dimension")
    try:
        batch_size(out)
    except ValueError as exc:
        raise CodecError(str(exc)) from None
    return out
