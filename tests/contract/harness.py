"""Drives one translator against the simulator over real HTTP, the way a
provider worker does, but without timeouts or pooling (those are tested in
the worker's own tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp

from providers.base import Translator, UpstreamProtocolError, UpstreamStreamError
from providers.sse_decode import stream_sse
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb


@dataclass
class AttemptResult:
    """What one attempt produced: events, or an error (mapped or in-band)."""

    events: list[ppb.GenerateEvent] = field(default_factory=list)
    error: pb.Error | None = None
    protocol_error: str | None = None
    status: int = 0

    @property
    def chunks(self) -> list[pb.Chunk]:
        return [e.chunk for e in self.events if e.HasField("chunk")]

    @property
    def usage(self) -> pb.Usage | None:
        usages = [e.usage for e in self.events if e.HasField("usage")]
        return usages[-1] if usages else None

    def text(self, choice: int = 0) -> str:
        return "".join(d.content for c in self.chunks for d in c.choices if d.index == choice)

    def reasoning(self, choice: int = 0) -> str:
        return "".join(d.reasoning for c in self.chunks for d in c.choices if d.index == choice)

    def finish_reason(self, choice: int = 0) -> str:
        reasons = [d.finish_reason for c in self.chunks for d in c.choices if d.index == choice and d.finish_reason]
        return reasons[-1] if reasons else ""

    def tool_calls(self, choice: int = 0) -> list[dict]:
        """Tool calls accumulated from deltas the way the openai SDK does."""
        calls: dict[int, dict] = {}
        for c in self.chunks:
            for d in c.choices:
                if d.index != choice:
                    continue
                for t in d.tool_calls:
                    call = calls.setdefault(t.index, {"id": "", "name": "", "arguments": "", "signature": ""})
                    call["id"] = call["id"] or t.id
                    call["name"] = call["name"] or t.name
                    call["arguments"] += t.arguments
                    call["signature"] = call["signature"] or t.signature
        return [calls[i] for i in sorted(calls)]


async def run_attempt(session: aiohttp.ClientSession, translator: Translator, request: pb.ChatRequest,
                      model: str, *, stream: bool) -> AttemptResult:
    upstream = translator.build_request(request, model, stream=stream)
    result = AttemptResult()
    async with session.request(upstream.method, upstream.url, headers=upstream.headers,
                               data=upstream.body) as response:
        result.status = response.status
        if response.status >= 300:
            result.error = translator.map_error(response.status, await response.read(), response.headers)
            return result
        if not stream:
            result.events.extend(translator.parse_response(await response.read(), model))
            return result
        try:
            async for event in translator.stream_events(stream_sse(response.content.iter_any()), model):
                result.events.append(event)
        except UpstreamStreamError as exc:
            result.error = exc.error
        except (UpstreamProtocolError, aiohttp.ClientPayloadError) as exc:
            result.protocol_error = str(exc) or type(exc).__name__
    return result
