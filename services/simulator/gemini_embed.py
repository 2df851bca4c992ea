"""Simulated Gemini ``models/{model}:embedContent``, ``:batchEmbedContents``
and ``:countTokens`` (dispatched from ``gemini.py``).

Rejected as the real API does: unknown fields, content without text parts,
a generation model asked for embeddings ("not supported for
embedContent"), more than 100 requests in a batch, a batch entry naming
another model than the URL, ``outputDimensionality`` out of range, an
unknown ``taskType``. Answers carry no token counts, as the real ones.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simulator.embeddings import vector_for
from simulator.gemini import (
    FIELDS,
    UNARY_METHODS,
    GeminiError,
    check_fields,
    check_request,
    get,
    invalid,
    prompt_tokens,
)
from simulator.scenarios import Recorder, count_tokens

# model -> default (full) dimensions
EMBEDDING_MODELS = {"gemini-embedding-001": 3072, "text-embedding-004": 768}
MAX_BATCH = 100
TASK_TYPES = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
              "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")

FIELDS.update({
    "EmbedContentRequest": {"model": None, "content": "Content", "taskType": None, "title": None,
                            "outputDimensionality": None},
    "BatchEmbedContentsRequest": {"requests": "[]EmbedContentRequest"},
    "CountTokensRequest": {"contents": "[]Content", "generateContentRequest": "Request"},
})


def _embedding(request: dict[str, Any], model: str, path: str) -> dict[str, Any]:
    content = get(request, "content")
    texts = [get(p, "text") for p in get(content, "parts") or [] if isinstance(get(p, "text"), str)]
    if not texts:
        raise invalid(f"* {path}.content: content must contain at least one text part\n", f"{path}.content")
    full = EMBEDDING_MODELS[model]
    dims = get(request, "outputDimensionality")
    if dims is None:
        dims = full
    elif not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= full:
        raise invalid(f"* {path}.output_dimensionality: must be between 1 and {full}\n",
                      f"{path}.output_dimensionality")
    task = get(request, "taskType")
    if task is not None and task not in TASK_TYPES:
        raise invalid(f"Invalid value at '{path}.task_type' (type.googleapis.com/google.ai.generativelanguage."
                      f"v1beta.TaskType), \"{task}\"", f"{path}.task_type")
    return {"values": vector_for(" ".join(texts), dims, full)}


def _check_model(model: str, method: str) -> None:
    if model not in EMBEDDING_MODELS:
        raise GeminiError(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                               f"{method}. Call ListModels to see the list of available models and their supported "
                               "methods.")


def embed_content(body: dict[str, Any], model: str) -> dict[str, Any]:
    check_fields(body, "EmbedContentRequest", "")
    _check_model(model, "embedContent")
    return {"embedding": _embedding(body, model, "EmbedContentRequest")}


def batch_embed_contents(body: dict[str, Any], model: str) -> dict[str, Any]:
    check_fields(body, "BatchEmbedContentsRequest", "")
    _check_model(model, "batchEmbedContents")
    requests = get(body, "requests") or []
    if not requests:
        raise invalid("* BatchEmbedContentsRequest.requests: requests must not be empty\n", "requests")
    if len(requests) > MAX_BATCH:
        raise invalid(f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch\n",
                      "requests")
    out = []
    for i, request in enumerate(requests):
        named = get(request, "model")
        if named != f"models/{model}":
            raise invalid(f"* BatchEmbedContentsRequest.requests[{i}].model: the model of every request must be "
                          f"models/{model}, as in the URL\n", f"requests[{i}].model")
        out.append(_embedding(request, model, f"BatchEmbedContentsRequest.requests[{i}]"))
    return {"embeddings": out}


def count_tokens_answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    """``countTokens`` on ``contents`` or a whole ``generateContentRequest``."""
    check_fields(body, "CountTokensRequest", "")
    if get(body, "contents") and get(body, "generateContentRequest"):
        raise invalid("* CountTokensRequest: only one of contents and generate_content_request may be set\n")
    generate = get(body, "generateContentRequest") or {"contents": get(body, "contents") or []}
    check_request({k: v for k, v in generate.items() if k != "model"}, model)
    tokens = prompt_tokens(generate)
    for tool in get(generate, "tools") or []:
        for declaration in get(tool, "functionDeclarations") or []:
            tokens += count_tokens(str(declaration).replace(",", " "))
    return {"totalTokens": tokens}


def add_routes(app: web.Application, recorder: Recorder) -> None:
    """The methods answer on the generate route (``models/{model}:{method}``)."""
    UNARY_METHODS.update({"embedContent": embed_content, "batchEmbedContents": batch_embed_contents,
                          "countTokens": count_tokens_answer})
