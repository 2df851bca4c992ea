"""Gemini response mapping: candidates, parts, finish reasons and usage as
canonical events."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from providers.base import UpstreamProtocolError
from switchyard.v1 import chat_pb2 as pb

CONTENT_FILTER_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                                    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})


@dataclass(slots=True)
class CandidateState:
    """What has been emitted so far for one candidate of a stream."""

    started: bool = False
    calls: int = 0
    finished: bool = False


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def finish_reason(reason: str, made_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in CONTENT_FILTER_REASONS:
        return "content_filter"
    return "tool_calls" if made_calls else "stop"


def openai_logprobs(result: Mapping[str, Any]) -> str:
    """Gemini ``logprobsResult`` as an OpenAI ``logprobs`` object."""
    def entry(c: Mapping[str, Any]) -> dict[str, Any]:
        token = c.get("token", "")
        return {"token": token, "logprob": c.get("logProbability", 0.0), "bytes": list(token.encode())}

    tops = result.get("topCandidates") or []
    content = []
    for i, chosen in enumerate(result.get("chosenCandidates") or []):
        item = entry(chosen)
        item["top_logprobs"] = [entry(c) for c in (tops[i].get("candidates") or [])] if i < len(tops) else []
        content.append(item)
    return orjson.dumps({"content": content, "refusal": None}).decode()


def candidate_delta(candidate: Mapping[str, Any], index: int, state: CandidateState) -> pb.ChoiceDelta | None:
    """The delta for one candidate's parts in one response (chunk)."""
    delta = pb.ChoiceDelta(index=index)
    content = candidate.get("content") or {}
    texts: list[str] = []
    has_text = False
    for part in content.get("parts") or []:
        signature = part.get("thoughtSignature", "")
        if "functionCall" in part:
            call = part["functionCall"]
            delta.tool_calls.append(pb.ToolCallDelta(
                index=state.calls, id=new_call_id(), name=call.get("name", ""),
                arguments=orjson.dumps(call.get("args") or {}).decode(), signature=signature))
            state.calls += 1
            continue
        if "text" in part:
            if part.get("thought"):
                delta.reasoning += part["text"]
            else:
                texts.append(part["text"])
                has_text = True
        if signature:
            delta.reasoning_blocks.append(pb.ReasoningBlock(signature=signature))
    if has_text:
        delta.content = "".join(texts)
        delta.has_content = True
    if candidate.get("logprobsResult"):
        delta.logprobs_json = openai_logprobs(candidate["logprobsResult"])
    if candidate.get("finishReason"):
        delta.finish_reason = finish_reason(candidate["finishReason"], state.calls > 0)
        state.finished = True
    if not (has_text or delta.reasoning or delta.tool_calls or delta.reasoning_blocks or delta.finish_reason):
        return None
    if not state.started:
        delta.role = "assistant"
        state.started = True
    return delta


def stream_deltas(delta: pb.ChoiceDelta) -> list[pb.ChoiceDelta]:
    """One candidate's delta the way OpenAI streams it, so clients (the openai
    SDK's stream helper among them) see each call open, fill and close: text
    and reasoning first, then per tool call its name (empty arguments) and
    then its arguments, and the finish reason in a delta of its own."""
    calls, finish = list(delta.tool_calls), delta.finish_reason
    if not calls and not finish:
        return [delta]
    del delta.tool_calls[:]
    delta.finish_reason = ""
    out: list[pb.ChoiceDelta] = []
    role = delta.role
    if delta.content or delta.has_content or delta.reasoning or delta.reasoning_blocks or delta.logprobs_json:
        out.append(delta)
        role = ""
    for call in calls:
        out.append(pb.ChoiceDelta(index=delta.index, role=role, tool_calls=[pb.ToolCallDelta(
            index=call.index, id=call.id, name=call.name, signature=call.signature)]))
        role = ""
        if call.arguments:
            out.append(pb.ChoiceDelta(index=delta.index, tool_calls=[pb.ToolCallDelta(index=call.index,
                                                                                      arguments=call.arguments)]))
    if finish:
        out.append(pb.ChoiceDelta(index=delta.index, role=role, finish_reason=finish))
    return out


def blocked_delta() -> pb.ChoiceDelta:
    """The answer to a prompt Gemini refused outright (promptFeedback.blockReason)."""
    return pb.ChoiceDelta(index=0, role="assistant", content="", has_content=True, finish_reason="content_filter")


def usage_from(metadata: Mapping[str, Any]) -> pb.Usage:
    """usageMetadata in the OpenAI convention: tool-use prompt tokens count as
    prompt, thoughts count as completion (and as reasoning)."""
    prompt = metadata.get("promptTokenCount", 0) + metadata.get("toolUsePromptTokenCount", 0)
    thoughts = metadata.get("thoughtsTokenCount", 0)
    completion = metadata.get("candidatesTokenCount", 0) + thoughts
    return pb.Usage(prompt_tokens=prompt, completion_tokens=completion,
                    total_tokens=metadata.get("totalTokenCount") or prompt + completion,
                    cached_tokens=metadata.get("cachedContentTokenCount", 0), reasoning_tokens=thoughts)


def load_json(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"Gemini sent invalid JSON in its {what}") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"Gemini sent a {what} that is not a JSON object")
    return data


