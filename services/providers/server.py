"""Provider.Generate: one attempt against one upstream model."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc

from providers.attempt import AttemptFailedError, stream_attempt
from providers.registry import ProviderRegistry
from switchyard.errors import SwitchyardError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb
from switchyard.v1 import provider_pb2_grpc

log = logging.getLogger(__name__)


class ProviderServicer(provider_pb2_grpc.ProviderServicer):
    def __init__(self, registry: ProviderRegistry) -> None:
        self.registry = registry

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: ppb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ppb.GenerateEvent]:
        target = request.target
        spec = self.registry.attempt_spec(target.provider, target.model)
        if spec is None:
            yield ppb.GenerateEvent(error=pb.Error(status=404, type="invalid_request_error", code="model_not_found",
                                                   message=f"provider {target.provider!r} is not configured"))
            return
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        try:
            async for event in stream_attempt(spec, request.request, deadline):
                yield event
        except AttemptFailedError as exc:
            log.info("attempt %s/%s failed: %s %s", target.provider, target.model, exc.error.status, exc.error.code)
            yield ppb.GenerateEvent(error=exc.error)
        except SwitchyardError as exc:
            error = exc.to_proto()
            error.provider = target.provider
            yield ppb.GenerateEvent(error=error)
