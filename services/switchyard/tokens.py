"""Token estimates where no upstream count exists: admission (what a request
may cost before it runs) and metering (an upstream that reports no usage, a
stream that ended before its usage event).

A documented approximation, not a tokenizer: one token per 4 bytes of UTF-8
text (OpenAI's rule of thumb for English is ~4 characters per token; text
outside ASCII takes 2-4 bytes per character and about one token per character
in cl100k/o200k, so counting bytes keeps the estimate from falling below the
real count there), plus 4 tokens of framing per message and 3 to prime the
answer (OpenAI's documented chat format overhead), and 1,000 tokens per image
(a 1024x1024 image at high detail costs 765). Estimated counts are marked
(``Usage.estimated``, ``UsageEvent.usage_estimated``). ``tiktoken`` was
weighed and left out: it downloads its encodings at run time, which an
offline deployment cannot do.
"""

from __future__ import annotations

from switchyard.v1 import chat_pb2 as pb

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
IMAGE_TOKENS = 1000


def text_tokens(text: str) -> int:
    return bytes_tokens(_size(text)) if text else 0


def prompt_tokens(request: pb.ChatRequest) -> int:
    """Estimated prompt tokens of a request: messages, tools and schema."""
    total = REPLY_PRIMING
    for message in request.messages:
        total += MESSAGE_OVERHEAD
        kind = message.WhichOneof("content")
        if kind == "text":
            total += text_tokens(message.text)
        elif kind == "parts":
            for part in message.parts.parts:
                which = part.WhichOneof("part")
                if which == "text":
                    total += text_tokens(part.text)
                elif which is not None:
                    total += IMAGE_TOKENS
        for call in message.tool_calls:
            total += text_tokens(call.function.name) + text_tokens(call.function.arguments)
    for tool in request.tools:
        function = tool.function
        total += MESSAGE_OVERHEAD + text_tokens(function.name) + text_tokens(function.description) \
            + text_tokens(function.parameters_json)
    if request.response_format.schema_json:
        total += text_tokens(request.response_format.schema_json)
    return total


def chunk_text_bytes(chunk: pb.Chunk) -> int:
    """Bytes of generated text in one chunk (content, reasoning, refusal, tool
    calls); summed over a stream and turned into tokens by ``bytes_tokens``."""
    total = 0
    for delta in chunk.choices:
        total += _size(delta.content) + _size(delta.reasoning) + _size(delta.refusal)
        for call in delta.tool_calls:
            total += _size(call.name) + _size(call.arguments)
    return total


def bytes_tokens(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)


def relayed_tokens(chunks: int, chunk_bytes: int) -> int:
    """Completion tokens of a relayed stream from its ChatEvent chunk count and
    wire size alone (no parsing on the relay path): each chunk carries about 6
    bytes of framing, and holds at least one token."""
    return max(chunks, bytes_tokens(max(chunk_bytes - 6 * chunks, 0)))


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def max_output_tokens(request: pb.ChatRequest, model_limit: int) -> int:
    """The most output tokens the request can produce: its max_completion_tokens
    or max_tokens (capped by the model's limit), else the model's limit, times n."""
    sampling = request.sampling
    asked = 0
    if sampling.HasField("max_completion_tokens"):
        asked = sampling.max_completion_tokens
    elif sampling.HasField("max_tokens"):
        asked = sampling.max_tokens
    limit = min(asked, model_limit) if asked > 0 else model_limit
    return limit * max(sampling.n, 1)
