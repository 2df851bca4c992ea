from switchyard.v1 import chat_pb2 as _chat_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheEntry(_message.Message):
    __slots__ = ("tenant", "created_ms", "expires_ms", "started", "events", "cost_usd", "parts", "part_id", "parts_bytes", "write_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    PART_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    created_ms: int
    expires_ms: int
    started: _chat_pb2.Started
    events: _containers.RepeatedScalarFieldContainer[bytes]
    cost_usd: float
    parts: int
    part_id: str
    parts_bytes: int
    write_id: int
    def __init__(self, tenant: _Optional[str] = ..., created_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., started: _Optional[_Union[_chat_pb2.Started, _Mapping]] = ..., events: _Optional[_Iterable[bytes]] = ..., cost_usd: _Optional[float] = ..., parts: _Optional[int] = ..., part_id: _Optional[str] = ..., parts_bytes: _Optional[int] = ..., write_id: _Optional[int] = ...) -> None: ...
