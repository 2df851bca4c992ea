"""One attempt against one upstream model: transport, timeouts, the
first-output commit point, n fan-out, emulated JSON-schema validation, cost.

Nothing is yielded until the upstream has produced real output (content,
reasoning, a tool call or a finish), so a caller that sees an error before any
event knows no byte reached the client and may safely try elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from providers import timing
from providers.base import Translator, UpstreamProtocolError, UpstreamStreamError, UpstreamTruncatedError
from providers.errors import failure_error, timeout_error
from providers.fairness import KeyBusyError, KeyGate
from providers.sanitize import log_upstream_text
from providers.sse_decode import stream_sse
from providers.structured import OutputCheck
from providers.upstream import MAX_BODY_BYTES, MAX_ERROR_BODY_BYTES, MAX_STREAM_BYTES, iter_body, read_capped
from switchyard import tokens
from switchyard.catalogue import cost_usd
from switchyard.config import Pricing, Timeouts
from switchyard.metering import add_usage
from switchyard.stream_timer import StreamTimer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

log = logging.getLogger(__name__)
KEY_BUSY_RETRY_MS = 1000  # a key over its share of a pool: try again in about a second


class AttemptFailedError(Exception):
    """The attempt ended in an error; ``error.retryable`` says whether another
    attempt may succeed. ``output_sent`` is True once events were yielded."""

    def __init__(self, error: pb.Error, output_sent: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.output_sent = output_sent


@dataclass(slots=True)
class AttemptSpec:
    translator: Translator
    session: aiohttp.ClientSession
    model: str
    timeouts: Timeouts
    pricing: Pricing | None
    gate: KeyGate | None = None  # the provider's per-key share of its connection pool


def _has_output(event: ppb.GenerateEvent) -> bool:
    for delta in event.chunk.choices:
        if delta.content or delta.reasoning or delta.tool_calls or delta.refusal or delta.finish_reason:
            return True
        if delta.reasoning_blocks:
            return True
    return False


async def stream_attempt(spec: AttemptSpec, request: pb.ChatRequest,
                         deadline: float | None) -> AsyncIterator[ppb.GenerateEvent]:
    """Events of one attempt, committed at the first output. ``deadline`` is a
    ``time.monotonic()`` instant (from the gRPC deadline) or None."""
    caps = spec.translator.capabilities
    n = request.sampling.n or 1
    source = _fan_out(spec, request, n, deadline) if n > 1 and not caps.n else _single(spec, request, deadline)
    priced = False
    produced = 0  # bytes of generated text, for an upstream that reports no usage
    async for event in source:
        if event.HasField("usage"):
            if not (event.usage.prompt_tokens or event.usage.completion_tokens):
                continue  # all zeros is no report: estimated below rather than billed as free
            event.usage.cost_usd = cost_usd(spec.pricing, event.usage)
            priced = True
        elif event.HasField("chunk"):
            produced += tokens.chunk_text_bytes(event.chunk)
        yield event
    if not priced:
        # Usage closes every complete answer. An upstream that reports none
        # (llama.cpp's server) is estimated and marked so, never billed as zero.
        yield ppb.GenerateEvent(usage=estimated_usage(spec.pricing, request, produced))


def estimated_usage(pricing: Pricing | None, request: pb.ChatRequest, produced_bytes: int) -> pb.Usage:
    prompt, completion = tokens.prompt_tokens(request), tokens.bytes_tokens(produced_bytes)
    usage = pb.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     estimated=True)
    usage.cost_usd = cost_usd(pricing, usage)
    return usage


async def _single(spec: AttemptSpec, request: pb.ChatRequest,
                  deadline: float | None) -> AsyncIterator[ppb.GenerateEvent]:
    """One upstream answer: checked when the upstream cannot guarantee its
    response_format, and retried once as ``json_object`` (checked against the
    schema) when the upstream refused ``json_schema``."""
    translator = spec.translator
    validate = translator.needs_output_validation(request)
    try:
        async for event in _validated(spec, request, deadline) if validate else _one_call(spec, request, deadline):
            yield event
        return
    except AttemptFailedError as exc:
        if exc.output_sent or validate or not translator.note_json_schema_refusal(request, exc.error):
            raise
        refusal = exc
    try:
        async for event in _validated(spec, request, deadline):
            yield event
    except AttemptFailedError as exc:
        if exc.output_sent or exc.error.code == "invalid_structured_output":
            raise  # the server took json_object: the refusal stands
        translator.forget_json_schema_refusal()
        raise refusal from None


class _Clock:
    """Which limit bounds the next wait, so that a timeout can name itself."""

    def __init__(self, timeouts: Timeouts, deadline: float | None) -> None:
        self.total_at = time.monotonic() + timeouts.total_s
        self.deadline = deadline

    def budget(self, name: str, seconds: float) -> tuple[float, str]:
        """(seconds left, name of the limit that ends first)."""
        now = time.monotonic()
        left, which = min((seconds, name), (self.total_at - now, "total"))
        if self.deadline is not None and self.deadline - now < left:
            left, which = self.deadline - now, "deadline"
        return max(left, 0.0), which


async def _one_call(spec: AttemptSpec, request: pb.ChatRequest,
                    deadline: float | None) -> AsyncIterator[ppb.GenerateEvent]:
    translator = spec.translator
    provider = translator.provider
    timeouts = spec.timeouts
    stream = request.stream
    upstream = translator.build_request(request, spec.model, stream=stream)
    clock = _Clock(timeouts, deadline)
    response: aiohttp.ClientResponse | None = None
    complete = False
    sent = False
    key = request.identity.key_id
    holding = False
    try:
        seconds, which = clock.budget("first_token", timeouts.first_token_s)
        try:
            async with asyncio.timeout(seconds):
                if spec.gate is not None:
                    await spec.gate.acquire(key)
                    holding = True
                timing.note_sent()
                response = await spec.session.request(upstream.method, upstream.url, headers=upstream.headers,
                                                      data=upstream.body)
                if response.status >= 300:
                    body = await read_capped(response, MAX_ERROR_BODY_BYTES, truncate=True)
                    complete = True
                    log_upstream_text(provider, response.status, body)
                    raise AttemptFailedError(translator.map_error(response.status, body, response.headers))
                if not stream or response.content_type == "application/json":
                    # A JSON answer to a stream request is an error envelope
                    # or a server that ignored ``stream``: read it whole.
                    body = await read_capped(response, MAX_BODY_BYTES)
                    complete = True
        except aiohttp.ConnectionTimeoutError:
            raise AttemptFailedError(timeout_error("connect", provider, timeouts)) from None
        except TimeoutError:
            raise AttemptFailedError(timeout_error(which if holding or spec.gate is None else "slot", provider,
                                                   timeouts)) from None
        except KeyBusyError as exc:
            error = pb.Error(status=429, type="rate_limit_error", code="key_concurrency_exceeded", retryable=True,
                             message=f"too many concurrent requests for this key on {provider}: {exc}",
                             retry_after_ms=KEY_BUSY_RETRY_MS, provider=provider)
            raise AttemptFailedError(error) from None
        if complete:
            for event in _whole_answer(translator, body, spec.model):
                sent = True
                yield event
            return

        body_chunks = iter_body(response, MAX_STREAM_BYTES, paced=True)
        events_iter = translator.stream_events(stream_sse(body_chunks), spec.model)
        pending: list[ppb.GenerateEvent] = []
        tail: list[ppb.GenerateEvent] = []
        choices = _Choices()
        first = True
        which = "first_token"
        timer = StreamTimer()  # one timer for every wait of the stream, not one per event
        try:
            async with timer:
                while True:
                    seconds, which = clock.budget("first_token" if first else "between_chunks",
                                                  timeouts.first_token_s if first else timeouts.between_chunks_s)
                    timer.arm(seconds)
                    try:
                        event = await anext(events_iter)
                    except StopAsyncIteration:
                        break
                    except UpstreamStreamError as exc:
                        exc.error.provider = exc.error.provider or provider
                        raise AttemptFailedError(exc.error, sent) from None
                    finally:
                        timer.disarm()
                    if not event.HasField("chunk"):
                        tail.append(event)  # usage closes a complete answer: only once it is known to be one
                        continue
                    choices.see(event)
                    if first:
                        if not _has_output(event):
                            pending.append(event)
                            continue
                        first = False
                        for held in pending:
                            sent = True
                            yield held
                        pending.clear()
                    sent = True
                    yield event
        except TimeoutError:
            if not timer.expired:
                raise
            raise AttemptFailedError(timeout_error(which, provider, timeouts), sent) from None
        unfinished = choices.unfinished()
        if unfinished is not None:
            raise UpstreamTruncatedError(f"{provider} ended its stream before a finish reason for choice "
                                         f"{unfinished}")
        for held in (*pending, *tail):
            yield held
        complete = True
    except (UpstreamProtocolError, aiohttp.ClientError, ValueError) as exc:
        raise AttemptFailedError(failure_error(exc, provider, sent), sent) from None
    finally:
        if response is not None:
            if complete:
                response.release()
            else:
                # Cancelled or broken mid-way: drop the connection so the
                # upstream stops generating tokens nobody will read.
                response.close()
        if holding:
            spec.gate.release(key)  # type: ignore[union-attr]


def _whole_answer(translator: Translator, body: bytes, model: str) -> list[ppb.GenerateEvent]:
    try:
        return list(translator.parse_response(body, model))
    except UpstreamStreamError as exc:  # a 200 carrying the upstream's error envelope
        exc.error.provider = exc.error.provider or translator.provider
        log_upstream_text(translator.provider, 200, body)
        raise AttemptFailedError(exc.error) from None


class _Choices:
    """Which choices a stream opened and which it finished: a terminator
    before every opened choice has a finish reason is a truncated answer."""

    __slots__ = ("finished", "opened")

    def __init__(self) -> None:
        self.opened: set[int] = set()
        self.finished: set[int] = set()

    def see(self, event: ppb.GenerateEvent) -> None:
        if event.HasField("chunk"):
            for delta in event.chunk.choices:
                self.opened.add(delta.index)
                if delta.finish_reason:
                    self.finished.add(delta.index)

    def unfinished(self) -> int | None:
        """The first choice left without a finish reason (0 when none opened)."""
        if not self.opened:
            return 0
        missing = self.opened - self.finished
        return min(missing) if missing else None


async def _fan_out(spec: AttemptSpec, request: pb.ChatRequest, n: int,
                   deadline: float | None) -> AsyncIterator[ppb.GenerateEvent]:
    """n single-choice calls in parallel, merged into one n-choice answer."""
    single = pb.ChatRequest()
    single.CopyFrom(request)
    single.sampling.n = 1
    queue: asyncio.Queue[tuple[int, ppb.GenerateEvent | BaseException | None]] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for event in _single(spec, single, deadline):
                await queue.put((index, event))
            await queue.put((index, None))
        except BaseException as exc:
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i)) for i in range(n)]
    usage = pb.Usage()
    done = 0
    sent = False
    try:
        while done < n:
            index, item = await queue.get()
            if item is None:
                done += 1
                continue
            if isinstance(item, AttemptFailedError):
                raise AttemptFailedError(item.error, sent or item.output_sent)
            if isinstance(item, BaseException):
                raise item
            if item.HasField("usage"):
                add_usage(usage, item.usage)
                continue
            for delta in item.chunk.choices:
                delta.index = index
            sent = True
            yield item
        yield ppb.GenerateEvent(usage=usage)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _validated(spec: AttemptSpec, request: pb.ChatRequest,
                     deadline: float | None) -> AsyncIterator[ppb.GenerateEvent]:
    """JSON output the upstream cannot guarantee: buffer the answer, check
    it, retry once, and never return invalid output as if valid."""
    check = OutputCheck(request.response_format)
    usage = pb.Usage()
    problem = ""
    for _ in range(2):
        events = [e async for e in _one_call(spec, request, deadline)]
        for event in events:
            if event.HasField("usage"):
                add_usage(usage, event.usage)
        problem = check.problem(e for e in events if e.HasField("chunk"))
        if not problem:
            for event in events:
                if not event.HasField("usage"):
                    yield event
            yield ppb.GenerateEvent(usage=usage)
            return
        log.info("%s output invalid (%s); retrying once", check.kind, problem)
    provider = spec.translator.provider
    raise AttemptFailedError(pb.Error(
        status=502, type="api_error", code="invalid_structured_output", retryable=False, provider=provider,
        message=f"{provider} returned output that is not the response_format's {check.kind} after a retry: "
                f"{problem}"))
