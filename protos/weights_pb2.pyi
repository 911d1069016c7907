from mamql.protos import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WeightChunk(_message.Message):
    __slots__ = ("version", "slices", "last", "published_unix_s", "metadata", "epoch", "alpha")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    version: int
    slices: _containers.RepeatedCompositeFieldContainer[TensorSlice]
    last: bool
    published_unix_s: float
    metadata: _containers.ScalarMap[str, str]
    epoch: int
    alpha: float
    def __init__(self, version: _Optional[int] = ..., slices: _Optional[_Iterable[_Union[TensorSlice, _Mapping]]] = ..., last: _Optional[bool] = ..., published_unix_s: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ..., epoch: _Optional[int] = ..., alpha: _Optional[float] = ...) -> None: ...

class TensorSlice(_message.Message):
    __slots__ = ("name", "shape", "offset", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: _tensor_pb2.Tensor
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("version", "bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    bytes: int
    def __init__(self, version: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("after_version", "subscriber", "epoch")
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    subscriber: str
    epoch: int
    def __init__(self, after_version: _Optional[int] = ..., subscriber: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class GetLatestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
