"""Policy weights on the wire: split a version into size-bounded chunks and reassemble it safely.

The learner publishes `{"<agent>/<param>": array}`; actors must never apply a torn or partial
version, so the assembler only returns a version once every element of every parameter arrived,
and rejects slices that overlap, overrun their parameter or mix versions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from mamql.codec import ITEMSIZE, CodecError, decode_tensor, encode_tensor
from protos import weights_pb2


@dataclass
class WeightSet:
    version: int
    tensors: dict[str, np.ndarray]  # bfloat16 parameters arrive as uint16 words (see `dtypes`)
    dtypes: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)
    published_unix_s: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.tensors.values())


def split_weights(
    tensors: Mapping[str, np.ndarray],
    version: int,
    max_chunk_bytes: int = 4 << 20,
    dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    published_unix_s: float | None = None,
) -> list[weights_pb2.WeightChunk]:
    """Chunks of at most ~max_chunk_bytes payload each; the last one has `last=True`."""
    if version < 1:
        raise ValueError("weight versions start at 1")
    published = time.time() if published_unix_s is None else published_unix_s
    chunks: list[weights_pb2.WeightChunk] = []
    current = weights_pb2.WeightChunk(version=version, published_unix_s=published, metadata=dict(metadata or {}))
    room = max_chunk_bytes
    for name, array in tensors.items():
        flat = np.ascontiguousarray(array).reshape(-1)
        dtype = (dtypes or {}).get(name, flat.dtype.name)
        per_item = ITEMSIZE.get(dtype)
        if per_item is None:
            raise CodecError(f"parameter {name!r}: dtype {dtype!r} is not supported")
        offset = 0
        while offset < flat.size or (flat.size == 0 and offset == 0):
            take = min(flat.size - offset, max(room // per_item, 1))
            piece = weights_pb2.TensorSlice(name=name, shape=list(array.shape), offset=offset)
            piece.data.CopyFrom(encode_tensor(flat[offset : offset + take], dtype))
            current.slices.append(piece)
            offset += take
            room -= take * per_item
            if room <= 0:
                chunks.append(current)
                current = weights_pb2.WeightChunk(version=version, published_unix_s=published)
                room = max_chunk_bytes
            if flat.size == 0:
                break
    if current.slices or not chunks:
        chunks.append(current)
    chunks[-1].last = True
    return chunks


class WeightAssembler:
    """Collects the chunks of one version; `add` returns the WeightSet when the version is complete."""

    def __init__(self, max_bytes: int = 1 << 31):
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self._version: int | None = None
        self._buffers: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, str] = {}
        self._filled: dict[str, int] = {}
        self._metadata: dict[str, str] = {}
        self._published = 0.0
        self._bytes = 0

    def add(self, chunk: weights_pb2.WeightChunk) -> WeightSet | None:
        if self._version is None:
            self._version, self._metadata, self._published = chunk.version, dict(chunk.metadata), chunk.published_unix_s
        elif chunk.version != self._version:
            expected = self._version
            self._reset()
            raise CodecError(f"chunk of version {chunk.version} arrived inside version {expected}")
        try:
            for piece in chunk.slices:
                self._add_slice(piece)
        except CodecError:
            self._reset()
            raise
        if not chunk.last:
            return None
        missing = [n for n, buf in self._buffers.items() if self._filled[n] != buf.size]
        result = WeightSet(self._version, self._buffers, self._dtypes, self._metadata, self._published)
        self._reset()
        if missing:
            raise CodecError(f"version {result.version} ended with incomplete parameters: {missing}")
        return result

    def _add_slice(self, piece: weights_pb2.TensorSlice) -> None:
        data = decode_tensor(piece.data, self.max_bytes)
        if data.ndim != 1:
            raise CodecError(f"parameter {piece.name!r}: slice data must be 1-D")
        shape = tuple(int(d) for d in piece.shape)
        if any(d < 0 for d in shape):
            raise CodecError(f"parameter {piece.name!r}: negative dimension in {shape}")
        buf = self._buffers.get(piece.name)
        if buf is None:
            size = math.prod(shape)
            self._bytes += size * data.itemsize
            if self._bytes > self.max_bytes:
                raise CodecError(f"weights exceed the {self.max_bytes}-byte limit")
            buf = self._buffers[piece.name] = np.empty(size, dtype=data.dtype)
            self._dtypes[piece.name] = piece.data.dtype
            self._filled[piece.name] = 0
        elif buf.dtype != data.dtype or self._dtypes[piece.name] != piece.data.dtype:
            raise CodecError(f"parameter {piece.name!r}: slices disagree on dtype")
        if piece.offset != self._filled[piece.name]:
            raise CodecError(
                f"parameter {piece.name!r}: slice at {piece.offset}, expected {self._filled[piece.name]} (in order)"
            )
        end = piece.offset + data.size
        if end > buf.size:
            raise CodecError(f"parameter {piece.name!r}: slice overruns its shape {shape}")
        buf[piece.offset : end] = data
        self._filled[piece.name] = end
        if end == buf.size:
            self._buffers[piece.name] = buf.reshape(shape)


def iter_assembled(chunks, assembler: WeightAssembler | None = None) -> Iterator[WeightSet]:
    """Complete versions from a stream of chunks."""
    assembler = assembler or WeightAssembler()
    for chunk in chunks:
        done = assembler.add(chunk)
        if done is not None:
            yield done
