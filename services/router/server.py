"""Router servicer: thin glue between the wire and the request pipeline.

Chat and ChatSession use pass-through (de)serialisers: the request bytes are
parsed once for routing and re-embedded unchanged in each GenerateRequest,
and provider event bytes are relayed unchanged to the edge.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc

from router.pipeline import Pipeline
from router.routes import RoutingTable
from switchyard.grpc_server import identity
from switchyard.session import SessionServicer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import router_pb2 as rpb

SERVICE = "switchyard.v1.Router"
CONFIG_HEALTH = "switchyard.v1.Router.config"  # SERVING while the replica serves the published config


def internal_error(exc: BaseException) -> bytes:
    return pb.ChatEvent(error=pb.Error(status=500, type="api_error", code="internal_error",
                                       message="the router failed to handle the request")).SerializeToString()


class RouterServicer:
    def __init__(self, pipeline: Pipeline, table: Callable[[], RoutingTable]) -> None:
        self.pipeline = pipeline
        self.table = table
        self.session = SessionServicer(pipeline.stream, on_error=internal_error)

    async def chat(self, request_bytes: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        async for raw in self.pipeline.stream(request_bytes, deadline):
            yield raw

    async def list_models(self, request: rpb.ListModelsRequest,
                          context: grpc.aio.ServicerContext) -> rpb.ListModelsResponse:
        out = rpb.ListModelsResponse()
        for model_id, owner, kind in self.table().listing():
            out.models.add(id=model_id, owned_by=owner, kind=kind)
        return out

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            "Chat": grpc.unary_stream_rpc_method_handler(self.chat, request_deserializer=identity,
                                                         response_serializer=identity),
            "ChatSession": self.session.method_handler(),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self.list_models, request_deserializer=rpb.ListModelsRequest.FromString,
                response_serializer=rpb.ListModelsResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]
