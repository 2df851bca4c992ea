"""Anthropic Messages request → the canonical ``ChatRequest``.

Lossless for an Anthropic upstream: signed and redacted thinking blocks,
``cache_control`` on every block and tool, tool_use/tool_result (with
``is_error``), images and documents keep their typed canonical form, and the
top-level fields with no canonical meaning (``thinking`` as given,
``output_config``, ``cache_control``, ``service_tier``, ``metadata``...) ride
in ``ChatRequest.native`` for the Anthropic translator to apply verbatim.
Every other upstream gets the canonical mapping: thinking → reasoning_effort,
output_config.format → response_format json_schema, stop_sequences → stop,
tool_choice any → required, disable_parallel_tool_use → parallel_tool_calls.

Known loss: inside one assistant turn, blocks keep their order by kind
(thinking, text, tool_use), not interleaved as given.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import ValidationError

from edge.anthropic_schema import (
    ROLE_BLOCKS,
    UNION_TAG,
    Base64ImageSource,
    Base64PDFSource,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    PlainTextSource,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingAdaptive,
    ThinkingBlock,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from edge.validation import load_json_object
from switchyard.config import Limits
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb

# Top-level fields applied verbatim by an Anthropic upstream and mapped (or,
# having no meaning elsewhere, dropped) for the others.
NATIVE_FIELDS = ("thinking", "output_config", "cache_control", "service_tier", "inference_geo", "speed",
                 "diagnostics", "metadata")
# Fields that change what the answer is: refused by upstreams that do not understand them.
EXTRA_FIELDS = ("container", "context_management")
# thinking.budget_tokens → reasoning_effort for upstreams that take an effort level.
_EFFORT_BY_BUDGET = ((2048, "low"), (8192, "medium"), (24576, "high"))


# -------------------------------------------------------------------- parse --


def parse_messages_request(body: bytes, limits: Limits) -> MessagesRequest:
    return _parse(body, limits, MessagesRequest)


def parse_count_tokens_request(body: bytes, limits: Limits) -> CountTokensRequest:
    return _parse(body, limits, CountTokensRequest)  # type: ignore[return-value]


def _parse(body: bytes, limits: Limits, model: type[MessagesRequest]) -> MessagesRequest:
    data = load_json_object(body, limits)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise request_error(exc.errors(include_url=False)[0]) from None


def request_error(err: dict[str, Any]) -> InvalidRequestError:
    """Anthropic's wording: ``<dotted.path>: <what is wrong>``."""
    path = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith(UNION_TAG)))
    message = err["msg"]
    if err["type"] == "invalid_block_type":
        value = err.get("input")
        tag = value.get("type") if isinstance(value, dict) else None
        path = f"{path}.type" if path else "type"
        message = f"Input tag {tag!r} does not match any of the expected tags: {message}"
    return InvalidRequestError(f"{path}: {message}" if path else message, param=path or None)


# ---------------------------------------------------------------- canonical --


def to_chat_request(req: MessagesRequest, *, request_id: str, identity: pb.Identity | None = None,
                    routing: pb.RoutingContext | None = None) -> pb.ChatRequest:
    out = pb.ChatRequest(request_id=request_id, model=req.model, stream=bool(req.stream), routing=routing,
                         identity=identity)
    if req.metadata is not None and req.metadata.user_id:
        out.user = req.metadata.user_id
    if req.system is not None:
        out.messages.append(_system(req.system))
    for i, message in enumerate(req.messages):
        _add_message(out, message, i)
    _sampling(req, out.sampling)
    for position, tool in enumerate(req.tools or ()):
        out.tools.append(_tool(tool, position))
    _tool_choice(req, out)
    if req.output_config is not None and req.output_config.format is not None:
        schema = orjson.dumps(req.output_config.format.schema_).decode()
        out.response_format.CopyFrom(pb.ResponseFormat(type="json_schema", schema_name="response", schema_json=schema))
    native = req.model_dump(include=set(NATIVE_FIELDS), exclude_none=True, by_alias=True)
    if native:
        out.native.api = "anthropic"
        out.native.fields.update(native)
    extra = {name: value for name in EXTRA_FIELDS if (value := getattr(req, name)) is not None}
    if extra:
        out.extra.update(extra)
    return out


def _sampling(req: MessagesRequest, out: pb.Sampling) -> None:
    out.n = 1
    if req.max_tokens is not None:
        out.max_tokens = req.max_tokens
    if req.temperature is not None:
        out.temperature = req.temperature
    if req.top_p is not None:
        out.top_p = req.top_p
    if req.top_k:  # 0 means no top-k
        out.top_k = req.top_k
    if req.stop_sequences:
        out.stop.extend(req.stop_sequences)
    effort = reasoning_effort(req)
    if effort:
        out.reasoning_effort = effort


def reasoning_effort(req: MessagesRequest) -> str:
    """The effort level an upstream without thinking budgets gets."""
    thinking = req.thinking
    if isinstance(thinking, ThinkingEnabled):
        return next((effort for limit, effort in _EFFORT_BY_BUDGET if thinking.budget_tokens <= limit), "xhigh")
    if isinstance(thinking, ThinkingAdaptive):
        effort = req.output_config.effort if req.output_config is not None else None
        return effort or "medium"
    return ""


def _cache(control: Any, out: Any) -> None:
    if control is not None:
        out.cache_control.type = control.type
        if control.ttl:
            out.cache_control.ttl = control.ttl


def _system(system: str | list[TextBlock]) -> pb.Message:
    if isinstance(system, str):
        return pb.Message(role="system", text=system)
    out = pb.Message(role="system")
    out.parts.SetInParent()
    for block in system:
        out.parts.parts.append(_text_part(block))
    return out


def _add_message(out: pb.ChatRequest, message: MessageParam, i: int) -> None:
    content = message.content
    if isinstance(content, str):
        out.messages.append(pb.Message(role=message.role, text=content))
        return
    allowed = ROLE_BLOCKS[message.role]
    for j, block in enumerate(content):
        if block.type not in allowed:
            raise InvalidRequestError(
                f"messages.{i}.content.{j}.type: {message.role} messages may not contain {block.type} blocks "
                f"(allowed: {', '.join(sorted(allowed))})", param=f"messages.{i}.content.{j}.type")
    if message.role == "assistant":
        out.messages.append(_assistant(content, i))
        return
    # Tool results answer the previous turn: they go first, as tool messages.
    rest: list[Any] = []
    for j, block in enumerate(content):
        if isinstance(block, ToolResultBlock):
            out.messages.append(_tool_result(block, f"messages.{i}.content.{j}"))
        else:
            rest.append((j, block))
    if rest or not any(isinstance(b, ToolResultBlock) for b in content):
        user = pb.Message(role=message.role)
        user.parts.SetInParent()
        for j, block in rest:
            user.parts.parts.append(_part(block, f"messages.{i}.content.{j}"))
        out.messages.append(user)


def _assistant(blocks: list[Any], i: int) -> pb.Message:
    out = pb.Message(role="assistant")
    texts: list[TextBlock] = []
    reasoning: list[str] = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block)
        elif isinstance(block, ThinkingBlock):
            out.reasoning_blocks.add(text=block.thinking, signature=block.signature)
            reasoning.append(block.thinking)
        elif isinstance(block, RedactedThinkingBlock):
            out.reasoning_blocks.add(redacted_data=block.data)
        elif isinstance(block, ToolUseBlock):
            call = out.tool_calls.add(id=block.id, type="function")
            call.function.name = block.name
            call.function.arguments = orjson.dumps(block.input).decode()
            _cache(block.cache_control, call)
        else:  # pragma: no cover - ROLE_BLOCKS rules these out
            raise InvalidRequestError(f"messages.{i}.content.{j}: unexpected block", param=f"messages.{i}")
    if reasoning:
        out.reasoning_content = "".join(reasoning)
    if len(texts) == 1 and texts[0].cache_control is None:
        out.text = texts[0].text
    elif texts:
        out.parts.SetInParent()
        out.parts.parts.extend(_text_part(block) for block in texts)
    elif not out.tool_calls:
        out.text = ""
    return out


def _tool_result(block: ToolResultBlock, where: str) -> pb.Message:
    out = pb.Message(role="tool", tool_call_id=block.tool_use_id)
    content = block.content
    if content is None or isinstance(content, str):
        out.text = content or ""
    else:
        out.parts.SetInParent()
        for k, part in enumerate(content):
            out.parts.parts.append(_part(part, f"{where}.content.{k}"))
    if block.is_error:
        out.is_error = True
    _cache(block.cache_control, out)
    return out


def _text_part(block: TextBlock) -> pb.ContentPart:
    part = pb.ContentPart(text=block.text)
    _cache(block.cache_control, part)
    return part


def _part(block: Any, where: str) -> pb.ContentPart:
    if isinstance(block, TextBlock):
        return _text_part(block)
    if isinstance(block, ImageBlock):
        part = pb.ContentPart(image_url=pb.ImageUrl(url=_image_url(block.source, where)))
    elif isinstance(block, DocumentBlock):
        part = pb.ContentPart(file=_document(block, where))
    else:  # pragma: no cover - ROLE_BLOCKS rules these out
        raise InvalidRequestError(f"{where}: unexpected block", param=where)
    _cache(block.cache_control, part)
    return part


def _image_url(source: Any, where: str) -> str:
    if isinstance(source, Base64ImageSource):
        return f"data:{source.media_type};base64,{source.data}"
    if isinstance(source, URLSource):
        return source.url
    raise InvalidRequestError(f"{where}.source.type: file sources (the Files API) are not supported by this gateway",
                              param=f"{where}.source.type")


def _document(block: DocumentBlock, where: str) -> pb.FileInput:
    source = block.source
    out = pb.FileInput(filename=block.title or "", context=block.context or "",
                       citations=bool(block.citations and block.citations.enabled))
    if isinstance(source, Base64PDFSource):
        out.file_data = f"data:application/pdf;base64,{source.data}"
    elif isinstance(source, PlainTextSource):
        out.file_data = "data:text/plain;base64," + base64.b64encode(source.data.encode()).decode()
    elif isinstance(source, URLSource):
        out.url = source.url
    else:
        raise InvalidRequestError(f"{where}.source.type: {source.type} document sources are not supported by this "
                                  "gateway (use base64, text or url)", param=f"{where}.source.type")
    return out


def _tool(tool: Any, position: int) -> pb.Tool:
    out = pb.Tool(type="function")
    function = out.function
    function.name = tool.name
    function.description = tool.description or ""
    function.parameters_json = orjson.dumps(tool.input_schema.model_dump()).decode()
    if tool.strict is not None:
        function.strict = tool.strict
    _cache(tool.cache_control, out)
    return out


def _tool_choice(req: MessagesRequest, out: pb.ChatRequest) -> None:
    choice = req.tool_choice
    if choice is None:
        return
    if isinstance(choice, ToolChoiceTool):
        out.tool_choice.function_name = choice.name
    elif isinstance(choice, ToolChoiceAny):
        out.tool_choice.mode = "required"
    elif isinstance(choice, ToolChoiceNone):
        out.tool_choice.mode = "none"
    else:
        out.tool_choice.mode = "auto"
    if getattr(choice, "disable_parallel_tool_use", None):
        out.sampling.parallel_tool_calls = False
