from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageUrl(_message.Message):
    __slots__ = ("url", "detail")
    URL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    url: str
    detail: str
    def __init__(self, url: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class InputAudio(_message.Message):
    __slots__ = ("data", "format")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    data: str
    format: str
    def __init__(self, data: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class FileInput(_message.Message):
    __slots__ = ("file_id", "file_data", "filename", "url", "context", "citations")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    file_data: str
    filename: str
    url: str
    context: str
    citations: bool
    def __init__(self, file_id: _Optional[str] = ..., file_data: _Optional[str] = ..., filename: _Optional[str] = ..., url: _Optional[str] = ..., context: _Optional[str] = ..., citations: _Optional[bool] = ...) -> None: ...

class CacheControl(_message.Message):
    __slots__ = ("type", "ttl")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    type: str
    ttl: str
    def __init__(self, type: _Optional[str] = ..., ttl: _Optional[str] = ...) -> None: ...

class ContentPart(_message.Message):
    __slots__ = ("text", "image_url", "input_audio", "file", "refusal", "cache_control")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    INPUT_AUDIO_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    text: str
    image_url: ImageUrl
    input_audio: InputAudio
    file: FileInput
    refusal: str
    cache_control: CacheControl
    def __init__(self, text: _Optional[str] = ..., image_url: _Optional[_Union[ImageUrl, _Mapping]] = ..., input_audio: _Optional[_Union[InputAudio, _Mapping]] = ..., file: _Optional[_Union[FileInput, _Mapping]] = ..., refusal: _Optional[str] = ..., cache_control: _Optional[_Union[CacheControl, _Mapping]] = ...) -> None: ...

class ContentParts(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedCompositeFieldContainer[ContentPart]
    def __init__(self, parts: _Optional[_Iterable[_Union[ContentPart, _Mapping]]] = ...) -> None: ...

class FunctionCall(_message.Message):
    __slots__ = ("name", "arguments")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    arguments: str
    def __init__(self, name: _Optional[str] = ..., arguments: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "type", "function", "signature", "cache_control")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    function: FunctionCall
    signature: str
    cache_control: CacheControl
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., function: _Optional[_Union[FunctionCall, _Mapping]] = ..., signature: _Optional[str] = ..., cache_control: _Optional[_Union[CacheControl, _Mapping]] = ...) -> None: ...

class ReasoningBlock(_message.Message):
    __slots__ = ("text", "signature", "redacted_data")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REDACTED_DATA_FIELD_NUMBER: _ClassVar[int]
    text: str
    signature: str
    redacted_data: str
    def __init__(self, text: _Optional[str] = ..., signature: _Optional[str] = ..., redacted_data: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "text", "parts", "name", "tool_calls", "tool_call_id", "refusal", "reasoning_content", "reasoning_blocks", "cache_control", "is_error")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    REASONING_CONTENT_FIELD_NUMBER: _ClassVar[int]
    REASONING_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    role: str
    text: str
    parts: ContentParts
    name: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    tool_call_id: str
    refusal: str
    reasoning_content: str
    reasoning_blocks: _containers.RepeatedCompositeFieldContainer[ReasoningBlock]
    cache_control: CacheControl
    is_error: bool
    def __init__(self, role: _Optional[str] = ..., text: _Optional[str] = ..., parts: _Optional[_Union[ContentParts, _Mapping]] = ..., name: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ..., refusal: _Optional[str] = ..., reasoning_content: _Optional[str] = ..., reasoning_blocks: _Optional[_Iterable[_Union[ReasoningBlock, _Mapping]]] = ..., cache_control: _Optional[_Union[CacheControl, _Mapping]] = ..., is_error: _Optional[bool] = ...) -> None: ...

class FunctionDefinition(_message.Message):
    __slots__ = ("name", "description", "parameters_json", "strict")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    strict: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ..., strict: _Optional[bool] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("type", "function", "cache_control")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    type: str
    function: FunctionDefinition
    cache_control: CacheControl
    def __init__(self, type: _Optional[str] = ..., function: _Optional[_Union[FunctionDefinition, _Mapping]] = ..., cache_control: _Optional[_Union[CacheControl, _Mapping]] = ...) -> None: ...

class ToolChoice(_message.Message):
    __slots__ = ("mode", "function_name")
    MODE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    mode: str
    function_name: str
    def __init__(self, mode: _Optional[str] = ..., function_name: _Optional[str] = ...) -> None: ...

class ResponseFormat(_message.Message):
    __slots__ = ("type", "schema_name", "schema_json", "strict", "description")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    type: str
    schema_name: str
    schema_json: str
    strict: bool
    description: str
    def __init__(self, type: _Optional[str] = ..., schema_name: _Optional[str] = ..., schema_json: _Optional[str] = ..., strict: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "seed", "n", "stop", "logit_bias", "logprobs", "top_logprobs", "top_k", "reasoning_effort", "verbosity", "parallel_tool_calls", "service_tier", "modalities", "stop_is_string")
    class LogitBiasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIAS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REASONING_EFFORT_FIELD_NUMBER: _ClassVar[int]
    VERBOSITY_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIER_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    STOP_IS_STRING_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_tokens: int
    max_completion_tokens: int
    presence_penalty: float
    frequency_penalty: float
    seed: int
    n: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    logit_bias: _containers.ScalarMap[str, float]
    logprobs: bool
    top_logprobs: int
    top_k: int
    reasoning_effort: str
    verbosity: str
    parallel_tool_calls: bool
    service_tier: str
    modalities: _containers.RepeatedScalarFieldContainer[str]
    stop_is_string: bool
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., max_completion_tokens: _Optional[int] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ..., seed: _Optional[int] = ..., n: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., logit_bias: _Optional[_Mapping[str, float]] = ..., logprobs: _Optional[bool] = ..., top_logprobs: _Optional[int] = ..., top_k: _Optional[int] = ..., reasoning_effort: _Optional[str] = ..., verbosity: _Optional[str] = ..., parallel_tool_calls: _Optional[bool] = ..., service_tier: _Optional[str] = ..., modalities: _Optional[_Iterable[str]] = ..., stop_is_string: _Optional[bool] = ...) -> None: ...

class RoutingContext(_message.Message):
    __slots__ = ("tags", "end_user", "session_id", "cache_skip", "trace", "template", "variables", "fallbacks", "cache_no_store", "cache_ttl_s", "cache_only")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TAGS_FIELD_NUMBER: _ClassVar[int]
    END_USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_SKIP_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    CACHE_NO_STORE_FIELD_NUMBER: _ClassVar[int]
    CACHE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    CACHE_ONLY_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.ScalarMap[str, str]
    end_user: str
    session_id: str
    cache_skip: bool
    trace: bool
    template: str
    variables: _containers.ScalarMap[str, str]
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    cache_no_store: bool
    cache_ttl_s: int
    cache_only: bool
    def __init__(self, tags: _Optional[_Mapping[str, str]] = ..., end_user: _Optional[str] = ..., session_id: _Optional[str] = ..., cache_skip: _Optional[bool] = ..., trace: _Optional[bool] = ..., template: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., fallbacks: _Optional[_Iterable[str]] = ..., cache_no_store: _Optional[bool] = ..., cache_ttl_s: _Optional[int] = ..., cache_only: _Optional[bool] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("key_id", "tenant", "allowed_models", "restricted", "default_model", "key_limit", "end_user_limit", "budgets", "max_concurrent", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    RESTRICTED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    END_USER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    restricted: bool
    default_model: str
    key_limit: RateLimit
    end_user_limit: RateLimit
    budgets: _containers.RepeatedCompositeFieldContainer[Budget]
    max_concurrent: int
    tags: _containers.ScalarMap[str, str]
    def __init__(self, key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., restricted: _Optional[bool] = ..., default_model: _Optional[str] = ..., key_limit: _Optional[_Union[RateLimit, _Mapping]] = ..., end_user_limit: _Optional[_Union[RateLimit, _Mapping]] = ..., budgets: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ..., max_concurrent: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("rpm", "tpm", "fail_closed")
    RPM_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    FAIL_CLOSED_FIELD_NUMBER: _ClassVar[int]
    rpm: int
    tpm: int
    fail_closed: bool
    def __init__(self, rpm: _Optional[int] = ..., tpm: _Optional[int] = ..., fail_closed: _Optional[bool] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("usd", "period", "window_s", "scope", "hard", "fail_open")
    USD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    usd: float
    period: str
    window_s: int
    scope: str
    hard: bool
    fail_open: bool
    def __init__(self, usd: _Optional[float] = ..., period: _Optional[str] = ..., window_s: _Optional[int] = ..., scope: _Optional[str] = ..., hard: _Optional[bool] = ..., fail_open: _Optional[bool] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("request_id", "model", "messages", "tools", "tool_choice", "response_format", "sampling", "stream", "include_usage", "user", "extra", "routing", "identity", "metadata", "store", "prompt_cache_key", "safety_identifier", "trace_context", "native")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_USAGE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    SAFETY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    tool_choice: ToolChoice
    response_format: ResponseFormat
    sampling: Sampling
    stream: bool
    include_usage: bool
    user: str
    extra: _struct_pb2.Struct
    routing: RoutingContext
    identity: Identity
    metadata: _containers.ScalarMap[str, str]
    store: bool
    prompt_cache_key: str
    safety_identifier: str
    trace_context: _containers.ScalarMap[str, str]
    native: NativeFields
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., tool_choice: _Optional[_Union[ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., stream: _Optional[bool] = ..., include_usage: _Optional[bool] = ..., user: _Optional[str] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., routing: _Optional[_Union[RoutingContext, _Mapping]] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., store: _Optional[bool] = ..., prompt_cache_key: _Optional[str] = ..., safety_identifier: _Optional[str] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., native: _Optional[_Union[NativeFields, _Mapping]] = ...) -> None: ...

class NativeFields(_message.Message):
    __slots__ = ("api", "fields")
    API_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    api: str
    fields: _struct_pb2.Struct
    def __init__(self, api: _Optional[str] = ..., fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("provider", "provider_type", "model", "route", "route_version", "attempt", "request_id", "arm", "model_requested", "cache", "headers", "timing")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    MODEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    provider: str
    provider_type: str
    model: str
    route: str
    route_version: int
    attempt: int
    request_id: str
    arm: str
    model_requested: str
    cache: str
    headers: _containers.ScalarMap[str, str]
    timing: Timing
    def __init__(self, provider: _Optional[str] = ..., provider_type: _Optional[str] = ..., model: _Optional[str] = ..., route: _Optional[str] = ..., route_version: _Optional[int] = ..., attempt: _Optional[int] = ..., request_id: _Optional[str] = ..., arm: _Optional[str] = ..., model_requested: _Optional[str] = ..., cache: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("provider_us", "upstream_us", "provider_total_us", "router_us", "router_total_us", "edge_us", "edge_total_us", "upstream_response_id", "upstream_model")
    PROVIDER_US_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_US_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    ROUTER_US_FIELD_NUMBER: _ClassVar[int]
    ROUTER_TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    EDGE_US_FIELD_NUMBER: _ClassVar[int]
    EDGE_TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    provider_us: int
    upstream_us: int
    provider_total_us: int
    router_us: int
    router_total_us: int
    edge_us: int
    edge_total_us: int
    upstream_response_id: str
    upstream_model: str
    def __init__(self, provider_us: _Optional[int] = ..., upstream_us: _Optional[int] = ..., provider_total_us: _Optional[int] = ..., router_us: _Optional[int] = ..., router_total_us: _Optional[int] = ..., edge_us: _Optional[int] = ..., edge_total_us: _Optional[int] = ..., upstream_response_id: _Optional[str] = ..., upstream_model: _Optional[str] = ...) -> None: ...

class ToolCallDelta(_message.Message):
    __slots__ = ("index", "id", "name", "arguments", "signature")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    name: str
    arguments: str
    signature: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class ChoiceDelta(_message.Message):
    __slots__ = ("index", "role", "content", "reasoning", "tool_calls", "refusal", "finish_reason", "logprobs_json", "reasoning_blocks", "has_content", "stop_reason", "stop_sequence")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_JSON_FIELD_NUMBER: _ClassVar[int]
    REASONING_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    HAS_CONTENT_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    index: int
    role: str
    content: str
    reasoning: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCallDelta]
    refusal: str
    finish_reason: str
    logprobs_json: str
    reasoning_blocks: _containers.RepeatedCompositeFieldContainer[ReasoningBlock]
    has_content: bool
    stop_reason: str
    stop_sequence: str
    def __init__(self, index: _Optional[int] = ..., role: _Optional[str] = ..., content: _Optional[str] = ..., reasoning: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCallDelta, _Mapping]]] = ..., refusal: _Optional[str] = ..., finish_reason: _Optional[str] = ..., logprobs_json: _Optional[str] = ..., reasoning_blocks: _Optional[_Iterable[_Union[ReasoningBlock, _Mapping]]] = ..., has_content: _Optional[bool] = ..., stop_reason: _Optional[str] = ..., stop_sequence: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("choices", "system_fingerprint")
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    choices: _containers.RepeatedCompositeFieldContainer[ChoiceDelta]
    system_fingerprint: str
    def __init__(self, choices: _Optional[_Iterable[_Union[ChoiceDelta, _Mapping]]] = ..., system_fingerprint: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd", "audio_prompt_tokens", "audio_completion_tokens", "estimated")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    AUDIO_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float
    audio_prompt_tokens: int
    audio_completion_tokens: int
    estimated: bool
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., audio_prompt_tokens: _Optional[int] = ..., audio_completion_tokens: _Optional[int] = ..., estimated: _Optional[bool] = ...) -> None: ...

class AttemptRecord(_message.Message):
    __slots__ = ("provider", "model", "outcome", "error_type", "status", "latency_ms", "retry", "code", "backoff_ms", "gate", "route")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    outcome: str
    error_type: str
    status: int
    latency_ms: float
    retry: int
    code: str
    backoff_ms: float
    gate: str
    route: str
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., outcome: _Optional[str] = ..., error_type: _Optional[str] = ..., status: _Optional[int] = ..., latency_ms: _Optional[float] = ..., retry: _Optional[int] = ..., code: _Optional[str] = ..., backoff_ms: _Optional[float] = ..., gate: _Optional[str] = ..., route: _Optional[str] = ...) -> None: ...

class RouteDecision(_message.Message):
    __slots__ = ("route", "version", "strategy", "chosen", "reason")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    route: str
    version: int
    strategy: str
    chosen: str
    reason: str
    def __init__(self, route: _Optional[str] = ..., version: _Optional[int] = ..., strategy: _Optional[str] = ..., chosen: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DecisionTrace(_message.Message):
    __slots__ = ("resolved_by", "attempts", "routes", "template", "cache")
    RESOLVED_BY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    resolved_by: str
    attempts: _containers.RepeatedCompositeFieldContainer[AttemptRecord]
    routes: _containers.RepeatedCompositeFieldContainer[RouteDecision]
    template: str
    cache: CacheDecision
    def __init__(self, resolved_by: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[AttemptRecord, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[RouteDecision, _Mapping]]] = ..., template: _Optional[str] = ..., cache: _Optional[_Union[CacheDecision, _Mapping]] = ...) -> None: ...

class CacheDecision(_message.Message):
    __slots__ = ("status", "reason", "stored", "key", "ttl_s", "age_s")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    status: str
    reason: str
    stored: bool
    key: str
    ttl_s: int
    age_s: float
    def __init__(self, status: _Optional[str] = ..., reason: _Optional[str] = ..., stored: _Optional[bool] = ..., key: _Optional[str] = ..., ttl_s: _Optional[int] = ..., age_s: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("status", "type", "code", "message", "param", "retryable", "retry_after_ms", "provider", "upstream_status", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    status: int
    type: str
    code: str
    message: str
    param: str
    retryable: bool
    retry_after_ms: int
    provider: str
    upstream_status: int
    headers: _containers.ScalarMap[str, str]
    def __init__(self, status: _Optional[int] = ..., type: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., param: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ..., provider: _Optional[str] = ..., upstream_status: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("started", "chunk", "trace", "usage", "error")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    started: Started
    chunk: Chunk
    trace: DecisionTrace
    usage: Usage
    error: Error
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., trace: _Optional[_Union[DecisionTrace, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class CountTokensResponse(_message.Message):
    __slots__ = ("input_tokens", "estimated", "started", "error")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    estimated: bool
    started: Started
    error: Error
    def __init__(self, input_tokens: _Optional[int] = ..., estimated: _Optional[bool] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...
