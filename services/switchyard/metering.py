"""Arithmetic on canonical usage records, and the estimate of an answer
that ended before its usage arrived."""

from __future__ import annotations

from switchyard import tokens
from switchyard.catalogue import cost_usd, price_for
from switchyard.config import Config
from switchyard.v1 import chat_pb2 as pb


def add_usage(total: pb.Usage, part: pb.Usage) -> None:
    """Add ``part`` into ``total``, every token count and the cost."""
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.total_tokens += part.total_tokens
    total.cached_tokens += part.cached_tokens
    total.cache_write_tokens += part.cache_write_tokens
    total.reasoning_tokens += part.reasoning_tokens
    total.audio_prompt_tokens += part.audio_prompt_tokens
    total.audio_completion_tokens += part.audio_completion_tokens
    total.cost_usd += part.cost_usd
    total.estimated = total.estimated or part.estimated


def estimate_cut_answer(request: pb.ChatRequest, started: pb.Started, chunks: int, chunk_bytes: int,
                        config: Config, delivered_tokens: int | None = None) -> pb.Usage:
    """The usage of an answer cut before its usage event (client gone, deadline,
    a router or provider failure mid-stream, a budget cut): the whole prompt
    and the output relayed, estimated (``switchyard.tokens``), priced, and
    marked ``estimated``. ``delivered_tokens``: a count made from the chunks'
    text, else it is estimated from their wire size."""
    completion = delivered_tokens if delivered_tokens is not None else tokens.relayed_tokens(chunks, chunk_bytes)
    prompt = tokens.prompt_tokens(request)
    usage = pb.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     estimated=True)
    provider = config.providers.get(started.provider)
    if provider is not None:
        spec = provider.model(started.model)
        usage.cost_usd = cost_usd(price_for(provider.type, started.model, spec.pricing if spec else None), usage)
    return usage
