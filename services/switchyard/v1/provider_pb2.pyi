from switchyard.v1 import chat_pb2 as _chat_pb2
from switchyard.v1 import embed_pb2 as _embed_pb2
from switchyard.v1 import session_pb2 as _session_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Target(_message.Message):
    __slots__ = ("provider", "model")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class AttemptTimeouts(_message.Message):
    __slots__ = ("first_token_s", "between_chunks_s", "total_s")
    FIRST_TOKEN_S_FIELD_NUMBER: _ClassVar[int]
    BETWEEN_CHUNKS_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    first_token_s: float
    between_chunks_s: float
    total_s: float
    def __init__(self, first_token_s: _Optional[float] = ..., between_chunks_s: _Optional[float] = ..., total_s: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request", "target", "attempt", "trace_context", "timeouts")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    request: _chat_pb2.ChatRequest
    target: Target
    attempt: int
    trace_context: _containers.ScalarMap[str, str]
    timeouts: AttemptTimeouts
    def __init__(self, request: _Optional[_Union[_chat_pb2.ChatRequest, _Mapping]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., attempt: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., timeouts: _Optional[_Union[AttemptTimeouts, _Mapping]] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("chunk", "usage", "error", "timing")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    chunk: _chat_pb2.Chunk
    usage: _chat_pb2.Usage
    error: _chat_pb2.Error
    timing: _chat_pb2.Timing
    def __init__(self, chunk: _Optional[_Union[_chat_pb2.Chunk, _Mapping]] = ..., usage: _Optional[_Union[_chat_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[_chat_pb2.Error, _Mapping]] = ..., timing: _Optional[_Union[_chat_pb2.Timing, _Mapping]] = ...) -> None: ...

class EmbedAttempt(_message.Message):
    __slots__ = ("request", "target", "attempt", "trace_context", "timeouts")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    request: _embed_pb2.EmbedRequest
    target: Target
    attempt: int
    trace_context: _containers.ScalarMap[str, str]
    timeouts: AttemptTimeouts
    def __init__(self, request: _Optional[_Union[_embed_pb2.EmbedRequest, _Mapping]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., attempt: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., timeouts: _Optional[_Union[AttemptTimeouts, _Mapping]] = ...) -> None: ...
