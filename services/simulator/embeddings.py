"""Simulated embeddings: OpenAI's ``POST /v1/embeddings`` (strict flavour:
api.openai.com's rules) and an OpenAI-compatible server's
``/compat/v1/embeddings``; Gemini's ``embedContent`` and
``batchEmbedContents`` are in ``gemini_embed.py`` and share ``vector_for``.

Vectors are deterministic unit vectors seeded by the text (or token ids), so
a test can recompute them; a shortened vector (``dimensions``) is the
prefix of the full one, renormalised, as OpenAI's text-embedding-3 does.
The strict flavour rejects what the real API rejects: unknown parameters,
an empty string, more than 2,048 inputs, more than 8,192 tokens in one
input or 300,000 in all, token ids beyond the tokenizer, ``dimensions`` on
models that cannot shorten (ada-002) or beyond the model's size, and an
unknown ``encoding_format``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import secrets
from array import array
from typing import Any

import orjson
from aiohttp import web

from simulator.openai_rules import COMPAT, STRICT, Flavour, RejectionError, _bad_type, _invalid_value, _missing
from simulator.scenarios import Recorder, Script, count_tokens, parse_script
from simulator.streaming import send_json

# model -> (dimensions, may be shortened)
MODELS = {"text-embedding-3-small": (1536, True), "text-embedding-3-large": (3072, True),
          "text-embedding-ada-002": (1536, False)}
COMPAT_DIMENSIONS = 384
PARAMS = frozenset({"input", "model", "dimensions", "encoding_format", "user"})
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
MAX_TOKEN_ID = 100_257
_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


def vector_for(key: str, dims: int, full: int) -> list[float]:
    """The first ``dims`` of ``key``'s ``full``-dimension vector, unit length."""
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(full)][:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def encode(values: list[float], as_base64: bool) -> Any:
    return base64.b64encode(array("f", values).tobytes()).decode() if as_base64 else values


def add_routes(app: web.Application, recorder: Recorder) -> None:
    for prefix, flavour in (("/v1", STRICT), ("/compat/v1", COMPAT)):
        async def handle(request: web.Request, flavour: Flavour = flavour) -> web.StreamResponse:
            return await embeddings(request, recorder, flavour)

        app.router.add_post(f"{prefix}/embeddings", handle)


def _inputs(value: Any, flavour: Flavour) -> list[tuple[str, int]]:
    """(seed key, tokens) per input."""
    if value is None:
        raise _missing("input")
    if isinstance(value, str):
        value = [value]
    elif not isinstance(value, list):
        raise _bad_type("input", "a string or array", value)
    elif value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = [value]
    if not value or len(value) > MAX_INPUTS:
        raise RejectionError(400, _INVALID_INPUT)
    out: list[tuple[str, int]] = []
    for item in value:
        if isinstance(item, str):
            if not item:
                raise RejectionError(400, _INVALID_INPUT)
            out.append((item, count_tokens(item) or 1))
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            if flavour.strict and any(not 0 <= t <= MAX_TOKEN_ID for t in item):
                raise RejectionError(400, _INVALID_INPUT)
            out.append((" ".join(map(str, item)), len(item)))
        else:
            raise RejectionError(400, _INVALID_INPUT)
    return out


def _validate(body: dict[str, Any], flavour: Flavour) -> tuple[str, int, int, bool, list[tuple[str, int]]]:
    """(model, dimensions, full dimensions, base64?, inputs)."""
    if flavour.strict:  # a vLLM-style server ignores fields it does not know
        for key in body:
            if key not in PARAMS:
                raise RejectionError(400, f"Unrecognized request argument supplied: {key}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RejectionError(400, "you must provide a model parameter")
    if flavour.strict:
        if model not in MODELS:
            raise RejectionError(404, f"The model `{model}` does not exist or you do not have access to it.",
                                 code="model_not_found")
        full, shortens = MODELS[model]
    else:
        full, shortens = COMPAT_DIMENSIONS, True
    inputs = _inputs(body.get("input"), flavour)
    for _, tokens in inputs:
        if tokens > MAX_INPUT_TOKENS:
            raise RejectionError(400, f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
                                      f"requested {tokens} tokens ({tokens} in your prompt; 0 for the completion). "
                                      "Please reduce your prompt; or completion length.")
    total = sum(tokens for _, tokens in inputs)
    if total > MAX_REQUEST_TOKENS:
        raise RejectionError(400, f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
                             code="max_tokens_per_request")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise _invalid_value("encoding_format", fmt, ("float", "base64"))
    dims = body.get("dimensions")
    if dims is None:
        dims = full
    elif not isinstance(dims, int) or isinstance(dims, bool):
        raise _bad_type("dimensions", "an integer", dims)
    elif not shortens:
        raise RejectionError(400, "This model does not support specifying dimensions.")
    elif not 1 <= dims <= full:
        raise RejectionError(400, f"Invalid value for 'dimensions' = {dims}. Must be between 1 and {full}.",
                             param="dimensions", code="invalid_value")
    return model, dims, full, fmt == "base64", inputs


async def embeddings(request: web.Request, recorder: Recorder, flavour: Flavour) -> web.StreamResponse:
    body, is_json, item = await recorder.record_request("openai", request)
    script = Script()
    headers = {"x-request-id": "req_" + secrets.token_hex(16)}
    try:
        if flavour.strict:
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise RejectionError(401, "You didn't provide an API key.", code="invalid_api_key")
        if not is_json or not isinstance(body, dict):
            raise RejectionError(400, "We could not parse the JSON body of your request.")
        texts = body.get("input")
        text = texts if isinstance(texts, str) else " ".join(t for t in texts or () if isinstance(t, str))
        script = parse_script(request.headers, text, body.get("model") if isinstance(body.get("model"), str) else None)
        if script.status:
            raise RejectionError(script.status, f"Simulated upstream error {script.status}.",
                                 type_="invalid_request_error" if script.status < 500 else "server_error",
                                 headers={"retry-after": str(script.retry_after)} if script.retry_after is not None
                                 else None)
        model, dims, full, as_base64, inputs = _validate(body, flavour)
    except RejectionError as exc:
        error = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
        if not flavour.strict:
            error["code"] = exc.status  # vLLM's shape
        return await send_json(request, recorder, item, script, exc.status, orjson.dumps({"error": error}),
                               {**headers, **exc.headers})
    data = [{"object": "embedding", "index": i, "embedding": encode(vector_for(key, dims, full), as_base64)}
            for i, (key, _) in enumerate(inputs)]
    tokens = sum(t for _, t in inputs)
    answer = {"object": "list", "data": data, "model": model,
              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return await send_json(request, recorder, item, script, 200, orjson.dumps(answer), headers)
