"""Router servicer: thin glue between the wire and the request pipeline.

Chat and ChatSession use pass-through (de)serialisers: the request bytes are
parsed once for routing and re-embedded unchanged in each GenerateRequest,
and provider event bytes are relayed unchanged to the edge.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc

from router.cache_store import CachePurgeError
from router.governance import Governor
from router.ledger import StoreUnavailableError
from router.listing import get_model, list_models
from router.pipeline import Pipeline
from router.routes import RoutingTable
from router.unary import UnaryRouter
from switchyard.grpc_server import identity, unary
from switchyard.session import CallObserver, SessionServicer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import router_pb2 as rpb

SERVICE = "switchyard.v1.Router"
CONFIG_HEALTH = "switchyard.v1.Router.config"  # SERVING while the replica serves the published config


def internal_error(exc: BaseException) -> bytes:
    return pb.ChatEvent(error=pb.Error(status=500, type="api_error", code="internal_error",
                                       message="the router failed to handle the request")).SerializeToString()


class RouterServicer:
    def __init__(self, pipeline: Pipeline, table: Callable[[], RoutingTable], unary: UnaryRouter,
                 observer: CallObserver | None = None, governor: Governor | None = None) -> None:
        self.pipeline = pipeline
        self.governor = governor
        self.table = table
        self.unary = unary
        self.session = SessionServicer(pipeline.stream, on_error=internal_error, observer=observer)

    async def chat(self, request_bytes: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for raw in self.session.handler(request_bytes, _deadline(context)):
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

    async def settle_orphan(self, request: rpb.OrphanSettlement,
                            context: grpc.aio.ServicerContext) -> rpb.OrphanSettled:
        if self.governor is None:
            return rpb.OrphanSettled()
        try:
            charged = await self.governor.settle_orphan(request.request, request.cost_usd, self.table())
        except StoreUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"budgets not charged: {exc}")
        return rpb.OrphanSettled(budgets=charged)

    async def budget_status(self, request: rpb.BudgetStatusRequest,
                            context: grpc.aio.ServicerContext) -> rpb.BudgetStatusResponse:
        if self.governor is None:
            return rpb.BudgetStatusResponse()
        try:
            found = await self.governor.budget_status(request.identity, self.table(), request.end_user)
        except StoreUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"budgets not readable: {exc}")
        return rpb.BudgetStatusResponse(budgets=[
            rpb.BudgetState(scope=spec.scope or "key", period=spec.period, window_s=spec.window_s, usd=spec.usd,
                            spent_usd=spent, reserved_usd=reserved, hard=spec.hard,
                            end_user=request.end_user if spec.scope == "end_user" else "")
            for spec, spent, reserved in found])

    async def purge_cache(self, request: rpb.PurgeCacheRequest,
                          context: grpc.aio.ServicerContext) -> rpb.PurgeCacheResponse:
        store = self.pipeline.cache.store
        if store is None:  # no NATS: nothing is cached
            return rpb.PurgeCacheResponse()
        try:
            purged = await store.purge(None if request.all else request.tenant)
        except CachePurgeError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return rpb.PurgeCacheResponse(purged=purged)

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            "Chat": grpc.unary_stream_rpc_method_handler(self.chat, request_deserializer=identity,
                                                         response_serializer=identity),
            "ChatSession": self.session.method_handler(),
            "ListModels": unary(self.list_models, rpb.ListModelsRequest, rpb.ListModelsResponse),
            "Embed": unary(self.embed, epb.EmbedRequest, epb.EmbedResponse),
            "CountTokens": unary(self.count_tokens, pb.ChatRequest, pb.CountTokensResponse),
            "SettleOrphan": unary(self.settle_orphan, rpb.OrphanSettlement, rpb.OrphanSettled),
            "BudgetStatus": unary(self.budget_status, rpb.BudgetStatusRequest, rpb.BudgetStatusResponse),
            "PurgeCache": unary(self.purge_cache, rpb.PurgeCacheRequest, rpb.PurgeCacheResponse),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None
