"""The Anthropic Messages request (``POST /v1/messages``) as pydantic models:
what the second front door accepts, and the schema published for it.

Like the real API, unknown fields are refused ("Extra inputs are not
permitted") and errors name the field by its dotted path
(``messages.0.content.1.type: ...``). Block types and tools that only
Anthropic's own servers run (server tools, search results, container
uploads) are refused with a message saying so, never dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from edge.openai_schema import Identifier

# Union member tags start with "#", so an error path can leave them out.
UNION_TAG = "#"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def tagged(**members: type) -> Any:
    """A union chosen by the value's ``type`` field; an unknown or missing
    type is one ``invalid_block_type`` error naming the expected tags."""
    known = frozenset(members)

    def pick(value: Any) -> str | None:
        tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return UNION_TAG + tag if isinstance(tag, str) and tag in known else None

    union = Union[tuple(Annotated[model, Tag(UNION_TAG + name)] for name, model in members.items())]  # noqa: UP007
    return Annotated[union, Discriminator(pick, custom_error_type="invalid_block_type",
                                          custom_error_message=", ".join(members))]


def text_or(blocks: Any, expected: str) -> Any:
    """A string, or a list of ``blocks``."""
    def pick(value: Any) -> str | None:
        if isinstance(value, str):
            return UNION_TAG + "string"
        return UNION_TAG + "array" if isinstance(value, list) else None

    return Annotated[Annotated[str, Tag(UNION_TAG + "string")] | Annotated[list[blocks], Tag(UNION_TAG + "array")],
                     Discriminator(pick, custom_error_type="invalid_type",
                                   custom_error_message=f"Input should be a valid string or {expected}")]


class CacheControl(_Strict):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None  # citations of an earlier answer: accepted, not forwarded


class Base64ImageSource(_Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLSource(_Strict):
    type: Literal["url"]
    url: Annotated[str, Field(pattern=r"^https?://")]


class FileSource(_Strict):
    type: Literal["file"]
    file_id: str


ImageSource = tagged(base64=Base64ImageSource, url=URLSource, file=FileSource)


class ImageBlock(_Strict):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


class Base64PDFSource(_Strict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(_Strict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentSource(_Strict):
    type: Literal["content"]
    content: Any


DocumentSource = tagged(base64=Base64PDFSource, text=PlainTextSource, url=URLSource, content=ContentSource,
                        file=FileSource)


class CitationsConfig(_Strict):
    enabled: bool | None = None


class DocumentBlock(_Strict):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None
    citations: CitationsConfig | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


_ResultPart = tagged(text=TextBlock, image=ImageBlock, document=DocumentBlock)


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: text_or(_ResultPart, "a list of content blocks") | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


ContentBlock = tagged(text=TextBlock, image=ImageBlock, document=DocumentBlock, thinking=ThinkingBlock,
                      redacted_thinking=RedactedThinkingBlock, tool_use=ToolUseBlock, tool_result=ToolResultBlock)
# Which blocks each role may send (the real API's rule).
ROLE_BLOCKS = {"user": frozenset({"text", "image", "document", "tool_result"}),
               "assistant": frozenset({"text", "thinking", "redacted_thinking", "tool_use"}),
               "system": frozenset({"text"})}


class MessageParam(_Strict):
    role: Literal["user", "assistant", "system"]
    content: text_or(ContentBlock, "a list of content blocks")


class InputSchema(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["object"]


class ToolParam(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")]
    input_schema: InputSchema
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None
    input_examples: list[dict[str, Any]] | None = None
    eager_input_streaming: bool | None = None


class ToolChoiceAuto(_Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Strict):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Strict):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Strict):
    type: Literal["none"]


ToolChoice = tagged(auto=ToolChoiceAuto, any=ToolChoiceAny, tool=ToolChoiceTool, none=ToolChoiceNone)


class ThinkingEnabled(_Strict):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=1024)]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(_Strict):
    type: Literal["disabled"]


class ThinkingAdaptive(_Strict):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


Thinking = tagged(enabled=ThinkingEnabled, disabled=ThinkingDisabled, adaptive=ThinkingAdaptive)


class JSONOutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Strict):
    model_config = ConfigDict(strict=True, extra="forbid", validate_by_name=True, validate_by_alias=True)
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JSONOutputFormat | None = None


class Metadata(_Strict):
    user_id: Identifier | None = None


class MessagesRequest(_Strict):
    """POST /v1/messages (and, without ``max_tokens``, /v1/messages/count_tokens)."""

    model: Identifier
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: text_or(TextBlock, "a list of text blocks") | None = None
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    cache_control: CacheControl | None = None
    inference_geo: str | None = None
    speed: Literal["standard", "fast"] | None = None
    diagnostics: dict[str, Any] | None = None
    container: Any = None  # a container id or its settings: passed to Anthropic upstreams only
    context_management: dict[str, Any] | None = None


class CountTokensRequest(MessagesRequest):
    """POST /v1/messages/count_tokens: the same body, no ``max_tokens``."""

    max_tokens: Annotated[int, Field(ge=1)] | None = None  # type: ignore[assignment]
