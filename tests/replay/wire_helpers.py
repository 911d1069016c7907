"""Test helpers for mamql.wire: hypothesis strategies for batches and weights, and `reencode`, an
independent protobuf encoder that writes any valid encoding of a message (not only the canonical one)."""

from __future__ import annotations

import random
import struct

import numpy as np
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

DTYPES = ["bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
          "float32", "float64"]
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=6)


def array(draw, dtype: str, shape: tuple) -> np.ndarray:
    """Any bit pattern (NaN, inf, bools other than 0/1 excluded as numpy would not write them)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = draw(st.binary(min_size=n, max_size=n))
    arr = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape).copy()
    return arr.astype(bool) if dtype == "bool" else arr


@st.composite
def batches(draw, max_rows: int = 4, min_rows: int = 0) -> dict[str, np.ndarray]:
    """Batches with every column kind: per-agent fields, named fields, extras, odd names, any dtype."""
    n = draw(st.integers(min_rows, max_rows))
    columns = {}
    agents = draw(st.lists(st.sampled_from(["agent_0", "a", "\u2603", "x y", "agent_1"]), min_size=0, max_size=3,
                           unique=True))
    for agent in agents:
        for kind in draw(st.lists(st.sampled_from(["obs", "action", "reward", "next_obs"]), min_size=1, unique=True)):
            columns[f"{kind}/{agent}"] = None
    for name in draw(st.lists(st.sampled_from(["done", "truncated", "actor_id", "episode_id", "step",
                                               "policy_version"]), unique=True)):
        columns[name] = None
    for name in draw(st.lists(NAMES, max_size=2, unique=True)):
        if name not in columns and not name.startswith(("obs/", "action/", "reward/", "next_obs/")):
            columns[name] = None
    if not columns:
        columns["done"] = None
    out = {}
    for name in columns:
        dtype = draw(st.sampled_from(DTYPES))
        row = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        out[name] = array(draw, dtype, (n, *row))
    return out


# ------------------------------------------------------------------------- any valid encoding
def varint(value: int, rnd: random.Random, longest: int = 10) -> bytes:
    """Maybe overlong: protobuf (upb) takes values of up to 10 bytes, tags and lengths up to 5."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append(value & 0x7F)
        value >>= 7
        if not value:
            break
        out[-1] |= 0x80
    if rnd.random() < 0.2 and len(out) < longest:  # a valid, non-minimal encoding
        extra = rnd.randint(1, longest - len(out))
        out[-1] |= 0x80
        out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


def key(number: int, wire_type: int, rnd: random.Random) -> bytes:
    return varint(number << 3 | wire_type, rnd, longest=5)


def length_delimited(number: int, payload: bytes, rnd: random.Random) -> bytes:
    return key(number, 2, rnd) + varint(len(payload), rnd, longest=5) + payload


def unknown_field(rnd: random.Random, depth: int = 0) -> bytes:
    number = rnd.choice([9, 15, 16, 99, 1000, (1 << 29) - 1])
    kind = rnd.choice([0, 1, 2, 5] + ([3] if depth < 2 else []))
    if kind == 0:
        return key(number, 0, rnd) + varint(rnd.getrandbits(64), rnd)
    if kind == 1:
        return key(number, 1, rnd) + rnd.randbytes(8)
    if kind == 5:
        return key(number, 5, rnd) + rnd.randbytes(4)
    if kind == 2:
        return length_delimited(number, rnd.randbytes(rnd.randint(0, 12)), rnd)
    inner = b"".join(unknown_field(rnd, depth + 1) for _ in range(rnd.randint(0, 2)))
    return key(number, 3, rnd) + inner + key(number, 4, rnd)


def _split(msg, rnd: random.Random) -> list:
    """msg as two messages whose merge is msg (each field wholly in one of them)."""
    first, second = type(msg)(), type(msg)()
    first.CopyFrom(msg)
    second.CopyFrom(msg)
    for fd, _ in msg.ListFields():
        (second if rnd.random() < 0.5 else first).ClearField(fd.name)
    return [first, second]


def reencode(msg, rnd: random.Random, unknown: bool = True) -> bytes:
    """A random valid encoding of `msg`: fields in any order (a repeated field's elements keep
    theirs), unknown fields and groups between them, repeated scalars packed in pieces or unpacked,
    message fields split over two occurrences (protobuf merges them), map entries with key and
    value in either order, overlong varints. (No unknown fields in a map entry itself: upb then
    treats the whole entry as unknown, the C++ runtime drops just them; ours keeps the entry.)"""
    per_field: list[list[bytes]] = []
    for fd, value in msg.ListFields():
        n = fd.number
        pieces: list[bytes] = []
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            entry_class = GetMessageClass(fd.message_type)
            for k in value:
                entry = entry_class(key=k)
                v = value[k]
                if hasattr(v, "CopyFrom"):
                    entry.value.CopyFrom(v)
                else:
                    entry.value = v
                pieces.append(length_delimited(n, reencode(entry, rnd, unknown=False), rnd))
        elif fd.is_repeated and fd.type == FD.TYPE_MESSAGE:
            pieces += [length_delimited(n, reencode(v, rnd), rnd) for v in value]
        elif fd.is_repeated:  # int64 shape: packed (maybe in pieces) or unpacked
            values = list(value)
            while values:
                take = rnd.randint(1, len(values))
                part, values = values[:take], values[take:]
                if rnd.random() < 0.5:
                    pieces.append(length_delimited(n, b"".join(varint(v, rnd) for v in part), rnd))
                else:
                    pieces += [key(n, 0, rnd) + varint(v, rnd) for v in part]
        elif fd.type == FD.TYPE_MESSAGE:
            parts = _split(value, rnd) if rnd.random() < 0.3 else [value]
            pieces += [length_delimited(n, reencode(p, rnd), rnd) for p in parts]
        elif fd.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
            pieces.append(length_delimited(n, value.encode() if isinstance(value, str) else value, rnd))
        elif fd.type == FD.TYPE_FLOAT:
            pieces.append(key(n, 5, rnd) + struct.pack("<f", value))
        elif fd.type == FD.TYPE_DOUBLE:
            pieces.append(key(n, 1, rnd) + struct.pack("<d", value))
        else:  # varint scalars: uint64, uint32, int64, bool
            pieces.append(key(n, 0, rnd) + varint(int(value), rnd))
        if rnd.random() < 0.2 and not fd.is_repeated:  # a scalar repeated: the last one wins
            if fd.type in (FD.TYPE_UINT64, FD.TYPE_UINT32, FD.TYPE_INT64):
                pieces.insert(0, key(n, 0, rnd) + varint(rnd.getrandbits(32), rnd))
        per_field.append(pieces)
    out = []
    while any(per_field):
        if unknown and rnd.random() < 0.15:
            out.append(unknown_field(rnd))
        out.append(rnd.choice([p for p in per_field if p]).pop(0))
    if unknown and rnd.random() < 0.15:
        out.append(unknown_field(rnd))
    return b"".join(out)


def same_batch(got: dict, want: dict) -> None:
    """Same columns, dtypes, shapes and bytes (NaN-safe)."""
    assert set(got) == set(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype, name
        assert got[name].shape == arr.shape, name
        assert got[name].tobytes() == arr.tobytes(), name


def inside(arr: np.ndarray, data) -> bool:
    """Whether a (contiguous) array's memory lies within the buffer `data`."""
    base = np.frombuffer(data, np.uint8).ctypes.data if len(data) else 0
    low = arr.ctypes.data
    return arr.nbytes == 0 or (base <= low and low + arr.nbytes <= base + len(data))
