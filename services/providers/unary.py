"""Single-answer upstream calls: embeddings and token counts. The same
transport, per-key pool share, timeouts and error table as a chat attempt,
for one JSON answer.

The whole answer must arrive within the first-token timeout (here it is the
time to the answer) and the total; an embeddings body is read under a cap
sized for the largest batch (2,048 inputs of 3,072 dimensions as JSON).
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from providers.attempt import KEY_BUSY_RETRY_MS, AttemptSpec
from providers.base import UpstreamProtocolError, UpstreamRequest, UpstreamStreamError
from providers.errors import failure_error, timeout_error
from providers.fairness import KeyBusyError
from providers.sanitize import log_upstream_text
from providers.upstream import MAX_ERROR_BODY_BYTES, read_capped
from switchyard import tokens
from switchyard.catalogue import cost_usd
from switchyard.errors import SwitchyardError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb

log = logging.getLogger(__name__)
MAX_EMBED_BODY_BYTES = 192 * 1024 * 1024
MAX_COUNT_BODY_BYTES = 64 * 1024


class CallFailedError(Exception):
    def __init__(self, error: pb.Error) -> None:
        super().__init__(error.message)
        self.error = error


async def embed(spec: AttemptSpec, request: epb.EmbedRequest, deadline: float | None) -> epb.EmbedResponse:
    """The vectors and priced usage, or an ``EmbedResponse`` with ``error``
    (``retryable`` set as for chat attempts)."""
    translator = spec.translator
    try:
        upstream = translator.build_embed_request(request, spec.model)
        body = await _call(spec, upstream, request.identity.key_id, deadline, MAX_EMBED_BODY_BYTES)
        answer = translator.parse_embed_response(body, request)
    except (CallFailedError, UpstreamStreamError) as exc:  # a 200 may carry an error envelope
        return epb.EmbedResponse(error=_failed(exc.error, translator.provider))
    except SwitchyardError as exc:
        return epb.EmbedResponse(error=_failed(exc.to_proto(), translator.provider))
    except (UpstreamProtocolError, ValueError) as exc:
        return epb.EmbedResponse(error=_failed(failure_error(exc, translator.provider, False), translator.provider))
    answer.usage.cost_usd = cost_usd(spec.pricing, answer.usage)
    return epb.EmbedResponse(vectors=answer.vectors, usage=answer.usage, usage_estimated=answer.estimated,
                             upstream_model=answer.model)


async def count_tokens(spec: AttemptSpec, request: pb.ChatRequest, deadline: float | None) -> pb.CountTokensResponse:
    """The upstream's own count where it has a counting API, else the
    estimate metering uses for an upstream that reports no usage
    (``switchyard.tokens``), so the count and an estimated bill agree."""
    translator = spec.translator
    try:
        upstream = translator.build_count_request(request, spec.model)
        if upstream is None:
            return pb.CountTokensResponse(input_tokens=tokens.prompt_tokens(request), estimated=True)
        body = await _call(spec, upstream, request.identity.key_id, deadline, MAX_COUNT_BODY_BYTES)
        return pb.CountTokensResponse(input_tokens=translator.parse_count_response(body))
    except CallFailedError as exc:
        return pb.CountTokensResponse(error=_failed(exc.error, translator.provider))
    except SwitchyardError as exc:
        return pb.CountTokensResponse(error=_failed(exc.to_proto(), translator.provider))
    except (UpstreamProtocolError, ValueError) as exc:
        return pb.CountTokensResponse(error=_failed(failure_error(exc, translator.provider, False),
                                                    translator.provider))


async def _call(spec: AttemptSpec, upstream: UpstreamRequest, key: str, deadline: float | None, cap: int) -> bytes:
    """The body of a 2xx answer; ``CallFailedError`` for anything else."""
    translator = spec.translator
    provider = translator.provider
    timeouts = spec.timeouts
    seconds, which = min((timeouts.first_token_s, "first_token"), (timeouts.total_s, "total"))
    now = time.monotonic()
    if deadline is not None and deadline - now < seconds:
        seconds, which = max(deadline - now, 0.0), "deadline"
    holding = complete = False
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(seconds):
            if spec.gate is not None:
                await spec.gate.acquire(key)
                holding = True
            response = await spec.session.request(upstream.method, upstream.url, headers=upstream.headers,
                                                  data=upstream.body)
            if response.status >= 300:
                body = await read_capped(response, MAX_ERROR_BODY_BYTES, truncate=True)
                complete = True
                log_upstream_text(provider, response.status, body)
                raise CallFailedError(translator.map_error(response.status, body, response.headers))
            body = await read_capped(response, cap)
            complete = True
            return body
    except aiohttp.ConnectionTimeoutError:
        raise CallFailedError(timeout_error("connect", provider, timeouts)) from None
    except TimeoutError:
        raise CallFailedError(timeout_error(which if holding or spec.gate is None else "slot", provider,
                                            timeouts)) from None
    except KeyBusyError as exc:
        raise CallFailedError(pb.Error(status=429, type="rate_limit_error", code="key_concurrency_exceeded",
                                       retryable=True, retry_after_ms=KEY_BUSY_RETRY_MS,
                                       message=f"too many concurrent requests for this key on {provider}: {exc}"),
                              ) from None
    except (UpstreamProtocolError, aiohttp.ClientError) as exc:
        raise CallFailedError(failure_error(exc, provider, False)) from None
    finally:
        if response is not None:
            # An answer left half read: drop the connection rather than reuse it.
            response.release() if complete else response.close()
        if holding:
            spec.gate.release(key)  # type: ignore[union-attr]


def _failed(error: pb.Error, provider: str) -> pb.Error:
    error.provider = error.provider or provider
    log.info("%s: call failed: %s %s", provider, error.status, error.code)
    return error
