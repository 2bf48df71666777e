from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("gatewayId", "stream_name", "extra_args")
    GATEWAYID_FIELD_NUMBER: _ClassVar[int]
    STREAM_NAME_FIELD_NUMBER: _ClassVar[int]
    EXTRA_ARGS_FIELD_NUMBER: _ClassVar[int]
    gatewayId: str
    stream_name: str
    extra_args: _any_pb2.Any
    def __init__(self, gatewayId: _Optional[str] = ..., stream_name: _Optional[str] = ..., extra_args: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class DataUpdate(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class DataUpdateBatch(_message.Message):
    __slots__ = ("updates", "resync")
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[DataUpdate]
    resync: bool
    def __init__(self, updates: _Optional[_Iterable[_Union[DataUpdate, _Mapping]]] = ..., resync: _Optional[bool] = ...) -> None: ...
