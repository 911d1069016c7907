"""Policy weights on the wire: split a version into size-bounded chunks and reassemble it safely.

The learner publishes `{"<agent>/<param>": array}`; actors must never apply a torn or partial
version, so the assembler only returns a version once every element of every parameter arrived,
and rejects slices that overlap, overrun their parameter or mix versions.

A version is named by (epoch, version): the epoch identifies one learner incarnation (random at a
fresh start, restored by --resume), so a fresh learner whose versions restart at 1 is not mistaken
for an old one. Each version also carries the temperature alpha its policy is defined at.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from mamql import wire
from mamql.codec import ITEMSIZE, CodecError, decode_tensor, encode_tensor
from mamql.protos import weights_pb2


@dataclass
class WeightSet:
    version: int
    tensors: dict[str, np.ndarray]  # bfloat16 parameters arrive as uint16 words (see `dtypes`)
    dtypes: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)
    published_unix_s: float = 0.0
    epoch: int = 0  # learner incarnation; 0 = none given
    alpha: float = 0.0  # Boltzmann temperature of the learner's policy; 0 = none given

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.tensors.values())

    def supersedes(self, epoch: int, version: int) -> bool:
        """Whether an actor holding (epoch, version) should switch to this set: any other epoch at
        once (a fresh learner restarts its versions), within one epoch only newer versions."""
        return self.epoch != epoch or self.version > version


def new_epoch() -> int:
    """A random non-zero 63-bit learner epoch (fits the int64 `policy_epoch` transition column)."""
    return secrets.randbits(63) or 1


def _plan(tensors: Mapping[str, np.ndarray], max_chunk_bytes: int,
          dtypes: Mapping[str, str] | None) -> list[list[tuple[str, tuple, int, np.ndarray, str]]]:
    """The chunks of a version: each a list of (name, full shape, offset, 1-D data, dtype name),
    at most ~max_chunk_bytes of data per chunk (a parameter spans chunks when it must)."""
    chunks: list[list] = [[]]
    room = max_chunk_bytes
    for name, array in tensors.items():
        array = np.asarray(array)
        flat = np.ascontiguousarray(array).reshape(-1)
        dtype = (dtypes or {}).get(name, flat.dtype.name)
        per_item = ITEMSIZE.get(dtype)
        if per_item is None:
            raise CodecError(f"parameter {name!r}: dtype {dtype!r} is not supported")
        if flat.dtype.byteorder == ">":
            flat = flat.astype(flat.dtype.newbyteorder("<"))
        offset = 0
        while offset < flat.size or (flat.size == 0 and offset == 0):
            take = min(flat.size - offset, max(room // per_item, 1))
            chunks[-1].append((name, tuple(array.shape), offset, flat[offset : offset + take], dtype))
            offset += take
            room -= take * per_item
            if room <= 0:
                chunks.append([])
                room = max_chunk_bytes
            if flat.size == 0:
                break
    if not chunks[-1] and len(chunks) > 1:
        chunks.pop()
    return chunks


def split_weights(
    tensors: Mapping[str, np.ndarray],
    version: int,
    max_chunk_bytes: int = 4 << 20,
    dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    published_unix_s: float | None = None,
    epoch: int = 0,
    alpha: float = 0.0,
) -> list[weights_pb2.WeightChunk]:
    """Chunks of at most ~max_chunk_bytes payload each, as generated messages; the last one has
    `last=True`. encode_weights gives the same chunks as bytes, without the generated classes' copies."""
    layout = WeightEncoder(tensors, version, max_chunk_bytes, dtypes, metadata, published_unix_s, epoch, alpha)
    out = []
    plan = layout.plan
    for i, pieces in enumerate(plan):
        chunk = weights_pb2.WeightChunk(version=version, epoch=epoch, published_unix_s=layout.published,
                                        last=i == len(plan) - 1)
        if i == 0:
            chunk.alpha = alpha
            chunk.metadata.update(layout.metadata)
        for name, shape, offset, data, dtype in pieces:
            piece = chunk.slices.add(name=name, shape=list(shape), offset=offset)
            piece.data.CopyFrom(encode_tensor(data, dtype))
        out.append(chunk)
    return out


class WeightEncoder:
    """A version laid out into chunks (checked at once: a bad dtype raises here), encoded one chunk
    at a time by `chunk(i)` (bytes written by mamql.wire: each parameter's bytes copied once), so a
    publisher can send the first chunks while it encodes the rest."""

    def __init__(self, tensors: Mapping[str, np.ndarray], version: int, max_chunk_bytes: int = 4 << 20,
                 dtypes: Mapping[str, str] | None = None, metadata: Mapping[str, str] | None = None,
                 published_unix_s: float | None = None, epoch: int = 0, alpha: float = 0.0):
        if version < 1:
            raise ValueError("weight versions start at 1")
        _check_alpha(alpha)
        self.version, self.epoch, self.alpha, self.metadata = version, epoch, alpha, dict(metadata or {})
        self.published = time.time() if published_unix_s is None else published_unix_s
        self.plan = _plan(tensors, max_chunk_bytes, dtypes)

    def __len__(self) -> int:
        return len(self.plan)

    def chunk(self, i: int) -> bytes:
        first = i == 0
        return wire.encode_chunk(self.version, self.plan[i], last=i == len(self.plan) - 1,
                                 published_unix_s=self.published, metadata=self.metadata if first else None,
                                 epoch=self.epoch, alpha=self.alpha if first else 0.0)


def encode_weights(
    tensors: Mapping[str, np.ndarray],
    version: int,
    max_chunk_bytes: int = 4 << 20,
    dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    published_unix_s: float | None = None,
    epoch: int = 0,
    alpha: float = 0.0,
) -> list[bytes]:
    """split_weights' chunks as WeightChunk message bytes written by mamql.wire."""
    encoder = WeightEncoder(tensors, version, max_chunk_bytes, dtypes, metadata, published_unix_s, epoch, alpha)
    return [encoder.chunk(i) for i in range(len(encoder))]


class WeightAssembler:
    """Collects the chunks of one version; `add` returns the WeightSet when the version is complete."""

    def __init__(self, max_bytes: int = 1 << 31):
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self._version: int | None = None
        self._epoch = 0
        self._alpha = 0.0
        self._buffers: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, str] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}  # as the parameter's first slice declared it
        self._filled: dict[str, int] = {}
        self._metadata: dict[str, str] = {}
        self._published = 0.0
        self._bytes = 0

    def add(self, chunk: weights_pb2.WeightChunk | wire.WireChunk) -> WeightSet | None:
        """Take the next chunk (a generated message or mamql.wire's parse of one); returns the version
        when this chunk completes it. A parameter that arrives whole in one slice is kept as the
        read-only view of its message (no copy); one split over slices is assembled into a buffer."""
        if self._version is None:
            if chunk.epoch >= 1 << 63:
                raise CodecError(f"epoch {chunk.epoch} does not fit the int64 policy_epoch column")
            _check_alpha(chunk.alpha)
            self._version, self._metadata, self._published = chunk.version, dict(chunk.metadata), chunk.published_unix_s
            self._epoch, self._alpha = chunk.epoch, chunk.alpha
        elif chunk.version != self._version or chunk.epoch != self._epoch:
            mixed = (f"version {chunk.version} arrived inside version {self._version}" if chunk.version != self._version
                     else f"epoch {chunk.epoch} arrived inside epoch {self._epoch}")
            self._reset()
            raise CodecError(f"chunk of {mixed}")
        try:
            for piece in chunk.slices:
                self._add_slice(piece)
        except CodecError:
            self._reset()
            raise
        if not chunk.last:
            return None
        missing = [n for n, buf in self._buffers.items() if self._filled[n] != buf.size]
        result = WeightSet(self._version, self._buffers, self._dtypes, self._metadata, self._published,
                           self._epoch, self._alpha)
        self._reset()
        if missing:
            raise CodecError(f"version {result.version} ended with incomplete parameters: {missing}")
        return result

    def _add_slice(self, piece) -> None:
        if isinstance(piece.data, wire.WireTensor):
            data = piece.data.array(self.max_bytes)
        else:
            data = decode_tensor(piece.data, self.max_bytes)
        if data.ndim != 1:
            raise CodecError(f"parameter {piece.name!r}: slice data must be 1-D")
        shape = tuple(int(d) for d in piece.shape)
        if any(d < 0 for d in shape):
            raise CodecError(f"parameter {piece.name!r}: negative dimension in {shape}")
        if len(shape) > wire.MAX_DIMS:
            raise CodecError(f"parameter {piece.name!r}: too many dimensions ({len(shape)} > {wire.MAX_DIMS})")
        buf = self._buffers.get(piece.name)
        if buf is None:
            size = math.prod(shape)
            self._bytes += size * data.itemsize
            if self._bytes > self.max_bytes:
                raise CodecError(f"weights exceed the {self.max_bytes}-byte limit")
            self._dtypes[piece.name] = piece.data.dtype
            self._shapes[piece.name] = shape
            if piece.offset == 0 and data.size == size:  # the whole parameter: keep the view
                self._buffers[piece.name] = data.reshape(shape)
                self._filled[piece.name] = size
                return
            buf = self._buffers[piece.name] = np.empty(size, dtype=data.dtype)
            self._filled[piece.name] = 0
        elif buf.dtype != data.dtype or self._dtypes[piece.name] != piece.data.dtype:
            raise CodecError(f"parameter {piece.name!r}: slices disagree on dtype")
        elif shape != self._shapes[piece.name]:
            raise CodecError(f"parameter {piece.name!r}: slices disagree on shape "
                             f"({shape} after {self._shapes[piece.name]})")
        if piece.offset != self._filled[piece.name]:
            raise CodecError(
                f"parameter {piece.name!r}: slice at {piece.offset}, expected {self._filled[piece.name]} (in order)"
            )
        end = piece.offset + data.size
        if end > buf.size:
            raise CodecError(f"parameter {piece.name!r}: slice overruns its shape {shape}")
        if data.size:
            buf.reshape(-1)[piece.offset : end] = data
        self._filled[piece.name] = end
        if end == buf.size:
            self._buffers[piece.name] = buf.reshape(shape)


def _check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha >= 0):  # 0 = not given; NaN fails every comparison
        raise CodecError(f"alpha must be a finite temperature > 0 (or 0 = not given), got {alpha}")


def iter_assembled(chunks, assembler: WeightAssembler | None = None) -> Iterator[WeightSet]:
    """Complete versions from a stream of chunks."""
    assembler = assembler or WeightAssembler()
    for chunk in chunks:
        done = assembler.add(chunk)
        if done is not None:
            yield done
