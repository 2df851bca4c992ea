"""What a client may see of an upstream's error text, and how timeouts and
broken answers are worded."""

from __future__ import annotations

import aiohttp
import pytest

from providers.base import UpstreamLimitError, UpstreamProtocolError, UpstreamTruncatedError
from providers.errors import MAX_MESSAGE_CHARS, client_message, failure_error, timeout_error
from switchyard.config import Timeouts

USEFUL = [
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens.",
    "temperature: range: 0..1",
    "models/gemini-2.5-flash is not found for API version v1beta, or is not supported for generateContent.",
    "Invalid 'messages[0].content': string too long. Expected a string with maximum length 10485760.",
    "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000.",
]


@pytest.mark.parametrize("text", USEFUL)
def test_useful_messages_pass_unchanged(text: str) -> None:
    assert client_message(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", ""),
    ("<html><head><title>Oops</title>", ""),
    ('model crashed Traceback (most recent call last):\n  File "/srv/app.py", line 3', "model crashed"),
    ("error\n    at com.example.Server.handle(Server.java:42)", "error"),
    ("connect to http://inference-7.corp.internal:8000/v1/chat failed", "connect to [url] failed"),
    ("backend gpu-3.svc.cluster.local refused", "backend [host] refused"),
    ("upstream 10.12.3.4:8000 reset", "upstream [address] reset"),
    ("dial tcp vllm-backend:8000: connection refused", "dial tcp [host]: connection refused"),
    ("cannot open /var/lib/models/llama/config.json", "cannot open [path]"),
    ("Incorrect API key provided: sk-proj-ab12CD34ef56********wxyz.", "Incorrect API key provided: [redacted]."),
    ("  many\n\n  lines\there  ", "many lines here"),
])
def test_leaks_are_removed(text: str, expected: str) -> None:
    assert client_message(text) == expected


def test_own_key_is_redacted_and_length_capped() -> None:
    assert client_message("bad key k3y-s3cr3t-value", ("k3y-s3cr3t-value", None)) == "bad key [redacted]"
    long = client_message("word " * 200)
    assert len(long) == MAX_MESSAGE_CHARS and long.endswith("…")


def test_each_timeout_names_itself() -> None:
    timeouts = Timeouts(connect_s=2, first_token_s=30, between_chunks_s=15, total_s=120)
    words = {which: timeout_error(which, "openai", timeouts).message
             for which in ("connect", "first_token", "between_chunks", "total", "deadline", "slot")}
    assert "2 s connect timeout" in words["connect"]
    assert "30 s first-token timeout" in words["first_token"]
    assert "stalled" in words["between_chunks"] and "15 s between-chunks timeout" in words["between_chunks"]
    assert "120 s total timeout" in words["total"] and "stalled" not in words["total"]
    assert "deadline" in words["deadline"] and "came free" in words["slot"]
    assert timeout_error("deadline", "openai", timeouts).code == "deadline_exceeded"
    assert timeout_error("total", "openai", timeouts).code == "upstream_timeout"


@pytest.mark.parametrize(("exc", "code", "words"), [
    (UpstreamLimitError("upstream_line_too_long", "an upstream SSE line exceeds 4 bytes"), "upstream_line_too_long",
     "exceeds 4 bytes"),
    (UpstreamTruncatedError("openai ended its stream without [DONE]"), "upstream_stream_truncated", "[DONE]"),
    (aiohttp.ClientPayloadError("Response payload is not completed: <TransferEncodingError: 400, message='Not "
                                "enough data to satisfy transfer length header.'>"),
     "upstream_stream_truncated", "closed before the answer was complete"),
    (aiohttp.ServerDisconnectedError(), "upstream_stream_truncated", "closed before the answer was complete"),
    (aiohttp.ClientPayloadError("Can not decode content-encoding: gzip"), "upstream_protocol_error",
     "cannot be decompressed"),
    (UpstreamProtocolError("a chunk is not JSON"), "upstream_protocol_error", "malformed answer: a chunk is not JSON"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "upstream_protocol_error", "not UTF-8"),
])
def test_broken_answers_in_the_clients_terms(exc: Exception, code: str, words: str) -> None:
    before, after = failure_error(exc, "openai", False), failure_error(exc, "openai", True)
    assert (before.status, before.type, before.code, before.retryable, after.retryable) == (
        502, "api_error", code, True, False)
    assert words in before.message
    for internal in ("TransferEncodingError", "aiohttp", "message='", "Error:"):
        assert internal not in before.message
