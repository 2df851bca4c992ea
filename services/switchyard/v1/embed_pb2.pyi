from google.protobuf import struct_pb2 as _struct_pb2
from switchyard.v1 import chat_pb2 as _chat_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedInput(_message.Message):
    __slots__ = ("text", "tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, text: _Optional[str] = ..., tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("request_id", "model", "inputs", "dimensions", "user", "identity", "routing", "trace_context", "extra")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    inputs: _containers.RepeatedCompositeFieldContainer[EmbedInput]
    dimensions: int
    user: str
    identity: _chat_pb2.Identity
    routing: _chat_pb2.RoutingContext
    trace_context: _containers.ScalarMap[str, str]
    extra: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[EmbedInput, _Mapping]]] = ..., dimensions: _Optional[int] = ..., user: _Optional[str] = ..., identity: _Optional[_Union[_chat_pb2.Identity, _Mapping]] = ..., routing: _Optional[_Union[_chat_pb2.RoutingContext, _Mapping]] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("started", "vectors", "usage", "error", "usage_estimated", "upstream_model")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    USAGE_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    started: _chat_pb2.Started
    vectors: _containers.RepeatedScalarFieldContainer[bytes]
    usage: _chat_pb2.Usage
    error: _chat_pb2.Error
    usage_estimated: bool
    upstream_model: str
    def __init__(self, started: _Optional[_Union[_chat_pb2.Started, _Mapping]] = ..., vectors: _Optional[_Iterable[bytes]] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[_chat_pb2.Error, _Mapping]] = ..., usage_estimated: _Optional[bool] = ..., upstream_model: _Optional[str] = ...) -> None: ...
