from mamql.protos import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InsertRequest(_message.Message):
    __slots__ = ("table", "batch", "sequence", "timeout_seconds")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    table: str
    batch: _tensor_pb2.TransitionBatch
    sequence: int
    timeout_seconds: float
    def __init__(self, table: _Optional[str] = ..., batch: _Optional[_Union[_tensor_pb2.TransitionBatch, _Mapping]] = ..., sequence: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class InsertAck(_message.Message):
    __slots__ = ("sequence", "inserted", "table_size")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    TABLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    inserted: int
    table_size: int
    def __init__(self, sequence: _Optional[int] = ..., inserted: _Optional[int] = ..., table_size: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("table", "batch_size", "num_batches", "timeout_seconds")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    table: str
    batch_size: int
    num_batches: int
    timeout_seconds: float
    def __init__(self, table: _Optional[str] = ..., batch_size: _Optional[int] = ..., num_batches: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("batch", "keys")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    batch: _tensor_pb2.TransitionBatch
    keys: _tensor_pb2.Tensor
    def __init__(self, batch: _Optional[_Union[_tensor_pb2.TransitionBatch, _Mapping]] = ..., keys: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: str
    def __init__(self, table: _Optional[str] = ...) -> None: ...

class FieldSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class TableStatus(_message.Message):
    __slots__ = ("name", "size", "capacity", "bytes", "inserted", "sampled", "schema", "sampler")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    capacity: int
    bytes: int
    inserted: int
    sampled: int
    schema: _containers.RepeatedCompositeFieldContainer[FieldSpec]
    sampler: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., capacity: _Optional[int] = ..., bytes: _Optional[int] = ..., inserted: _Optional[int] = ..., sampled: _Optional[int] = ..., schema: _Optional[_Iterable[_Union[FieldSpec, _Mapping]]] = ..., sampler: _Optional[str] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableStatus]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableStatus, _Mapping]]] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ("path", "transitions")
    PATH_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    path: str
    transitions: int
    def __init__(self, path: _Optional[str] = ..., transitions: _Optional[int] = ...) -> None: ...
