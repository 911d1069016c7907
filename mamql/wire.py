"""The protobuf wire format of the hot messages, written and read around numpy buffers directly.

The generated classes copied every tensor byte several times per message (`tobytes`, `CopyFrom`,
merging a batch into its request, `SerializeToString`; and on parsing, every access to a `bytes`
field returned a fresh copy), and this was most of the replay's CPU time (issue 21). Here, for
InsertRequest, SampleResponse and WeightChunk (same .proto, same wire format: generated classes
and any other protobuf implementation interoperate, tests/replay/test_wire_codec.py checks both
directions):

- encoding computes every length prefix from dtypes and shapes and joins headers and array buffers
  in one pass (`b"".join`: the only copy of the data); a sample response is laid out first and the
  table gathers rows straight into it (`BatchTemplate`). Tensor data starts 8-byte aligned in the
  message (varints before it widened: valid, non-minimal encodings), so views decode aligned;
- decoding walks the tags the way a protobuf parser does (any field order, unknown fields skipped,
  a repeated singular message merged, packed or unpacked `shape`) and returns numpy views over the
  received bytes, validated once per message (`Layout`: a table's schema, precomputed) or per
  tensor (the checks of mamql.codec), never past the buffer. Bytes that are not a valid encoding
  raise WireError (a CodecError: services answer INVALID_ARGUMENT). Limits as upb's (tags and
  lengths of at most 5 bytes, lengths below 2**31 - 1, values of at most 10); stricter in one way:
  a known field with the wrong wire type is refused rather than kept as an unknown field.

Decoded arrays are READ-ONLY views that keep the message alive; copy before writing.
"""

from __future__ import annotations

import ctypes
import math
import os
import struct
from typing import Iterator, Mapping

import numpy as np

from mamql.batch import METADATA_FIELDS, PER_AGENT_FIELDS, SHARED_FIELDS, Batch, BatchError, batch_size
from mamql.codec import DEFAULT_MAX_BYTES, ITEMSIZE, CodecError, tensor_to_encode

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MASK64 = (1 << 64) - 1
MAX_FIELD_NUMBER = (1 << 29) - 1
MAX_DIMS = 16
MAX_GROUP_DEPTH = 64
# Insert call metadata (a convention of this codebase, not of the .proto): the client asks for one ack
# per k requests; absent, every request is acked. See replay/server.py ReplayServicer.Insert.
ACK_EVERY_METADATA = "mamql-ack-every"
# little-endian numpy dtype per wire dtype name; bfloat16 travels as its uint16 words
NP_DTYPES = {name: np.dtype("<u2" if name == "bfloat16" else name).newbyteorder("<") for name in ITEMSIZE}
# TransitionBatch's named Tensor fields by field number
BATCH_FIELDS = dict(enumerate(SHARED_FIELDS + METADATA_FIELDS, start=2))
BATCH_NUMBERS = {name: number for number, name in BATCH_FIELDS.items()}
AGENT_NUMBERS = {kind: number for number, kind in enumerate(PER_AGENT_FIELDS, start=1)}
AGENT_KINDS = dict(enumerate(PER_AGENT_FIELDS, start=1))


class WireError(CodecError):
    """Bytes that are not a valid encoding of the expected message, or a tensor that fails its checks."""


# ============================================================================ encoding primitives
_SMALL = [bytes((i,)) for i in range(128)]


def varint(value: int) -> bytes:
    """Base-128 varint; negative values as their 64-bit two's complement (int64 on the wire)."""
    if 0 <= value < 128:
        return _SMALL[value]
    value &= MASK64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def len_field(field: int, payload: bytes) -> bytes:
    return tag(field, LEN) + varint(len(payload)) + payload


def string_field(field: int, text: str) -> bytes:
    """A proto3 string field; the empty string is the default and is not written."""
    return len_field(field, text.encode()) if text else b""


def varint_field(field: int, value: int) -> bytes:
    return tag(field, VARINT) + varint(value) if value else b""


def double_field(field: int, value: float) -> bytes:
    return tag(field, I64) + struct.pack("<d", value) if value != 0.0 else b""


def float_field(field: int, value: float) -> bytes:
    return tag(field, I32) + struct.pack("<f", value) if value != 0.0 else b""


def packed_field(field: int, values) -> bytes:
    return len_field(field, b"".join(varint(int(v)) for v in values)) if len(values) else b""


def varint_padded(value: int, width: int) -> bytes:
    """A varint written in exactly `width` bytes (continuation bytes of zeros after the value: a
    valid, non-minimal encoding every protobuf parser reads), so that what follows is aligned."""
    out = varint(value)
    if len(out) == width:
        return out
    if len(out) > width:
        raise ValueError(f"{value} does not fit a {width}-byte varint")
    return out[:-1] + bytes((out[-1] | 0x80,)) + b"\x80" * (width - len(out) - 1) + b"\x00"


ALIGN = 8  # tensor data starts at a multiple of this many bytes from the message start
_MAX_SIZE_BYTES = 5  # the longest length prefix and tag protobuf (upb) accepts


class _Hole:
    """Where a tensor's data goes in a message being laid out."""

    __slots__ = ("key", "nbytes")

    def __init__(self, key, nbytes: int):
        self.key, self.nbytes = key, nbytes


class _Tensor:
    """A Tensor message field (number 0: the message itself) whose data is the hole `key`."""

    __slots__ = ("number", "dtype", "shape", "nbytes", "key")

    def __init__(self, number: int, dtype: str, shape, nbytes: int, key):
        self.number, self.dtype, self.shape, self.nbytes, self.key = number, dtype, tuple(shape), nbytes, key

    def payload_bound(self) -> int:
        """The longest payload alignment can make (header() widens by less than 2 * ALIGN bytes)."""
        size = len(string_field(1, self.dtype)) + len(packed_field(2, self.shape))
        if self.nbytes:
            size += 1 + len(varint(self.nbytes)) + self.nbytes + 2 * ALIGN
        return size

    def header(self, start: int) -> bytes:
        """dtype, shape and the data's tag and length for a payload starting at offset `start`:
        the varints of the dims and lengths are widened (never past protobuf's limits) until the
        data starts ALIGN-aligned, when they can be; else the minimal encoding."""
        dtype = string_field(1, self.dtype)
        if not self.nbytes:
            return dtype + packed_field(2, self.shape)
        plain = self._header(dtype, 0)
        need = (-(start + len(plain))) % ALIGN
        for extra in range(need, need + 2 * ALIGN, ALIGN) if need else ():
            head = self._header(dtype, extra)
            if head is not None and (start + len(head)) % ALIGN == 0:
                return head
        return plain

    def _header(self, dtype: bytes, extra: int) -> bytes | None:
        """The header with `extra` bytes of widening spread over dims, shape length, data length."""
        dims = []
        for d in self.shape:
            width = len(varint(d))
            grow = min(extra, 10 - width)
            dims.append(varint_padded(d, width + grow))
            extra -= grow
        head = dtype
        if dims:
            packed = b"".join(dims)
            width = len(varint(len(packed)))
            grow = min(extra, _MAX_SIZE_BYTES - width)
            extra -= grow
            head += tag(2, LEN) + varint_padded(len(packed), width + grow) + packed
        width = len(varint(self.nbytes))
        grow = min(extra, _MAX_SIZE_BYTES - width)
        extra -= grow
        head += tag(3, LEN) + varint_padded(self.nbytes, width + grow)
        return None if extra else head


class _Message:
    """A length-delimited field holding nested nodes (bytes, _Tensor, _Message)."""

    __slots__ = ("number", "children")

    def __init__(self, number: int, children: list):
        self.number, self.children = number, children


def _bound(node) -> int:
    """An upper bound of a node's encoded size (the width of its length prefix is chosen from it)."""
    if isinstance(node, bytes):
        return len(node)
    payload = node.payload_bound() if isinstance(node, _Tensor) else sum(_bound(c) for c in node.children)
    return len(tag(node.number, LEN)) + len(varint(payload)) + payload


def _emit(node, out: list, offset: int) -> int:
    """Append the node's parts (bytes and holes) to `out`, starting at absolute `offset`; returns
    the offset after it. Length prefixes take the width of their bound, so that a child's offset
    is known before its siblings' sizes."""
    if isinstance(node, bytes):
        out.append(node)
        return offset + len(node)
    if node.number == 0:  # a top-level Tensor message
        head = node.header(offset)
        out += [head, _Hole(node.key, node.nbytes)] if node.nbytes else [head]
        return offset + len(head) + node.nbytes
    head = tag(node.number, LEN)
    payload = node.payload_bound() if isinstance(node, _Tensor) else sum(_bound(c) for c in node.children)
    width = len(varint(payload))
    out.append(head)
    slot = len(out)
    out.append(b"")
    start = end = offset + len(head) + width
    if isinstance(node, _Tensor):
        tensor_head = node.header(start)
        out += [tensor_head, _Hole(node.key, node.nbytes)] if node.nbytes else [tensor_head]
        end = start + len(tensor_head) + node.nbytes
    else:
        for child in node.children:
            end = _emit(child, out, end)
    out[slot] = varint_padded(end - start, width)
    return end


def _layout(nodes: list) -> list:
    """A message's parts: header bytes (adjacent ones joined) and holes, data ALIGN-aligned."""
    parts: list = []
    offset = 0
    for node in nodes:
        offset = _emit(node, parts, offset)
    out: list = []
    for p in parts:
        if isinstance(p, bytes):
            if not p:
                continue
            if out and isinstance(out[-1], bytes):
                out[-1] += p
                continue
        out.append(p)
    return out


def _classify(name: str) -> tuple[str, str, str]:
    """("agent", agent, kind) | ("named", name, "") | ("extra", name, "") for a batch column name."""
    kind, sep, agent = name.partition("/")
    if sep and kind in AGENT_NUMBERS and agent and "/" not in agent:
        return "agent", agent, kind
    if name in BATCH_NUMBERS:
        return "named", name, ""
    return "extra", name, ""


def batch_nodes(columns: list[tuple[str, str, tuple, int]]) -> list:
    """A TransitionBatch's fields for columns (name, dtype name, full shape, data bytes), holes
    keyed by column name: per-agent columns in the agents map, `done` ... `policy_version` in their
    fields, anything else in extras (as mamql.codec.encode_batch does)."""
    agents: dict[str, list] = {}
    named: dict[str, tuple] = {}
    extras: list[tuple] = []
    for column in columns:
        where, key, kind = _classify(column[0])
        if where == "agent":
            agents.setdefault(key, []).append((AGENT_NUMBERS[kind], column))
        elif where == "named":
            named[key] = column
        else:
            extras.append(column)
    nodes: list = []
    for agent, fields_ in agents.items():
        value = [_Tensor(number, dtype, shape, nbytes, name)
                 for number, (name, dtype, shape, nbytes) in sorted(fields_, key=lambda f: f[0])]
        nodes.append(_Message(1, [string_field(1, agent), _Message(2, value)]))
    for number, name in BATCH_FIELDS.items():
        if name in named:
            _, dtype, shape, nbytes = named[name]
            nodes.append(_Tensor(number, dtype, shape, nbytes, name))
    for name, dtype, shape, nbytes in extras:
        nodes.append(_Message(8, [string_field(1, name), _Tensor(2, dtype, shape, nbytes, name)]))
    return nodes


def wire_arrays(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's columns as C-contiguous little-endian arrays of wire dtypes (no copy when they
    are already); raises WireError for what the wire cannot carry, like mamql.codec.encode_batch."""
    arrays = {}
    for name, value in batch.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        dtype = arr.dtype
        if dtype.name not in ITEMSIZE or dtype.name == "bfloat16":
            raise WireError(f"field {name!r}: dtype {dtype.name!r} is not supported; "
                            f"allowed: {', '.join(n for n in ITEMSIZE if n != 'bfloat16')}")
        if dtype.byteorder == ">":
            arr = arr.astype(dtype.newbyteorder("<"))
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        arrays[str(name)] = arr
    try:
        batch_size(arrays)
    except BatchError as exc:
        raise WireError(str(exc)) from None
    return arrays


def _columns(arrays: Mapping[str, np.ndarray]) -> list[tuple[str, str, tuple, int]]:
    return [(name, arr.dtype.name, arr.shape, arr.nbytes) for name, arr in arrays.items()]


def _join(parts: list, arrays: Mapping) -> bytes:
    """Header bytes and array buffers joined: the one copy of the data into the message."""
    return b"".join(p if isinstance(p, bytes) else arrays[p.key].reshape(-1).view(np.uint8) for p in parts)


def encode_batch(batch: Mapping[str, np.ndarray]) -> bytes:
    """A TransitionBatch message's bytes (mamql.codec.encode_batch(batch).SerializeToString(), faster)."""
    arrays = wire_arrays(batch)
    return _join(_layout(batch_nodes(_columns(arrays))), arrays)


def encode_tensor(array: np.ndarray, dtype_name: str | None = None) -> bytes:
    """A Tensor message's bytes; `dtype_name="bfloat16"` marks uint16 words holding bf16 values."""
    name, arr = tensor_to_encode(array, dtype_name, WireError)
    arr = np.ascontiguousarray(arr)
    return _join(_layout([_Tensor(0, name, arr.shape, arr.nbytes, 0)]), {0: arr})


_LAYOUTS: dict[tuple, list] = {}  # columns -> an InsertRequest's batch parts (a writer sends one shape)


def _insert_layout(columns: list[tuple[str, str, tuple, int]]) -> list:
    key = tuple(columns)
    parts = _LAYOUTS.get(key)
    if parts is None:
        parts = _layout([_Message(2, batch_nodes(columns))])
        if len(_LAYOUTS) >= 64:
            _LAYOUTS.clear()
        _LAYOUTS[key] = parts
    return parts


class InsertEncoder:
    """An InsertRequest laid out once; `encode(sequence)` writes its bytes. The batch comes first
    (field order is free in protobuf), so its data offsets, and their alignment, do not depend on
    the sequence number, which the writer knows only once it queues the request. Layouts are
    cached by column names, dtypes and shapes: a writer's batches all look alike."""

    def __init__(self, table: str, batch: Mapping[str, np.ndarray], timeout: float | None = None):
        self.arrays = wire_arrays(batch)
        self.rows = len(next(iter(self.arrays.values())))
        self.parts = _insert_layout(_columns(self.arrays))
        self.head = string_field(1, table)
        self.tail = float_field(4, float(timeout or 0.0))

    def encode(self, sequence: int = 0) -> bytes:
        return _join([*self.parts, self.head + varint_field(3, sequence) + self.tail], self.arrays)


def ack_request(table: str, sequence: int) -> bytes:
    """An InsertRequest without a batch: with ack-every > 1 it asks for the pending acks at once."""
    return string_field(1, table) + varint_field(3, sequence)


def encode_insert(table: str, batch: Mapping[str, np.ndarray], sequence: int = 0,
                  timeout: float | None = None) -> bytes:
    """An InsertRequest's bytes."""
    return InsertEncoder(table, batch, timeout).encode(sequence)


# ---------------------------------------------------------------------------- the allocator
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value
TRIM_THRESHOLD = 128 << 20
_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep multi-megabyte message buffers in the heap between messages (glibc; once per process).

    Every message is a fresh multi-MB buffer (gRPC's receive buffer, our request or response
    bytes). glibc serves those from mmap (or trims them off the heap on free) and each new one
    page-faults in again: ~600-700 minor faults per 4.6 MB message here, costing more than the codec
    and halving bare gRPC throughput too (bench/replay.py `page_faults`). Raising M_MMAP_THRESHOLD
    to its maximum (32 MB) and M_TRIM_THRESHOLD to 128 MB keeps freed buffers for reuse: ~20-50
    faults per message. The price: up to M_TRIM_THRESHOLD of freed memory may stay mapped per arena.
    Left alone when MAMQL_MALLOC_TUNING=0 or the environment sets glibc's own knobs
    (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES); a no-op off glibc."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    env = os.environ
    if env.get("MAMQL_MALLOC_TUNING", "1") == "0" or any(
            k in env for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned


# ---------------------------------------------------------------------------- sample responses
_bytes_new = ctypes.pythonapi.PyBytes_FromStringAndSize
_bytes_new.restype = ctypes.py_object
_bytes_new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_bytes_address = ctypes.pythonapi.PyBytes_AsString
_bytes_address.restype = ctypes.c_void_p
_bytes_address.argtypes = (ctypes.py_object,)


def fresh_bytes(size: int) -> tuple[bytes, np.ndarray]:
    """A new, not yet shared bytes object of `size` bytes and a writable uint8 view of it.

    gRPC sends only `bytes`; filling a bytes object before anyone else sees it (what C code does
    with PyBytes_FromStringAndSize(NULL, n)) saves the copy a bytearray -> bytes conversion costs.
    The view keeps the object alive; write only until it is handed over."""
    data = _bytes_new(None, size)
    if size == 0:
        return data, np.zeros(0, np.uint8)
    raw = (ctypes.c_char * size).from_address(_bytes_address(data))
    raw.keep = data  # the view's base chain holds the bytes object
    return data, np.frombuffer(raw, np.uint8)


KEYS = "\0keys"  # the hole of a SampleResponse's keys


def _sample_nodes(columns: list[tuple[str, str, tuple, int]], rows: int) -> list:
    return [_Message(1, batch_nodes(columns)), _Tensor(2, "uint64", (rows,), 8 * rows, KEYS)]


class BatchTemplate:
    """The bytes layout of a SampleResponse with `rows` rows of `schema`: fixed headers and one
    hole per column (plus the keys). `allocate()` returns a fresh message with the headers written
    and writable views of the holes, which the table fills by gathering rows straight into them."""

    def __init__(self, schema: Mapping[str, tuple[str, tuple]], rows: int):
        self.schema, self.rows = schema, rows
        columns = [(name, str(d), (rows, *shape), rows * math.prod(shape) * ITEMSIZE[str(d)])
                   for name, (d, shape) in schema.items()]
        shapes = {name: (NP_DTYPES[d], shape) for name, d, shape, _ in columns}
        shapes[KEYS] = (NP_DTYPES["uint64"], (rows,))
        self.headers: list[tuple[int, np.ndarray]] = []
        self.holes: dict[str, tuple[int, np.dtype, tuple]] = {}
        offset = 0
        for part in _layout(_sample_nodes(columns, rows)):
            if isinstance(part, bytes):
                self.headers.append((offset, np.frombuffer(part, np.uint8)))
                offset += len(part)
            else:
                self.holes[part.key] = (offset, *shapes[part.key])
                offset += part.nbytes
        self.size = offset

    def allocate(self) -> tuple[bytes, dict[str, np.ndarray], np.ndarray]:
        """(message, column -> writable view, keys view)."""
        data, raw = fresh_bytes(self.size)
        for offset, head in self.headers:
            raw[offset:offset + len(head)] = head
        views = {}
        for key, (offset, dtype, shape) in self.holes.items():
            views[key] = raw[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)
        return data, views, views.pop(KEYS)


def encode_sample(batch: Mapping[str, np.ndarray], keys: np.ndarray) -> bytes:
    """A SampleResponse's bytes from arrays already gathered (the server gathers into a template)."""
    arrays = wire_arrays(batch)
    columns = _columns(arrays)
    arrays[KEYS] = np.ascontiguousarray(np.asarray(keys, dtype="<u8"))
    return _join(_layout(_sample_nodes(columns, len(arrays[KEYS]))), arrays)


# ============================================================================ decoding primitives
def as_buffer(data) -> bytes | memoryview:
    """bytes as they are; any other contiguous buffer as a flat memoryview (no copy)."""
    if isinstance(data, bytes):
        return data
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:
        raise WireError(f"not a contiguous byte buffer: {exc}") from None


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """(value mod 2**64, position after it); at most 10 bytes, all before `end`."""
    if pos >= end:
        raise WireError("truncated message: a varint runs past its end")
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= end:
            raise WireError("truncated message: a varint runs past its end")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & MASK64, pos
        shift += 7
        if shift >= 70:
            raise WireError("malformed varint: longer than 10 bytes")


def _read_key(buf, pos: int, end: int) -> tuple[int, int, int]:
    """(field number, wire type, position after): a tag is a 32-bit varint of at most 5 bytes."""
    key, after = read_varint(buf, pos, end)
    if after - pos > 5 or key > 0xFFFFFFFF:
        raise WireError("malformed tag: longer than 5 bytes")
    field = key >> 3
    if field < 1 or field > MAX_FIELD_NUMBER:
        raise WireError(f"invalid field number {field}")
    return field, key & 7, after


def _read_size(buf, pos: int, end: int, field: int) -> tuple[int, int]:
    """(start, stop) of a length-delimited payload: a length of at most 5 bytes, below 2**31 - 1
    (protobuf's own limits), that ends within the message."""
    size, start = read_varint(buf, pos, end)
    if start - pos > 5 or size >= 0x7FFFFFFF:
        raise WireError(f"field {field}: malformed length")
    stop = start + size
    if stop > end:
        raise WireError(f"truncated message: field {field} declares {size} bytes, {end - start} left")
    return start, stop


def _skip_group(buf, pos: int, end: int, number: int, depth: int) -> int:
    if depth > MAX_GROUP_DEPTH:
        raise WireError("groups nested too deeply")
    while True:
        field, wire_type, pos = _read_key(buf, pos, end)
        if wire_type == EGROUP:
            if field != number:
                raise WireError(f"end-group tag {field} closes group {number}")
            return pos
        pos = _skip(buf, pos, end, field, wire_type, depth)


def _skip(buf, pos: int, end: int, field: int, wire_type: int, depth: int = 0) -> int:
    if wire_type == VARINT:
        return read_varint(buf, pos, end)[1]
    if wire_type == LEN:
        return _read_size(buf, pos, end, field)[1]
    if wire_type == SGROUP:
        return _skip_group(buf, pos, end, field, depth + 1)
    if wire_type == I64:
        stop = pos + 8
    elif wire_type == I32:
        stop = pos + 4
    else:
        raise WireError(f"field {field}: invalid wire type {wire_type}")
    if stop > end:
        raise WireError(f"truncated message: field {field} runs past its end")
    return stop


def fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, a, b) for each field of the message in buf[pos:end]: a varint's
    value and end; a length-delimited or fixed-size field's payload [a, b); a group's extent."""
    while pos < end:
        field, wire_type, pos = _read_key(buf, pos, end)
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield field, wire_type, value, pos
        elif wire_type == LEN:
            start, pos = _read_size(buf, pos, end, field)
            yield field, wire_type, start, pos
        else:
            start = pos
            pos = _skip(buf, pos, end, field, wire_type)
            yield field, wire_type, start, pos


def _want(field: int, wire_type: int, expected: int, where: str) -> None:
    if wire_type != expected:
        raise WireError(f"{where}: field {field} has wire type {wire_type}, expected {expected}")


def _text(buf, start: int, stop: int, where: str) -> str:
    try:
        return str(buf[start:stop], "utf-8")
    except UnicodeDecodeError:
        raise WireError(f"{where}: string is not valid UTF-8") from None


def _int64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


# ============================================================================ tensors and batches
class WireTensor:
    """A parsed Tensor: dtype, shape and where its data lies in the message; `array()` checks it."""

    __slots__ = ("buf", "dtype", "shape", "start", "stop")

    def __init__(self, buf):
        self.buf = buf
        self.dtype = ""
        self.shape: list[int] = []
        self.start = self.stop = 0

    def merge(self, pos: int, end: int) -> "WireTensor":
        """Parse one encoding into this tensor (a repeated occurrence merges, as in protobuf)."""
        buf = self.buf
        for field, wire_type, a, b in fields(buf, pos, end):
            if field == 1:
                _want(field, wire_type, LEN, "Tensor")
                self.dtype = _text(buf, a, b, "Tensor.dtype")
            elif field == 2:
                if wire_type == LEN:
                    while a < b:
                        value, a = read_varint(buf, a, b)
                        self._dim(value)
                elif wire_type == VARINT:
                    self._dim(a)
                else:
                    _want(field, wire_type, LEN, "Tensor")
            elif field == 3:
                _want(field, wire_type, LEN, "Tensor")
                self.start, self.stop = a, b
        return self

    def _dim(self, value: int) -> None:
        if len(self.shape) >= MAX_DIMS:
            raise WireError(f"too many dimensions (> {MAX_DIMS})")
        self.shape.append(_int64(value))

    @property
    def nbytes(self) -> int:
        return self.stop - self.start

    def array(self, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
        """A read-only view of the data after the checks of mamql.codec.check_tensor."""
        name = self.dtype
        if name not in ITEMSIZE:
            raise WireError(f"dtype {name!r} is not supported; allowed: {', '.join(ITEMSIZE)}")
        shape = tuple(self.shape)
        if any(d < 0 for d in shape):
            raise WireError(f"negative dimension in shape {shape}")
        count = math.prod(shape)
        expected = count * ITEMSIZE[name]
        if expected > max_bytes:
            raise WireError(f"tensor of shape {shape} ({expected} bytes) exceeds the {max_bytes}-byte limit")
        if self.stop - self.start != expected:
            raise WireError(f"payload is {self.stop - self.start} bytes but dtype {name} and shape {shape} "
                            f"need {expected}")
        return np.frombuffer(self.buf, NP_DTYPES[name], count, self.start).reshape(shape)


def parse_tensor(data) -> WireTensor:
    buf = as_buffer(data)
    return WireTensor(buf).merge(0, len(buf))


def decode_tensor(data, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """A Tensor message's bytes -> a read-only view (mamql.codec.decode_tensor without the copies)."""
    return parse_tensor(data).array(max_bytes)


def _map_entry(buf, pos: int, end: int, where: str) -> tuple[str, list[tuple[int, int]]]:
    """A map entry's string key and the spans of its (message) value, in order."""
    key, values = "", []
    for field, wire_type, a, b in fields(buf, pos, end):
        if field == 1:
            _want(field, wire_type, LEN, where)
            key = _text(buf, a, b, where)
        elif field == 2:
            _want(field, wire_type, LEN, where)
            values.append((a, b))
    return key, values


class WireBatch:
    """A parsed TransitionBatch: its tensors by column name, not yet checked."""

    __slots__ = ("buf", "agents", "named", "extras")

    def __init__(self, buf):
        self.buf = buf
        self.agents: dict[str, dict[str, WireTensor]] = {}
        self.named: dict[str, WireTensor] = {}
        self.extras: dict[str, WireTensor] = {}

    def merge(self, pos: int, end: int) -> "WireBatch":
        buf = self.buf
        for field, wire_type, a, b in fields(buf, pos, end):
            if field == 1:
                _want(field, wire_type, LEN, "TransitionBatch.agents")
                agent, values = _map_entry(buf, a, b, "TransitionBatch.agents")
                columns: dict[str, WireTensor] = {}
                for start, stop in values:
                    for f, wt, x, y in fields(buf, start, stop):
                        if f in AGENT_KINDS:
                            _want(f, wt, LEN, "AgentTransitions")
                            kind = AGENT_KINDS[f]
                            columns.setdefault(kind, WireTensor(buf)).merge(x, y)
                self.agents[agent] = columns  # a repeated map key replaces the earlier entry
            elif field in BATCH_FIELDS:
                _want(field, wire_type, LEN, "TransitionBatch")
                name = BATCH_FIELDS[field]
                tensor = self.named.get(name)
                if tensor is None:
                    tensor = self.named[name] = WireTensor(buf)
                tensor.merge(a, b)
            elif field == 8:
                _want(field, wire_type, LEN, "TransitionBatch.extras")
                name, values = _map_entry(buf, a, b, "TransitionBatch.extras")
                tensor = WireTensor(buf)
                for start, stop in values:
                    tensor.merge(start, stop)
                self.extras[name] = tensor
        return self

    def tensors(self) -> dict[str, WireTensor]:
        """Column name -> tensor, with mamql.codec.decode_batch's naming rules."""
        out: dict[str, WireTensor] = {}
        for agent, columns in self.agents.items():
            if not agent or "/" in agent:
                raise WireError(f"invalid agent name {agent!r}")
            for kind in PER_AGENT_FIELDS:
                if kind in columns:
                    out[f"{kind}/{agent}"] = columns[kind]
        for name in SHARED_FIELDS + METADATA_FIELDS:
            if name in self.named:
                out[name] = self.named[name]
        for name, tensor in self.extras.items():
            if name in out:
                raise WireError(f"extra field {name!r} duplicates a named field")
            out[name] = tensor
        if not out:
            raise WireError("batch has no fields")
        return out

    def decode(self, max_bytes: int = DEFAULT_MAX_BYTES, layout: "Layout | None" = None) -> Batch:
        """Checked read-only views: against `layout` in one pass when given, else tensor by tensor."""
        tensors = self.tensors()
        if layout is not None:
            return layout.decode(tensors, max_bytes)
        out: Batch = {}
        budget = max_bytes
        for name, tensor in tensors.items():
            out[name] = arr = tensor.array(budget)
            budget -= arr.nbytes
            if arr.ndim == 0:
                raise WireError(f"field {name!r} is a scalar; every field needs a leading batch dimension")
        try:
            batch_size(out)
        except BatchError as exc:
            raise WireError(str(exc)) from None
        return out


def decode_batch(data, max_bytes: int = DEFAULT_MAX_BYTES, layout: "Layout | None" = None) -> Batch:
    """A TransitionBatch message's bytes -> read-only views (mamql.codec.decode_batch without copies)."""
    buf = as_buffer(data)
    return WireBatch(buf).merge(0, len(buf)).decode(max_bytes, layout)


class Layout:
    """What every message for one table must look like, precomputed from its schema: a batch is
    checked in one pass (names, dtypes, row shapes, one row count, byte lengths) before any view."""

    def __init__(self, schema: Mapping[str, tuple[str, tuple]]):
        self.schema = schema
        self.columns = {}
        for name, (dtype, shape) in schema.items():
            shape = tuple(int(d) for d in shape)
            count = math.prod(shape)
            self.columns[name] = (str(dtype), NP_DTYPES[str(dtype)], shape, count, count * ITEMSIZE[str(dtype)])
        self.row_bytes = sum(c[4] for c in self.columns.values())

    def decode(self, tensors: Mapping[str, WireTensor], max_bytes: int = DEFAULT_MAX_BYTES) -> Batch:
        columns = self.columns
        if tensors.keys() != columns.keys():
            missing = sorted(set(columns) - set(tensors))
            extra = sorted(set(tensors) - set(columns))
            raise WireError(f"fields do not match the table schema: missing {missing}, unexpected {extra}")
        rows = None
        for name, tensor in tensors.items():
            dtype, _, shape, _, row_bytes = columns[name]
            if tensor.dtype != dtype:
                raise WireError(f"field {name!r}: dtype {tensor.dtype or '(none)'}, table expects {dtype}")
            got = tensor.shape
            if len(got) != len(shape) + 1 or tuple(got[1:]) != shape:
                raise WireError(f"field {name!r}: row shape {tuple(got[1:])}, table expects {shape}")
            if rows is None:
                rows = got[0]
                if rows < 0:
                    raise WireError(f"negative dimension in shape {tuple(got)}")
                if rows * self.row_bytes > max_bytes:
                    raise WireError(f"a batch of {rows} rows ({rows * self.row_bytes} bytes) exceeds the "
                                    f"{max_bytes}-byte limit")
            elif got[0] != rows:
                raise WireError(f"fields have different lengths: {name!r} has {got[0]} rows, others {rows}")
            if tensor.stop - tensor.start != rows * row_bytes:
                raise WireError(f"field {name!r}: payload is {tensor.stop - tensor.start} bytes, "
                                f"{rows} rows need {rows * row_bytes}")
        return {name: np.frombuffer(t.buf, columns[name][1], rows * columns[name][3], t.start)
                .reshape((rows, *columns[name][2])) for name, t in tensors.items()}


# ============================================================================ the replay messages
class InsertView:
    """A parsed InsertRequest. `batch` is None when the request carries none (an ack request)."""

    __slots__ = ("table", "sequence", "timeout_seconds", "batch")

    def __init__(self, table: str, sequence: int, timeout_seconds: float, batch: WireBatch | None):
        self.table, self.sequence, self.timeout_seconds, self.batch = table, sequence, timeout_seconds, batch


def parse_insert(data) -> InsertView:
    buf = as_buffer(data)
    table, sequence, timeout, batch = "", 0, 0.0, None
    for field, wire_type, a, b in fields(buf, 0, len(buf)):
        if field == 1:
            _want(field, wire_type, LEN, "InsertRequest")
            table = _text(buf, a, b, "InsertRequest.table")
        elif field == 2:
            _want(field, wire_type, LEN, "InsertRequest")
            batch = (batch or WireBatch(buf)).merge(a, b)
        elif field == 3:
            _want(field, wire_type, VARINT, "InsertRequest")
            sequence = a
        elif field == 4:
            _want(field, wire_type, I32, "InsertRequest")
            timeout = struct.unpack_from("<f", buf, a)[0]
    return InsertView(table, sequence, timeout, batch)


def parse_sample(data, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Batch, np.ndarray]:
    """A SampleResponse's bytes -> (batch views, keys view), every tensor checked."""
    buf = as_buffer(data)
    batch, keys = WireBatch(buf), WireTensor(buf)
    for field, wire_type, a, b in fields(buf, 0, len(buf)):
        if field == 1:
            _want(field, wire_type, LEN, "SampleResponse")
            batch.merge(a, b)
        elif field == 2:
            _want(field, wire_type, LEN, "SampleResponse")
            keys.merge(a, b)
    out = batch.decode(max_bytes)
    keys_array = keys.array(max_bytes)
    if keys_array.ndim != 1 or len(keys_array) != len(next(iter(out.values()))):
        raise WireError(f"keys of shape {keys_array.shape} do not match a batch of {len(next(iter(out.values())))}")
    return out, keys_array


# ============================================================================ weight chunks
class WireSlice:
    """A parsed TensorSlice (same attributes as the generated class, `data` a WireTensor)."""

    __slots__ = ("name", "shape", "offset", "data")

    def __init__(self, buf):
        self.name, self.shape, self.offset, self.data = "", [], 0, WireTensor(buf)


class WireChunk:
    """A parsed WeightChunk (same attributes as the generated class); `raw` is its message bytes,
    so a service can pass it on without serializing it again."""

    __slots__ = ("raw", "version", "slices", "last", "published_unix_s", "metadata", "epoch", "alpha")

    def __init__(self, raw):
        self.raw = raw
        self.version = self.epoch = 0
        self.slices: list[WireSlice] = []
        self.last = False
        self.published_unix_s = self.alpha = 0.0
        self.metadata: dict[str, str] = {}


def _parse_slice(piece: WireSlice, buf, pos: int, end: int) -> None:
    for field, wire_type, a, b in fields(buf, pos, end):
        if field == 1:
            _want(field, wire_type, LEN, "TensorSlice")
            piece.name = _text(buf, a, b, "TensorSlice.name")
        elif field == 2:
            if wire_type == LEN:
                while a < b:
                    value, a = read_varint(buf, a, b)
                    piece.shape.append(_int64(value))
            else:
                _want(field, wire_type, VARINT, "TensorSlice")
                piece.shape.append(_int64(a))
            if len(piece.shape) > MAX_DIMS:
                raise WireError(f"parameter {piece.name!r}: too many dimensions (> {MAX_DIMS})")
        elif field == 3:
            _want(field, wire_type, VARINT, "TensorSlice")
            piece.offset = a
        elif field == 4:
            _want(field, wire_type, LEN, "TensorSlice")
            piece.data.merge(a, b)


def parse_chunk(data) -> WireChunk:
    """A WeightChunk's bytes -> WireChunk (tensor data stays in the message until checked)."""
    buf = as_buffer(data)
    chunk = WireChunk(data)
    for field, wire_type, a, b in fields(buf, 0, len(buf)):
        if field == 1:
            _want(field, wire_type, VARINT, "WeightChunk")
            chunk.version = a
        elif field == 2:
            _want(field, wire_type, LEN, "WeightChunk")
            piece = WireSlice(buf)
            _parse_slice(piece, buf, a, b)
            chunk.slices.append(piece)
        elif field == 3:
            _want(field, wire_type, VARINT, "WeightChunk")
            chunk.last = a != 0
        elif field == 4:
            _want(field, wire_type, I64, "WeightChunk")
            chunk.published_unix_s = struct.unpack_from("<d", buf, a)[0]
        elif field == 5:
            _want(field, wire_type, LEN, "WeightChunk.metadata")
            key = value = ""
            for f, wt, x, y in fields(buf, a, b):
                if f == 1:
                    _want(f, wt, LEN, "WeightChunk.metadata")
                    key = _text(buf, x, y, "WeightChunk.metadata")
                elif f == 2:
                    _want(f, wt, LEN, "WeightChunk.metadata")
                    value = _text(buf, x, y, "WeightChunk.metadata")
            chunk.metadata[key] = value  # a repeated key replaces the earlier entry
        elif field == 6:
            _want(field, wire_type, VARINT, "WeightChunk")
            chunk.epoch = a
        elif field == 7:
            _want(field, wire_type, I64, "WeightChunk")
            chunk.alpha = struct.unpack_from("<d", buf, a)[0]
    return chunk


def encode_chunk(version: int, slices: list[tuple[str, tuple, int, np.ndarray, str]], last: bool = False,
                 published_unix_s: float = 0.0, metadata: Mapping[str, str] | None = None, epoch: int = 0,
                 alpha: float = 0.0) -> bytes:
    """A WeightChunk's bytes; slices are (name, full shape, offset, 1-D contiguous data, dtype name)."""
    nodes: list = [varint_field(1, version)]
    arrays: dict[int, np.ndarray] = {}
    for i, (name, shape, offset, data, dtype_name) in enumerate(slices):
        arrays[i] = data
        head = string_field(1, name) + packed_field(2, shape) + varint_field(3, offset)
        nodes.append(_Message(2, [head, _Tensor(4, dtype_name, data.shape, data.nbytes, i)]))
    tail = varint_field(3, 1 if last else 0) + double_field(4, published_unix_s)
    for key, value in (metadata or {}).items():
        tail += len_field(5, string_field(1, key) + string_field(2, value))
    nodes.append(tail + varint_field(6, epoch) + double_field(7, alpha))
    return _join(_layout(nodes), arrays)
