from switchyard.v1 import chat_pb2 as _chat_pb2
from switchyard.v1 import embed_pb2 as _embed_pb2
from switchyard.v1 import session_pb2 as _session_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ("identity", "id")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    identity: _chat_pb2.Identity
    id: str
    def __init__(self, identity: _Optional[_Union[_chat_pb2.Identity, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "owned_by", "kind", "version", "strategy", "description", "model")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    owned_by: str
    kind: str
    version: int
    strategy: str
    description: str
    model: str
    def __init__(self, id: _Optional[str] = ..., owned_by: _Optional[str] = ..., kind: _Optional[str] = ..., version: _Optional[int] = ..., strategy: _Optional[str] = ..., description: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "error")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    error: _chat_pb2.Error
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., error: _Optional[_Union[_chat_pb2.Error, _Mapping]] = ...) -> None: ...
