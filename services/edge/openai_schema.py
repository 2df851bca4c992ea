"""The OpenAI chat-completions request as pydantic models: the one source of
truth for what the edge accepts, and for the OpenAPI document it publishes.

Field order and names follow the OpenAI API reference (as vLLM's protocol
does); extension fields of the gateways Switchyard stands in for (Bifrost
``fallbacks``, Mesh ``models``/``template``/``variables``/``session_id``,
oMLX ``top_k``/``min_p``, Modelux ``mlx:*``) are declared fields. Unknown
top-level fields are kept and passed through to upstreams that understand
them; unknown fields inside nested objects are ignored.

Validation is strict like the real API: no string-to-number coercion, and
integers where integers are expected. Parsing and error wording live in ``validation.py``; the
published OpenAPI document in ``openapi.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

# Union member tags start with "#" so that an error location can tell them
# from real keys (see _param_of).
UNION_TAG = "#"


def _tagged(field: str, choices: tuple[str, ...]) -> Discriminator:
    """A discriminator on ``field`` whose tags are ``#<value>``; a missing or
    unknown value becomes a union_tag_* error naming ``field``."""
    known = frozenset(choices)

    def pick(value: Any) -> str | None:
        tag = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
        if tag is None or not isinstance(tag, str):
            return None if tag is None else str(tag)
        return UNION_TAG + tag if tag in known else tag

    pick.__name__ = f"field:{field}"
    return Discriminator(pick)


def _shape(expected: str, **shapes: type | tuple[type, ...]) -> Discriminator:
    """A discriminator on the JSON type of a value (string vs array...)."""

    def pick(value: Any) -> str | None:
        for tag, kinds in shapes.items():
            if isinstance(value, kinds):
                return UNION_TAG + tag
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
    """Modelux ``mlx:cache``: ``skip`` answers fresh (the answer may still be
    stored), ``no_store`` stores nothing, ``ttl`` (seconds) stores for at most
    that long and accepts no cached answer older than that."""

    skip: bool = False
    no_store: bool = False
    ttl: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None


Stop = Annotated[
    (
        Annotated[str, Tag("#string")]
        | Annotated[list[str], Field(max_length=4), Tag("#array")]
    ),
    _shape("a string or an array of strings", string=str, array=list),
]
_Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

# Identifiers (model names, fallbacks, users, sessions, tags) reach routing,
# response headers, logs and usage events: bounded and free of control
# characters, so no CR/LF can ever split a header or a log line.
IDENTIFIER_MAX_LENGTH = 256
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CONTROL_CHARACTERS = "must not contain control characters (such as CR, LF or NUL)"


def identifier_problem(value: str) -> str | None:
    """Why ``value`` is not a valid identifier, or None."""
    if len(value) > IDENTIFIER_MAX_LENGTH:
        return f"must be at most {IDENTIFIER_MAX_LENGTH} characters long"
    if _CONTROL.search(value):
        return CONTROL_CHARACTERS
    return None


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise PydanticCustomError("invalid_identifier", CONTROL_CHARACTERS)
    return value


Identifier = Annotated[str, Field(max_length=IDENTIFIER_MAX_LENGTH), AfterValidator(_no_control_characters)]
_Identifiers = Annotated[list[Identifier], Field(max_length=32)]
_MetadataKey = Annotated[str, Field(max_length=64)]
_MetadataValue = Annotated[str, Field(max_length=512)]

# ------------------------------------------------------------------ request --


class ChatCompletionRequest(_Strict):
    """POST /v1/chat/completions. ``model`` may be omitted here: the handler
    resolves it from the key's default model or a template."""

    model_config = ConfigDict(extra="allow", strict=True, validate_by_name=True, validate_by_alias=True)

    messages: Annotated[list[ChatCompletionMessage], Field(min_length=1)]
    model: Identifier | None = None
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
    prompt_cache_key: Identifier | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: Identifier | None = None
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
    user: Identifier | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    # Extensions: Bifrost, Mesh, oMLX, Modelux.
    fallbacks: _Identifiers | None = None
    models: _Identifiers | None = None
    template: Identifier | None = None
    variables: dict[Identifier, str] | None = None
    session_id: Identifier | None = None
    top_k: Annotated[int, Field(ge=-1, le=2**31 - 1)] | None = None  # -1 and 0 mean "off" (vLLM)
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    mlx_tags: Annotated[dict[Identifier, Identifier], Field(max_length=64)] | None = Field(None, alias="mlx:tags")
    mlx_end_user: Identifier | None = Field(None, alias="mlx:end_user")
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


# --------------------------------------------------------------- embeddings --

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request


def _input_shape(value: Any) -> str | None:
    if isinstance(value, str):
        return UNION_TAG + "string"
    if not isinstance(value, list):
        return None
    first = value[0] if value else ""
    if isinstance(first, list):
        return UNION_TAG + "token_arrays"
    return UNION_TAG + ("tokens" if isinstance(first, int) and not isinstance(first, bool) else "strings")


_NonEmpty = Annotated[str, Field(min_length=1)]
_Tokens = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
EmbeddingInput = Annotated[
    (
        Annotated[_NonEmpty, Tag("#string")]
        | Annotated[list[_NonEmpty], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS), Tag("#strings")]
        | Annotated[_Tokens, Tag("#tokens")]
        | Annotated[list[_Tokens], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS), Tag("#token_arrays")]
    ),
    Discriminator(_input_shape, custom_error_type="invalid_type",
                  custom_error_message="a string, an array of strings, an array of tokens or an array of token "
                                       "arrays"),
]


class EmbeddingRequest(_Strict):
    """POST /v1/embeddings. Unknown top-level fields pass through to
    upstreams that understand them (``input_type`` for some local servers,
    ``task_type`` and ``title`` for Gemini) and are refused by the others."""

    model_config = ConfigDict(extra="allow", strict=True, validate_by_name=True, validate_by_alias=True)

    input: EmbeddingInput
    model: Identifier | None = None
    dimensions: Annotated[int, Field(ge=1, le=65536)] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: Identifier | None = None
    # Extensions (the same conventions as chat): Bifrost, Mesh, Modelux.
    fallbacks: _Identifiers | None = None
    models: _Identifiers | None = None
    session_id: Identifier | None = None
    mlx_tags: Annotated[dict[Identifier, Identifier], Field(max_length=64)] | None = Field(None, alias="mlx:tags")
    mlx_end_user: Identifier | None = Field(None, alias="mlx:end_user")
    # Chat-only conventions read by the shared convention modules; never set here.
    template: ClassVar[None] = None
    variables: ClassVar[None] = None
    mlx_cache: ClassVar[None] = None
    mlx_trace: ClassVar[None] = None
