"""serve(): one gRPC aio server with health, reflection and graceful drain.

On SIGTERM the health status flips to NOT_SERVING (so Envoy's active health
check stops sending new streams), in-flight streams get ``grace`` seconds to
finish, then the server stops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from switchyard import readiness
from switchyard.config import ConfigError
from switchyard.shutdown import STOP_CANCEL_S, STOP_CLEANUP_S, exit_if_stuck, stop_signal

log = logging.getLogger(__name__)

# Bodies up to the edge's 8 MiB limit plus protobuf overhead must fit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
)
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
)


def freeze_heap() -> None:
    """Call once a service has started: what exists now (modules, config,
    clients) lives as long as the process, so the collector's full passes
    skip it. Without this a full pass walks every module's objects and stalls
    the event loop for 70-120 ms on the development VM (once every few
    seconds of load), which lands in the p99 of every request waiting."""
    gc.collect()
    gc.freeze()


def identity(data: bytes) -> bytes:
    """(De)serializer that relays bytes untouched."""
    return data


def unary_client(channel: grpc.aio.Channel, method: str, request: Any,
                 response: Any) -> grpc.aio.UnaryUnaryMultiCallable:
    """The client of unary ``method`` ("/package.Service/Method") on ``channel``,
    sending message class ``request`` and receiving ``response``."""
    return channel.unary_unary(method, request_serializer=request.SerializeToString,
                               response_deserializer=response.FromString)


def unary(method: Callable[..., Awaitable[Any]], request: Any, response: Any) -> grpc.RpcMethodHandler:
    """The handler of a unary method taking message class ``request`` and answering ``response``."""
    return grpc.unary_unary_rpc_method_handler(method, request_deserializer=request.FromString,
                                               response_serializer=response.SerializeToString)


async def serve(address: str, register: Callable[[grpc.aio.Server], Iterable[str]], *, grace: float = 30.0,
                on_drain: Callable[[], None] | None = None, on_stop: Callable[[], object] | None = None,
                on_start: Callable[[health.aio.HealthServicer], Coroutine[object, object, None]] | None = None,
                ) -> None:
    """Run until SIGTERM/SIGINT. ``register`` adds servicers and returns their
    full service names (for health and reflection); ``on_start`` runs as a
    task while serving (it may report extra health statuses); ``on_drain``
    runs first at shutdown (sessions tell their clients to go elsewhere)."""
    stop = stop_signal()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME, health.SERVICE_NAME], server)
    if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot bind {address}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await _publish_conditions(health_servicer)
    freeze_heap()
    log.info("serving %s on %s", ",".join(names), address)
    reporter = asyncio.create_task(on_start(health_servicer)) if on_start is not None else None

    await stop.wait()
    if reporter is not None:
        reporter.cancel()
    log.info("draining (grace %.0fs)", grace)
    exit_if_stuck(grace + STOP_CANCEL_S)
    await health_servicer.enter_graceful_shutdown()
    if on_drain is not None:
        on_drain()
    try:
        await asyncio.wait_for(server.stop(grace), grace + STOP_CANCEL_S)
    except TimeoutError:
        log.warning("gRPC server still stopping %.0fs after the grace period; going on", STOP_CANCEL_S)
    log.info("stopped serving")
    if on_stop is not None:
        try:
            async with asyncio.timeout(STOP_CLEANUP_S):
                result = on_stop()
                if asyncio.iscoroutine(result):
                    await result
        except TimeoutError:
            log.error("clean-up took longer than %.0fs; exiting without the rest of it", STOP_CLEANUP_S)
    log.info("stopped")


async def _publish_conditions(health_servicer: health.aio.HealthServicer) -> None:
    """Each readiness condition as its own health service name, kept current."""
    pending: set[asyncio.Task[None]] = set()

    def status(condition: readiness.Condition) -> int:
        return (health_pb2.HealthCheckResponse.NOT_SERVING if condition.degraded
                else health_pb2.HealthCheckResponse.SERVING)

    def changed(condition: readiness.Condition) -> None:
        task = asyncio.ensure_future(health_servicer.set(condition.name, status(condition)))
        pending.add(task)
        task.add_done_callback(pending.discard)

    for condition in readiness.conditions():
        await health_servicer.set(condition.name, status(condition))
        condition.watch(changed)


def run(main: Callable[[], object]) -> None:
    """Run a service's async main, on uvloop unless SWITCHYARD_UVLOOP=0. An
    invalid config (or setting) stops the service with the loader's message
    and exit 2, rather than a half-working start."""
    import uvloop

    from switchyard import settings

    try:
        runner = uvloop.run if settings.load(settings.Common).uvloop else asyncio.run
        runner(main())  # type: ignore[arg-type]
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
