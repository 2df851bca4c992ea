from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionFrame(_message.Message):
    __slots__ = ("id", "request", "cancel", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: bytes
    cancel: bool
    timeout_ms: int
    def __init__(self, id: _Optional[int] = ..., request: _Optional[bytes] = ..., cancel: _Optional[bool] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SessionFrames(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[SessionFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[SessionFrame, _Mapping]]] = ...) -> None: ...

class SessionReply(_message.Message):
    __slots__ = ("id", "events", "end")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    id: int
    events: _containers.RepeatedScalarFieldContainer[bytes]
    end: bool
    def __init__(self, id: _Optional[int] = ..., events: _Optional[_Iterable[bytes]] = ..., end: _Optional[bool] = ...) -> None: ...

class SessionReplies(_message.Message):
    __slots__ = ("replies", "drain")
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[SessionReply]
    drain: bool
    def __init__(self, replies: _Optional[_Iterable[_Union[SessionReply, _Mapping]]] = ..., drain: _Optional[bool] = ...) -> None: ...
