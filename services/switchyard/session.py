"""Many calls multiplexed on a few long-lived gRPC streams (session.proto).

A gRPC call costs hundreds of microseconds of CPU across both ends, a
message on an open stream a fraction of that; the hot paths (edge→router,
router→provider) therefore run each request as frames on a session. Each
call keeps what a call gives: its own ordered events, a timeout, and
cancellation that reaches the server's task. Whatever is ready at the same
moment, across calls, travels in one message each way.

Server: ``SessionServicer(handler)`` runs ``handler(request, deadline)``
(an async iterator of event bytes) as one task per call.
Client: ``SessionPool(channel, method).stream(request, timeout)`` yields the
call's event bytes and raises ``TransportError`` if the session breaks.

Calls on a session are invisible to gRPC interceptors, so spans and metrics
per call come from one hook here: a ``CallObserver`` given to
``SessionServicer`` (server side) or ``streamer`` (client side) sees each
call's request, every event and how it ended, for either transport. Without
one the call path has no observer code at all.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import grpc
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from switchyard.grpc_server import identity
from switchyard.v1 import session_pb2 as spb

log = logging.getLogger(__name__)

Handler = Callable[[bytes, float | None], AsyncIterator[bytes]]
_END = object()
_CLOSED = object()
_DRAIN = object()
_DEADLINE = object()


class TransportError(Exception):
    """A call's transport failed (session broke, worker unreachable)."""

    def __init__(self, code: grpc.StatusCode, detail: str = "") -> None:
        super().__init__(f"{code.name}: {detail}" if detail else code.name)
        self.code = code


# ---------------------------------------------------------------- observer --


class Call(Protocol):
    """One observed call. ``request``: the bytes to handle or send (a client
    observer may append trace context to them); ``context``: made current
    while the call runs (a server span), or None."""

    request: bytes
    context: Context | None

    def event(self, raw: bytes) -> None: ...

    def end(self, error: BaseException | None) -> None:
        """``error``: what ended the call early (an exception, a
        cancellation, ``GeneratorExit`` when the caller stopped reading)."""


class CallObserver(Protocol):
    def start(self, request: bytes) -> Call: ...


def observed(handler: Handler, observer: CallObserver | None) -> Handler:
    """``handler`` with every call reported to ``observer`` (itself when None)."""
    if observer is None:
        return handler

    async def run(request: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        call = observer.start(request)
        token = otel_context.attach(call.context) if call.context is not None else None
        error: BaseException | None = None
        try:
            async for raw in handler(call.request, deadline):
                call.event(raw)
                yield raw
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.end(error)
            if token is not None:
                otel_context.detach(token)

    return run


# ------------------------------------------------------------------ server --


class SessionServicer:
    """Serves one session RPC; every call runs as its own task. ``handler``
    is observed by ``observer``; ``self.handler`` (the observed one) serves
    the one-call-per-request transport too."""

    def __init__(self, handler: Handler, on_error: Callable[[BaseException], bytes],
                 observer: CallObserver | None = None) -> None:
        self.handler = observed(handler, observer)
        self.on_error = on_error
        self._outboxes: set[asyncio.Queue[object]] = set()
        self._draining = False

    def drain(self) -> None:
        """Tell every connected client, and any that connects from now on,
        to start no new calls here."""
        self._draining = True
        for out in self._outboxes:
            out.put_nowait(_DRAIN)

    async def serve(self, frames: AsyncIterator[spb.SessionFrames],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        out: asyncio.Queue[object] = asyncio.Queue()
        tasks: dict[int, asyncio.Task[None]] = {}

        async def run_call(call_id: int, request: bytes, deadline: float | None) -> None:
            try:
                # Like a gRPC deadline: the call's work stops when it passes.
                async with asyncio.timeout(None if deadline is None else max(deadline - time.monotonic(), 0)):
                    async for event in self.handler(request, deadline):
                        out.put_nowait((call_id, event))
            except (asyncio.CancelledError, TimeoutError):
                pass
            except Exception as exc:  # one call's bug must not end the session
                log.exception("call failed")
                out.put_nowait((call_id, self.on_error(exc)))
            finally:
                tasks.pop(call_id, None)
                out.put_nowait((call_id, _END))

        async def read() -> None:
            try:
                async for batch in frames:
                    now = time.monotonic()
                    for frame in batch.frames:
                        if frame.HasField("request"):
                            deadline = now + frame.timeout_ms / 1000 if frame.timeout_ms else None
                            tasks[frame.id] = asyncio.create_task(run_call(frame.id, frame.request, deadline))
                        elif frame.cancel and (task := tasks.get(frame.id)) is not None:
                            task.cancel()
            finally:
                out.put_nowait(_CLOSED)

        self._outboxes.add(out)
        if self._draining:  # a session opened while this server drains is told at once
            out.put_nowait(_DRAIN)
        reader = asyncio.create_task(read())
        closed = False
        try:
            while True:
                items = [await out.get()]
                while not out.empty():
                    items.append(out.get_nowait())
                replies = spb.SessionReplies()
                by_id: dict[int, spb.SessionReply] = {}
                for item in items:
                    if item is _CLOSED:
                        closed = True
                    elif item is _DRAIN:
                        replies.drain = True
                    else:
                        call_id, payload = item  # type: ignore[misc]
                        reply = by_id.get(call_id)
                        if reply is None:
                            reply = by_id[call_id] = replies.replies.add(id=call_id)
                        if payload is _END:
                            reply.end = True
                        else:
                            reply.events.append(payload)
                if replies.replies or replies.drain:
                    yield replies.SerializeToString()
                if closed and not tasks:
                    return
        finally:
            self._outboxes.discard(out)
            reader.cancel()
            for task in list(tasks.values()):
                task.cancel()
            await asyncio.gather(reader, *tasks.values(), return_exceptions=True)

    def method_handler(self) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(self.serve, request_deserializer=spb.SessionFrames.FromString,
                                                     response_serializer=identity)


# ------------------------------------------------------------------ client --


class _Session:
    def __init__(self, method: grpc.aio.StreamStreamMultiCallable) -> None:
        self.call = method()
        self.pending: dict[int, asyncio.Queue[object]] = {}
        self.ids = itertools.count(1)
        self.outbox: list[spb.SessionFrame] = []
        self.wakeup = asyncio.Event()
        self.accepting = True
        self.dead: TransportError | None = None
        self.opened = self.last_used = time.monotonic()
        self._writer = asyncio.create_task(self._write())
        self._reader = asyncio.create_task(self._read())

    def start(self, request: bytes, timeout: float | None) -> tuple[int, asyncio.Queue[object]]:
        call_id = next(self.ids)
        queue: asyncio.Queue[object] = asyncio.Queue()
        self.pending[call_id] = queue
        frame = spb.SessionFrame(id=call_id, request=request)
        if timeout is not None:
            frame.timeout_ms = max(1, int(timeout * 1000))
        self._send(frame)
        self.last_used = time.monotonic()
        return call_id, queue

    def finish(self, call_id: int, *, cancel: bool) -> None:
        if self.pending.pop(call_id, None) is not None and cancel and self.dead is None:
            self._send(spb.SessionFrame(id=call_id, cancel=True))
        if not self.accepting and not self.pending:
            self.close()

    def _send(self, frame: spb.SessionFrame) -> None:
        self.outbox.append(frame)
        self.wakeup.set()

    async def _write(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                frames, self.outbox = self.outbox, []
                await self.call.write(spb.SessionFrames(frames=frames).SerializeToString())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any write failure kills the session
            self._fail(TransportError(grpc.StatusCode.UNAVAILABLE, f"session write failed: {exc}"))

    async def _read(self) -> None:
        error = TransportError(grpc.StatusCode.UNAVAILABLE, "session ended")
        try:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    break
                replies = spb.SessionReplies.FromString(message)
                if replies.drain:
                    self.accepting = False
                for reply in replies.replies:
                    queue = self.pending.get(reply.id)
                    if queue is None:
                        continue  # the caller already gave up on this call
                    for event in reply.events:
                        queue.put_nowait(event)
                    if reply.end:
                        queue.put_nowait(_END)
                if not self.accepting and not self.pending:
                    self.close()
        except grpc.aio.AioRpcError as exc:
            error = TransportError(exc.code(), exc.details() or "")
        finally:
            self._fail(error)

    def _fail(self, error: TransportError) -> None:
        if self.dead is not None:
            return
        self.dead = error
        self.accepting = False
        for queue in self.pending.values():
            queue.put_nowait(error)
        self._writer.cancel()
        self.call.cancel()

    def close(self) -> None:
        """Start no new calls; end the stream once the last call is over."""
        self.accepting = False
        if not self.pending:
            self._fail(TransportError(grpc.StatusCode.CANCELLED, "session closed"))


class SessionPool:
    """Up to ``size`` sessions on one channel; each call goes to the live
    session with the fewest calls in flight. Sessions idle longer than
    ``max_idle_s`` or older than ``max_age_s`` are retired (finish their calls,
    then close) so that a proxy's idle or duration limit never cuts one that
    is in use."""

    def __init__(self, channel: grpc.aio.Channel, method: str, *, size: int = 2, max_idle_s: float = 60.0,
                 max_age_s: float = 600.0) -> None:
        self._method = channel.stream_stream(method, request_serializer=identity, response_deserializer=identity)
        self.size = size
        self.max_idle_s = max_idle_s
        self.max_age_s = max_age_s
        self.sessions: list[_Session] = []

    def _pick(self) -> _Session:
        now = time.monotonic()
        live = []
        for session in self.sessions:
            if session.accepting and (now - session.last_used > self.max_idle_s or
                                      now - session.opened > self.max_age_s):
                session.accepting = False
                if not session.pending:
                    session.close()
            if session.accepting:
                live.append(session)
        self.sessions = [s for s in self.sessions if s.accepting or s.pending]
        if len(live) < self.size:
            session = _Session(self._method)
            self.sessions.append(session)
            return session
        return min(live, key=lambda s: len(s.pending))

    async def stream(self, request: bytes, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        """The call's serialized events, in order; ``TransportError`` with
        DEADLINE_EXCEEDED once ``timeout_s`` has passed."""
        session = self._pick()
        call_id, queue = session.start(request, timeout_s)
        # One timer per call (not one per wait): at the deadline it queues
        # DEADLINE_EXCEEDED behind whatever events already arrived.
        timer = None if timeout_s is None else asyncio.get_running_loop().call_later(
            timeout_s, queue.put_nowait, _DEADLINE)
        ended = False
        try:
            while True:
                item = await queue.get()
                if item is _DEADLINE:
                    raise TransportError(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed")
                if item is _END:
                    ended = True
                    return
                if isinstance(item, TransportError):
                    ended = True
                    raise item
                yield item  # type: ignore[misc]
        finally:
            if timer is not None:
                timer.cancel()
            session.finish(call_id, cancel=not ended)

    def close(self) -> None:
        for session in self.sessions:
            session._fail(TransportError(grpc.StatusCode.CANCELLED, "pool closed"))
        self.sessions.clear()


# ----------------------------------------------------------- transports --

Streamer = Callable[[bytes, float | None], AsyncIterator[bytes]]


def call_streamer(channel: grpc.aio.Channel, method: str) -> Streamer:
    """One gRPC server-streaming call per request, with the same interface
    as ``SessionPool.stream`` (events as bytes, ``TransportError``)."""
    multicallable = channel.unary_stream(method, request_serializer=identity, response_deserializer=identity)

    async def stream(request: bytes, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        call = multicallable(request, timeout=timeout_s)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise TransportError(exc.code(), exc.details() or "") from None
        finally:
            call.cancel()

    return stream


def streamer(channel: grpc.aio.Channel, service: str, rpc: str, *, transport: str, sessions: int,
             observer: CallObserver | None = None) -> Streamer:
    """The hot-path transport: ``session`` (multiplexed, the default) or
    ``call`` (one gRPC call per request), each call seen by ``observer``."""
    if transport == "call":
        return observed(call_streamer(channel, f"/{service}/{rpc}"), observer)
    if transport != "session":
        raise ValueError(f"unknown transport {transport!r}: use session or call")
    return observed(SessionPool(channel, f"/{service}/{rpc}Session", size=sessions).stream, observer)
