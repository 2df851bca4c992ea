"""Arithmetic on canonical usage records."""

from __future__ import annotations

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
