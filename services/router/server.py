"""Router servicer: thin glue between the wire and resolve/execute/usage.

Chat is registered with pass-through (de)serialisers: the request bytes are
parsed once for routing and re-embedded unchanged in each GenerateRequest,
and provider event bytes are relayed unchanged to the edge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc

from router.execute import Outcome, stream_plan
from router.resolve import Resolver
from router.usage import UsageSink, build_usage_event
from switchyard.errors import SwitchyardError
from switchyard.grpc_server import CHANNEL_OPTIONS, identity
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb
from switchyard.v1 import router_pb2 as rpb

log = logging.getLogger(__name__)
SERVICE = "switchyard.v1.Router"


class RouterServicer:
    def __init__(self, resolver: Resolver, provider_target: str, usage: UsageSink) -> None:
        self.resolver = resolver
        self.usage = usage
        self._channel = grpc.aio.insecure_channel(provider_target, options=CHANNEL_OPTIONS)
        self._generate = self._channel.unary_stream(
            "/switchyard.v1.Provider/Generate",
            request_serializer=identity,
            response_deserializer=identity,
        )

    async def chat(self, request_bytes: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        received = time.monotonic()
        request = pb.ChatRequest.FromString(request_bytes)
        outcome = Outcome()
        try:
            plan = self.resolver.plan(request.model, list(request.routing.fallbacks))
        except SwitchyardError as exc:
            outcome.error = exc.to_proto()
            yield pb.ChatEvent(error=outcome.error).SerializeToString()
            return
        remaining = context.time_remaining()
        deadline = received + remaining if remaining is not None else None
        try:
            async for raw in stream_plan(plan, request.request_id, request_bytes, self._generate, deadline, outcome):
                yield raw
            if request.routing.trace:
                trace = pb.DecisionTrace(resolved_by=plan.resolved_by, attempts=outcome.attempts)
                yield pb.ChatEvent(trace=trace).SerializeToString()
        finally:
            self.usage.record(build_usage_event(request, plan, outcome, received))

    async def list_models(self, request: rpb.ListModelsRequest,
                          context: grpc.aio.ServicerContext) -> rpb.ListModelsResponse:
        return self.resolver.list_models()

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            "Chat": grpc.unary_stream_rpc_method_handler(self.chat, request_deserializer=identity,
                                                         response_serializer=identity),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self.list_models, request_deserializer=rpb.ListModelsRequest.FromString,
                response_serializer=rpb.ListModelsResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]

    async def close(self) -> None:
        await self._channel.close()


__all__ = ["RouterServicer", "ppb"]
