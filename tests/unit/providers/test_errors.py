"""The shared table of upstream error classes (every translator agrees, with
vendor differences only where the vendor differs), retry-after parsing, what
a client may see of an upstream's error text, and how timeouts and broken
answers are worded."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from providers.anthropic import AnthropicTranslator
from providers.base import Translator, UpstreamLimitError, UpstreamProtocolError, UpstreamTruncatedError
from providers.errors import failure_error, timeout_error
from providers.gemini import GeminiTranslator
from providers.openai import OpenAITranslator
from providers.openai_compat import OpenAICompatTranslator
from providers.sanitize import MAX_MESSAGE_CHARS, client_message
from switchyard.config import ProviderSpec, Timeouts

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


def test_retry_after_forms() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from providers.errors import retry_after_ms

    assert retry_after_ms({"Retry-After": "2"}) == 2000
    assert retry_after_ms({"retry-after-ms": "750", "retry-after": "9"}) == 750
    in_5s = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    assert 3000 <= retry_after_ms({"retry-after": in_5s}) <= 5000
    assert retry_after_ms({"retry-after": "soon"}) == 0
    assert retry_after_ms({}) == 0


# ------------------------------------------------ one table for every vendor --

STATUSES = [400, 401, 402, 403, 404, 405, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529]
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


def translators() -> list[Translator]:
    return [cls("p", ProviderSpec(type=cls.type, base_url="http://127.0.0.1:1"), None)
            for cls in (OpenAITranslator, OpenAICompatTranslator, AnthropicTranslator, GeminiTranslator)]


def vendor_body(kind: str, status: int) -> bytes:
    if kind == "anthropic":
        return orjson.dumps({"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"),
                                                        "message": "no"}})
    if kind == "gemini":
        return orjson.dumps({"error": {"code": status, "message": "no"}})
    return orjson.dumps({"error": {"message": "no", "type": None, "param": None, "code": None}})


@pytest.mark.parametrize("status", STATUSES)
def test_every_translator_classifies_a_status_the_same_way(status: int) -> None:
    seen = {t.type: (e.status, e.type, e.code, e.retryable)
            for t in translators() for e in [t.map_error(status, vendor_body(t.type, status), {})]}
    assert len(set(seen.values())) == 1, seen


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failures_are_502_and_retryable_everywhere(status: int) -> None:
    for translator in translators():
        error = translator.map_error(status, vendor_body(translator.type, status), {})
        assert (error.status, error.code, error.retryable, error.param) == (502, "upstream_auth_error", True, "")


def test_vendor_differences() -> None:
    openai, _, anthropic, gemini = translators()
    quota = openai.map_error(429, orjson.dumps({"error": {"message": "You exceeded your current quota", "type":
                                                          "insufficient_quota", "code": "insufficient_quota"}}), {})
    assert (quota.status, quota.code, quota.retryable) == (502, "upstream_billing_error", True)
    overloaded = anthropic.map_error(529, vendor_body("anthropic", 529), {})
    assert (overloaded.status, overloaded.code, overloaded.retryable) == (503, "upstream_overloaded", True)
    key = gemini.map_error(400, orjson.dumps({"error": {"code": 400, "message": "API key not valid.",
                                                        "status": "INVALID_ARGUMENT", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}), {})
    assert (key.status, key.code, key.retryable) == (502, "upstream_auth_error", True)
    exhausted = gemini.map_error(429, orjson.dumps({"error": {"code": 429, "message": "Quota exceeded.",
                                                              "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]}}), {})
    assert (exhausted.status, exhausted.code, exhausted.retry_after_ms) == (429, "rate_limit_exceeded", 3000)
