"""Router servicer: thin glue between the wire and the request pipeline.

Chat and ChatSession use pass-through (de)serialisers: the request bytes are
parsed once for routing and re-embedded unchanged in each GenerateRequest,
and provider event bytes are relayed unchanged to the edge.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc

from router.listing import get_model, list_models
from router.pipeline import Pipeline
from router.routes import RoutingTable
from router.unary import UnaryRouter
from switchyard.grpc_server import identity
from switchyard.session import SessionServicer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import router_pb2 as rpb

SERVICE = "switchyard.v1.Router"
CONFIG_HEALTH = "switchyard.v1.Router.config"  # SERVING while the replica serves the published config


def internal_error(exc: BaseException) -> bytes:
    return pb.ChatEvent(error=pb.Error(status=500, type="api_error", code="internal_error",
                                       message="the router failed to handle the request")).SerializeToString()


class RouterServicer:
    def __init__(self, pipeline: Pipeline, table: Callable[[], RoutingTable], unary: UnaryRouter) -> None:
        self.pipeline = pipeline
        self.table = table
        self.unary = unary
        self.session = SessionServicer(pipeline.stream, on_error=internal_error)

    async def chat(self, request_bytes: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for raw in self.pipeline.stream(request_bytes, _deadline(context)):
            yield raw

    async def list_models(self, request: rpb.ListModelsRequest,
                          context: grpc.aio.ServicerContext) -> rpb.ListModelsResponse:
        if request.id:
            return get_model(self.table(), request.identity, request.id)
        return list_models(self.table(), request.identity)

    async def embed(self, request: epb.EmbedRequest, context: grpc.aio.ServicerContext) -> epb.EmbedResponse:
        return await self.unary.embed(request, _deadline(context))

    async def count_tokens(self, request: pb.ChatRequest,
                           context: grpc.aio.ServicerContext) -> pb.CountTokensResponse:
        return await self.unary.count_tokens(request, _deadline(context))

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            "Chat": grpc.unary_stream_rpc_method_handler(self.chat, request_deserializer=identity,
                                                         response_serializer=identity),
            "ChatSession": self.session.method_handler(),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self.list_models, request_deserializer=rpb.ListModelsRequest.FromString,
                response_serializer=rpb.ListModelsResponse.SerializeToString),
            "Embed": grpc.unary_unary_rpc_method_handler(
                self.embed, request_deserializer=epb.EmbedRequest.FromString,
                response_serializer=epb.EmbedResponse.SerializeToString),
            "CountTokens": grpc.unary_unary_rpc_method_handler(
                self.count_tokens, request_deserializer=pb.ChatRequest.FromString,
                response_serializer=pb.CountTokensResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None
