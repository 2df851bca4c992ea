"""How the upstream named its answer (its response id and the model version
that answered) reaches the timing event sent before the first output, from
each translator's non-streaming and streaming answers, for the attempt
span's gen_ai.response.id and gen_ai.response.model."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator

from providers import timing
from providers.gemini import GeminiTranslator
from providers.server import timing_event
from providers.sse_decode import stream_sse
from switchyard.config import ProviderSpec
from switchyard.v1 import provider_pb2 as ppb
from tests.unit.providers.test_anthropic import FIXTURES as ANTHROPIC
from tests.unit.providers.test_anthropic import make_translator as anthropic
from tests.unit.providers.test_gemini import FIXTURES as GEMINI
from tests.unit.providers.test_openai import FIXTURES as OPENAI
from tests.unit.providers.test_openai import openai


def gemini() -> GeminiTranslator:
    return GeminiTranslator("google", ProviderSpec(type="gemini", base_url="https://generativelanguage.googleapis.com"),
                            "k")


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 41):
        yield data[start:start + 41]


def named_by_response(translator, path) -> tuple[str, str]:
    def run() -> tuple[str, str]:
        clock = timing.start()
        list(translator.parse_response(path.read_bytes(), "m"))
        return clock.response_id, clock.model
    return contextvars.copy_context().run(run)


async def named_by_stream(translator, path) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        clock = timing.start()
        async for _ in translator.stream_events(stream_sse(_pieces(path.read_bytes())), "m"):
            pass
        return clock.response_id, clock.model
    return await asyncio.create_task(run())  # a task runs in a copy of the context


def test_whole_answers_name_themselves() -> None:
    assert named_by_response(openai(), OPENAI / "tool_calls_completion.json") == (
        "chatcmpl-C3xWf4gH5iJ6kL7mN8oP9qR0sT1u", "o4-mini-2025-04-16")
    assert named_by_response(anthropic(), ANTHROPIC / "message_tool_thinking.json") == (
        "msg_01NonStreamFixture", "claude-sonnet-4-5")
    assert named_by_response(gemini(), GEMINI / "response_text.json") == ("r-json-1", "gemini-2.5-flash")


async def test_streams_name_themselves_from_their_first_event_that_does() -> None:
    assert await named_by_stream(openai(), OPENAI / "text_stream.sse") == (
        "chatcmpl-C3xQ7kZ9mJ2pL5vN8rT1wY4bE6hA0", "gpt-4o-mini-2024-07-18")
    assert await named_by_stream(anthropic(), ANTHROPIC / "text_stream.sse") == (
        "msg_01TextFixture", "claude-sonnet-4-5")
    assert await named_by_stream(gemini(), GEMINI / "stream_text.sse") == ("r-text-1", "gemini-2.5-flash")


def test_the_first_name_wins_and_only_strings_count() -> None:
    def run() -> tuple[str, str]:
        clock = timing.start()
        assert not timing.note_answer(None, 7)  # nothing usable: keep asking
        assert timing.note_answer("first", None)
        assert timing.note_answer("second", "m2")  # already named
        return clock.response_id, clock.model
    assert contextvars.copy_context().run(run) == ("first", "")
    assert timing.note_answer("no clock", "m")  # outside an attempt: nothing to note, nothing to ask


def test_the_timing_event_carries_the_names() -> None:
    clock = timing.UpstreamClock()
    clock.response_id, clock.model, clock.sent_at = "resp_1", "gpt-4o-2024-08-06", 1.0
    sent = ppb.GenerateEvent.FromString(timing_event(0.5, clock, 1.25)).timing
    assert (sent.upstream_response_id, sent.upstream_model) == ("resp_1", "gpt-4o-2024-08-06")
    assert (sent.provider_us, sent.upstream_us, sent.provider_total_us) == (500_000, 250_000, 750_000)
