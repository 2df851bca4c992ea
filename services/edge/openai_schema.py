"""The OpenAI chat-completions request as pydantic models: the one source of
truth for what the edge accepts, and for the OpenAPI document it publishes.

Field order and names follow the OpenAI API reference (as vLLM's protocol
does); extension fields of the gateways Switchyard stands in for (Bifrost
``fallbacks``, Mesh ``models``/``template``/``variables``/``session_id``,
oMLX ``top_k``/``min_p``, Modelux ``mlx:*``) are declared fields. Unknown
top-level fields are kept and passed through to upstreams that understand
them; unknown fields inside nested objects are ignored.

Validation is strict like the real API: no string-to-number coercion, and
integers where integers are expected. ``parse_chat_request`` turns the first
validation error into an ``InvalidRequestError`` whose ``param`` and message
use OpenAI's wording (``messages[0].role``, "Invalid 'temperature': decimal
above maximum value. ...").

JSON objects with duplicate keys are accepted; the last value wins (orjson).
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from switchyard.config import Limits
from switchyard.errors import InvalidRequestError

# Union member tags start with "#" so that an error location can tell them
# from real keys (see _param_of).
_TAG = "#"


def _tagged(field: str, choices: tuple[str, ...]) -> Discriminator:
    """A discriminator on ``field`` whose tags are ``#<value>``; a missing or
    unknown value becomes a union_tag_* error naming ``field``."""
    known = frozenset(choices)

    def pick(value: Any) -> str | None:
        tag = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
        if tag is None or not isinstance(tag, str):
            return None if tag is None else str(tag)
        return _TAG + tag if tag in known else tag

    pick.__name__ = f"field:{field}"
    return Discriminator(pick)


def _shape(expected: str, **shapes: type | tuple[type, ...]) -> Discriminator:
    """A discriminator on the JSON type of a value (string vs array...)."""

    def pick(value: Any) -> str | None:
        for tag, kinds in shapes.items():
            if isinstance(value, kinds):
                return _TAG + tag
        return None

    # The message carries ``expected``: a context dict would make the type unhashable.
    return Discriminator(pick, custom_error_type="invalid_type", custom_error_message=expected)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, validate_by_name=True, validate_by_alias=True)


# ------------------------------------------------------------ content parts --


class ChatCompletionContentPartText(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high", "original"] | None = None


class ChatCompletionContentPartImage(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class ChatCompletionContentPartInputAudio(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileFile(_Strict):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class ChatCompletionContentPartFile(_Strict):
    type: Literal["file"]
    file: FileFile


class ChatCompletionContentPartRefusal(_Strict):
    type: Literal["refusal"]
    refusal: str


_TextParts = list[ChatCompletionContentPartText]
_UserPart = Annotated[
    (
        Annotated[ChatCompletionContentPartText, Tag("#text")]
        | Annotated[ChatCompletionContentPartImage, Tag("#image_url")]
        | Annotated[ChatCompletionContentPartInputAudio, Tag("#input_audio")]
        | Annotated[ChatCompletionContentPartFile, Tag("#file")]
    ),
    _tagged("type", ("text", "image_url", "input_audio", "file")),
]
_AssistantPart = Annotated[
    (
        Annotated[ChatCompletionContentPartText, Tag("#text")]
        | Annotated[ChatCompletionContentPartRefusal, Tag("#refusal")]
    ),
    _tagged("type", ("text", "refusal")),
]
_TextContent = Annotated[
    (
        Annotated[str, Tag("#string")]
        | Annotated[_TextParts, Tag("#array")]
    ),
    _shape("a string or an array of text content parts", string=str, array=list),
]
_UserContent = Annotated[
    (
        Annotated[str, Tag("#string")]
        | Annotated[list[_UserPart], Tag("#array")]
    ),
    _shape("a string or an array of content parts", string=str, array=list),
]
_AssistantContent = Annotated[
    (
        Annotated[str, Tag("#string")]
        | Annotated[list[_AssistantPart], Tag("#array")]
    ),
    _shape("a string or an array of content parts", string=str, array=list),
]

# ----------------------------------------------------------------- messages --


class Function(_Strict):
    name: str
    arguments: str


class ChatCompletionMessageToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: Function
    # Google's OpenAI-compatible convention for Gemini thought signatures:
    # {"google": {"thought_signature": "..."}}, returned by us and accepted back.
    extra_content: dict[str, Any] | None = None


class ThinkingBlock(_Strict):
    """A signed reasoning block handed back for a multi-turn conversation (LiteLLM style)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str


_ThinkingBlock = Annotated[
    (
        Annotated[ThinkingBlock, Tag("#thinking")]
        | Annotated[RedactedThinkingBlock, Tag("#redacted_thinking")]
    ),
    _tagged("type", ("thinking", "redacted_thinking")),
]


class AssistantAudio(_Strict):
    id: str


class ChatCompletionSystemMessage(_Strict):
    content: _TextContent
    role: Literal["system"]
    name: str | None = None


class ChatCompletionDeveloperMessage(_Strict):
    content: _TextContent
    role: Literal["developer"]
    name: str | None = None


class ChatCompletionUserMessage(_Strict):
    content: _UserContent
    role: Literal["user"]
    name: str | None = None


class ChatCompletionAssistantMessage(_Strict):
    role: Literal["assistant"]
    audio: AssistantAudio | None = None
    content: _AssistantContent | None = None
    function_call: Function | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None
    # Reasoning round trip (oMLX/vLLM ``reasoning_content``, LiteLLM ``thinking_blocks``).
    reasoning_content: str | None = None
    thinking_blocks: list[_ThinkingBlock] | None = None


class ChatCompletionToolMessage(_Strict):
    content: _TextContent
    role: Literal["tool"]
    tool_call_id: str


class ChatCompletionFunctionMessage(_Strict):
    content: str | None
    name: str
    role: Literal["function"]


ROLES = ("system", "developer", "user", "assistant", "tool", "function")
ChatCompletionMessage = Annotated[
    (
        Annotated[ChatCompletionSystemMessage, Tag("#system")]
        | Annotated[ChatCompletionDeveloperMessage, Tag("#developer")]
        | Annotated[ChatCompletionUserMessage, Tag("#user")]
        | Annotated[ChatCompletionAssistantMessage, Tag("#assistant")]
        | Annotated[ChatCompletionToolMessage, Tag("#tool")]
        | Annotated[ChatCompletionFunctionMessage, Tag("#function")]
    ),
    _tagged("role", ROLES),
]

# ------------------------------------------------- tools and response format --

_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionDefinition(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionTool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: str


class ChatCompletionNamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Annotated[
    (
        Annotated[Literal["none", "auto", "required"], Tag("#string")]
        | Annotated[ChatCompletionNamedToolChoice, Tag("#object")]
    ),
    _shape("a string or an object", string=str, object=(dict, ChatCompletionNamedToolChoice)),
]


class ResponseFormatText(_Strict):
    type: Literal["text"]


class ResponseFormatJSONObject(_Strict):
    type: Literal["json_object"]


class JSONSchema(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatJSONSchema(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchema


ResponseFormat = Annotated[
    (
        Annotated[ResponseFormatText, Tag("#text")]
        | Annotated[ResponseFormatJSONObject, Tag("#json_object")]
        | Annotated[ResponseFormatJSONSchema, Tag("#json_schema")]
    ),
    _tagged("type", ("text", "json_object", "json_schema")),
]


class ChatCompletionStreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class MlxCache(_Strict):
    skip: bool = False


Stop = Annotated[
    (
        Annotated[str, Tag("#string")]
        | Annotated[list[str], Field(max_length=4), Tag("#array")]
    ),
    _shape("a string or an array of strings", string=str, array=list),
]
_Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
_MetadataKey = Annotated[str, Field(max_length=64)]
_MetadataValue = Annotated[str, Field(max_length=512)]

# ------------------------------------------------------------------ request --


class ChatCompletionRequest(_Strict):
    """POST /v1/chat/completions. ``model`` may be omitted here: the handler
    resolves it from the key's default model or a template."""

    model_config = ConfigDict(extra="allow", strict=True, validate_by_name=True, validate_by_alias=True)

    messages: Annotated[list[ChatCompletionMessage], Field(min_length=1)]
    model: str | None = None
    audio: dict[str, Any] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    function_call: Any = None  # deprecated; passed through
    functions: list[dict[str, Any]] | None = None  # deprecated; passed through
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    logprobs: bool | None = None
    max_completion_tokens: Annotated[_Int64, Field(ge=1)] | None = None
    max_tokens: Annotated[_Int64, Field(ge=1)] | None = None
    metadata: Annotated[dict[_MetadataKey, _MetadataValue], Field(max_length=16)] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    prompt_cache_key: str | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    seed: _Int64 | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    stop: Stop | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: ChatCompletionStreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    tool_choice: ToolChoice | None = None
    tools: list[ChatCompletionTool] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    # Extensions: Bifrost, Mesh, oMLX, Modelux.
    fallbacks: list[str] | None = None
    models: list[str] | None = None
    template: str | None = None
    variables: dict[str, str] | None = None
    session_id: str | None = None
    top_k: Annotated[int, Field(ge=-1, le=2**31 - 1)] | None = None  # -1 and 0 mean "off" (vLLM)
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    mlx_tags: dict[str, str] | None = Field(None, alias="mlx:tags")
    mlx_end_user: str | None = Field(None, alias="mlx:end_user")
    mlx_cache: MlxCache | None = Field(None, alias="mlx:cache")
    mlx_trace: bool | None = Field(None, alias="mlx:trace")

    @model_validator(mode="after")
    def _dependent_fields(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise PydanticCustomError("invalid_param", "{message}", {
                "param": "top_logprobs",
                "message": "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' "
                           "is used."})
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("invalid_param", "{message}", {
                "param": "stream_options",
                "message": "The 'stream_options' parameter is only allowed when 'stream' is enabled."})
        return self


# ------------------------------------------------------- parsing and errors --

_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def parse_chat_request(body: bytes, limits: Limits) -> ChatCompletionRequest:
    """Parse and validate a request body, or raise ``InvalidRequestError``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _unparsable(body, exc, limits) from None
    # Upper bound first: counting brackets (inside strings too) is C-speed.
    if body.count(b"[") + body.count(b"{") > limits.max_json_depth and _depth(body) > limits.max_json_depth:
        raise _too_deep(limits)
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    if len(body) > limits.max_string_chars:
        _check_strings(data, limits.max_string_chars)
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidRequestError(
            f"Invalid 'messages': array too long. Expected an array with maximum length {limits.max_messages}, "
            f"but got an array with length {len(messages)} instead.", param="messages", code="array_above_max_length")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise request_error(exc.errors(include_url=False)[0], data) from None


def _depth(body: bytes) -> int:
    """Deepest [/{ nesting outside string literals, without recursion."""
    brackets = _STRING_LITERAL.sub(b"", body).translate(_BRACKET_STEP, _BRACKETS_ONLY)
    return max(accumulate(memoryview(brackets).cast("b")), default=0)


def _too_deep(limits: Limits) -> InvalidRequestError:
    return InvalidRequestError(f"the JSON body is nested deeper than {limits.max_json_depth} levels",
                               code="json_too_deep")


def _unparsable(body: bytes, exc: orjson.JSONDecodeError, limits: Limits) -> InvalidRequestError:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidRequestError("body is not valid UTF-8")
    # No _depth() scan here: on an unterminated string its regex goes quadratic.
    if "depth limit" in str(exc):
        return _too_deep(limits)
    return InvalidRequestError(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json")


def _check_strings(data: Any, limit: int) -> None:
    """Reject any string (or key) longer than ``limit`` characters; iterative."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                sub = f"{path}.{key}" if path else key
                if len(key) > limit:
                    raise _string_too_long(path or None, len(key), limit)
                stack.append((value, sub))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(node))
        elif isinstance(node, str) and len(node) > limit:
            raise _string_too_long(path, len(node), limit)


def _string_too_long(param: str | None, length: int, limit: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, but got a string "
        f"with length {length} instead.", param=param, code="string_above_max_length")


def _param_of(loc: tuple[int | str, ...], data: Any) -> str:
    """OpenAI's name for an error location: ``messages[0].content[1].type``.
    Union member tags (``#...``) are dropped unless they are real keys."""
    out: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        elif (part.startswith(_TAG) or part == "[key]") and not (isinstance(node, dict) and part in node):
            continue
        else:
            out.append(f".{part}" if out else part)
            node = node.get(part) if isinstance(node, dict) else None
    return "".join(out)


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a decimal", "float_parsing": "a decimal", "bool_type": "a boolean", "bool_parsing": "a boolean",
    "list_type": "an array", "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a decimal"), (str, "a string"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "an unknown type"


def _number(value: Any) -> str:
    return f"{value:.15g}" if isinstance(value, float) else str(value)


def request_error(err: Any, data: Any) -> InvalidRequestError:
    """The OpenAI-worded error for one pydantic error dict (the first of many)."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    param = _param_of(err["loc"], data)
    name = param or "body"
    expected = _EXPECTED.get(kind)
    if kind in ("union_tag_invalid", "union_tag_not_found") and ctx.get("discriminator", "").startswith("field:"):
        if not isinstance(value, dict):
            kind, expected = "invalid_type", "an object"
        else:
            field = ctx["discriminator"][len("field:"):-2]
            param = f"{param}.{field}" if param else field
            if kind == "union_tag_not_found":
                return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param,
                                           code="missing_required_parameter")
            supported = ctx["expected_tags"].replace(_TAG, "")
            return InvalidRequestError(f"Invalid value: '{ctx['tag']}'. Supported values are: {supported}.",
                                       param=param, code="invalid_value")
    param = param or None
    if kind == "invalid_param":
        return InvalidRequestError(ctx["message"], param=ctx["param"], code="invalid_value")
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{name}'.", param=param,
                                   code="missing_required_parameter")
    if kind == "invalid_type" or expected:
        return InvalidRequestError(f"Invalid type for '{name}': expected {expected or err['msg']}, but got "
                                   f"{_json_type(value)} instead.", param=param, code="invalid_type")
    if kind in _BOUNDS:
        key, side, word, op = _BOUNDS[kind]
        number = "decimal" if isinstance(ctx[key], float) else "integer"
        return InvalidRequestError(
            f"Invalid '{name}': {number} {side} {word}imum value. Expected a value {op} {_number(ctx[key])}, but got "
            f"{_number(value)} instead.", param=param, code=f"{number}_{side}_{word}_value")
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return _length_error(kind, name, param, ctx, value)
    if kind == "string_pattern_mismatch":
        return InvalidRequestError(
            f"Invalid '{name}': string does not match pattern. Expected a string that matches the pattern "
            f"'{ctx['pattern']}'.", param=param, code="invalid_value")
    if kind == "literal_error":
        shown = f"'{value}'" if isinstance(value, str) else orjson.dumps(value).decode()
        return InvalidRequestError(f"Invalid value: {shown}. Supported values are: {ctx['expected']}.",
                                   param=param, code="invalid_value")
    return InvalidRequestError(f"Invalid '{name}': {err['msg']}.", param=param, code="invalid_value")


_BOUNDS = {  # pydantic error type -> (ctx key, side, "min"/"max", operator)
    "greater_than_equal": ("ge", "below", "min", ">="), "greater_than": ("gt", "below", "min", ">"),
    "less_than_equal": ("le", "above", "max", "<="), "less_than": ("lt", "above", "max", "<"),
}


def _length_error(kind: str, name: str, param: str | None, ctx: dict[str, Any], value: Any) -> InvalidRequestError:
    short = kind.endswith("too_short")
    bound = ctx["min_length"] if short else ctx["max_length"]
    side, word = ("below", "min") if short else ("above", "max")
    if kind.startswith("string"):
        return InvalidRequestError(
            f"Invalid '{name}': string too {'short' if short else 'long'}. Expected a string with {word}imum length "
            f"{bound}, but got a string with length {len(value)} instead.", param=param,
            code=f"string_{side}_{word}_length")
    if isinstance(value, dict):
        few, most = ("few", "least") if short else ("many", "most")
        return InvalidRequestError(
            f"Invalid '{name}': too {few} properties. Expected an object with at {most} {bound} properties, but got "
            f"{len(value)} instead.", param=param, code=f"object_{side}_{word}_properties")
    if not value:
        return InvalidRequestError(
            f"Invalid '{name}': empty array. Expected an array with minimum length {bound}, but got an empty array "
            "instead.", param=param, code="empty_array")
    return InvalidRequestError(
        f"Invalid '{name}': array too {'short' if short else 'long'}. Expected an array with {word}imum length "
        f"{bound}, but got an array with length {len(value)} instead.", param=param, code=f"array_{side}_{word}_length")


# ---------------------------------------------------- response documentation --


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class ToolCallFunction(_Doc):
    name: str
    arguments: str


class ToolCall(_Doc):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class TokenLogprob(_Doc):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[dict[str, Any]] = []


class ChoiceLogprobs(_Doc):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(_Doc):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    annotations: list[dict[str, Any]] = []
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    thinking_blocks: list[dict[str, Any]] | None = None


class Choice(_Doc):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class CompletionUsage(_Doc):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ChatCompletion(_Doc):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class ChoiceDeltaToolCall(_Doc):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class ChoiceDelta(_Doc):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(_Doc):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"] | None = None


class ChatCompletionChunk(_Doc):
    """One ``data:`` frame of a streamed answer; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class Model(_Doc):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Doc):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorBody(_Doc):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Doc):
    error: ErrorBody


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for POST /v1/chat/completions and GET /v1/models."""
    _, schemas = models_json_schema(
        [(ChatCompletionRequest, "validation"), (ChatCompletion, "serialization"),
         (ChatCompletionChunk, "serialization"), (ModelList, "serialization"), (ErrorResponse, "serialization")],
        ref_template="#/components/schemas/{model}", by_alias=True)

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    error = {"description": "OpenAI error envelope", "content": {"application/json": {"schema": ref("ErrorResponse")}}}
    errors = {str(code): error for code in (400, 401, 402, 403, 404, 413, 429, 502, 503, 504)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard", "version": "1", "description": "OpenAI-compatible LLM gateway."},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": ref("ChatCompletionRequest")}}},
                "responses": {"200": {"description": "A completion, or an SSE stream of chunks when stream=true",
                                      "content": {"application/json": {"schema": ref("ChatCompletion")},
                                                  "text/event-stream": {"schema": ref("ChatCompletionChunk")}}},
                              **errors},
            }},
            "/v1/models": {"get": {
                "operationId": "listModels",
                "responses": {"200": {"description": "Models this key may use",
                                      "content": {"application/json": {"schema": ref("ModelList")}}},
                              "401": error, "503": error},
            }},
        },
    }
