from switchyard.v1 import chat_pb2 as _chat_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageEvent(_message.Message):
    __slots__ = ("request_id", "timestamp_ms", "key_id", "tenant", "model_requested", "model", "provider", "route", "route_version", "usage", "latency_ms", "ttft_ms", "status", "error_type", "http_status", "tags", "end_user", "session_id", "stream", "cache_hit", "attempts", "route_arm", "cache_status", "usage_estimated", "cost_saved_usd", "endpoint")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    END_USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_ARM_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    COST_SAVED_USD_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    timestamp_ms: int
    key_id: str
    tenant: str
    model_requested: str
    model: str
    provider: str
    route: str
    route_version: int
    usage: _chat_pb2.Usage
    latency_ms: float
    ttft_ms: float
    status: str
    error_type: str
    http_status: int
    tags: _containers.ScalarMap[str, str]
    end_user: str
    session_id: str
    stream: bool
    cache_hit: bool
    attempts: _containers.RepeatedCompositeFieldContainer[_chat_pb2.AttemptRecord]
    route_arm: str
    cache_status: str
    usage_estimated: bool
    cost_saved_usd: float
    endpoint: str
    def __init__(self, request_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., model_requested: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., route: _Optional[str] = ..., route_version: _Optional[int] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., status: _Optional[str] = ..., error_type: _Optional[str] = ..., http_status: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ..., end_user: _Optional[str] = ..., session_id: _Optional[str] = ..., stream: _Optional[bool] = ..., cache_hit: _Optional[bool] = ..., attempts: _Optional[_Iterable[_Union[_chat_pb2.AttemptRecord, _Mapping]]] = ..., route_arm: _Optional[str] = ..., cache_status: _Optional[str] = ..., usage_estimated: _Optional[bool] = ..., cost_saved_usd: _Optional[float] = ..., endpoint: _Optional[str] = ...) -> None: ...
