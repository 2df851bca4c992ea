"""The provider worker's code run inside the router process
(``SWITCHYARD_ROUTER_PROVIDERS_IN_PROCESS=1``): the same servicer, registry
and translators, called directly instead of through the providers' Envoy
sidecar and a gRPC session. The router sees the same three calls it makes
over gRPC (a Generate stream of GenerateEvent bytes, Embed, CountTokens),
so its pipeline, commit rule and observers are unchanged.

What it saves per request: one Envoy pass each way, one gRPC message
receipt per event and a process's event-loop wake-ups (see README,
Performance). What it gives up: provider workers that scale and fail apart
from routers, and the provider keys' separation from the router process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from providers.observer import GenerateCalls
from providers.registry import ProviderRegistry
from providers.server import ProviderServicer
from switchyard.config import Config
from switchyard.session import observed
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb


class InProcessProviders:
    def __init__(self, config: Config, observer: GenerateCalls | None = None) -> None:
        self.registry = ProviderRegistry(config)
        self.servicer = ProviderServicer(self.registry, observer)
        self.generate = observed(self._generate, observer)

    async def _generate(self, request: bytes, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        async for raw in self.servicer.stream_generate(request, _deadline(timeout_s), batched=False):
            yield raw

    # `timeout=`: the keyword of the gRPC multicallables these stand in for.
    async def embed(self, attempt: ppb.EmbedAttempt, timeout: float | None = None) -> epb.EmbedResponse:  # noqa: ASYNC109
        return await self.servicer.embed_until(attempt, _deadline(timeout))

    async def count(self, request: ppb.GenerateRequest,
                    timeout: float | None = None) -> pb.CountTokensResponse:  # noqa: ASYNC109
        return await self.servicer.count_until(request, _deadline(timeout))

    async def close(self) -> None:
        await self.registry.close()


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s
