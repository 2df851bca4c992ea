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

class PurgeCacheRequest(_message.Message):
    __slots__ = ("tenant", "all")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    all: bool
    def __init__(self, tenant: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class PurgeCacheResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class BudgetStatusRequest(_message.Message):
    __slots__ = ("identity", "end_user")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    END_USER_FIELD_NUMBER: _ClassVar[int]
    identity: _chat_pb2.Identity
    end_user: str
    def __init__(self, identity: _Optional[_Union[_chat_pb2.Identity, _Mapping]] = ..., end_user: _Optional[str] = ...) -> None: ...

class BudgetState(_message.Message):
    __slots__ = ("scope", "period", "window_s", "usd", "spent_usd", "reserved_usd", "hard", "end_user")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    END_USER_FIELD_NUMBER: _ClassVar[int]
    scope: str
    period: str
    window_s: int
    usd: float
    spent_usd: float
    reserved_usd: float
    hard: bool
    end_user: str
    def __init__(self, scope: _Optional[str] = ..., period: _Optional[str] = ..., window_s: _Optional[int] = ..., usd: _Optional[float] = ..., spent_usd: _Optional[float] = ..., reserved_usd: _Optional[float] = ..., hard: _Optional[bool] = ..., end_user: _Optional[str] = ...) -> None: ...

class BudgetStatusResponse(_message.Message):
    __slots__ = ("budgets",)
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetState]
    def __init__(self, budgets: _Optional[_Iterable[_Union[BudgetState, _Mapping]]] = ...) -> None: ...

class OrphanSettlement(_message.Message):
    __slots__ = ("request", "cost_usd")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    request: _chat_pb2.ChatRequest
    cost_usd: float
    def __init__(self, request: _Optional[_Union[_chat_pb2.ChatRequest, _Mapping]] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class OrphanSettled(_message.Message):
    __slots__ = ("budgets",)
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    budgets: int
    def __init__(self, budgets: _Optional[int] = ...) -> None: ...
