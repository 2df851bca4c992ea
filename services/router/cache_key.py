"""The response cache's key, and whether a request may be cached at all.

The key is a SHA-256 digest of the request as the upstream would see it,
normalised so that what cannot change the answer cannot change the key:

- kept: messages, tools, tool choice, response format, every sampling
  parameter and the pass-through ``extra`` fields; the resolved target
  (``provider/model``, or ``@slug@version`` with the versions of nested
  configs, the rule a conditional config picks and the arm a sticky weighted
  config picks); the tenant, and with ``scope: key`` / ``end_user`` the key
  id or end user;
- dropped: request id, trace context, identity, routing context (tags, end
  user, session, trace flag, template name and variables: a template's
  effect is already in the messages), ``stream`` and ``include_usage`` (a
  streamed entry serves a non-streaming request and vice versa), ``user``,
  ``metadata``, ``store``, ``prompt_cache_key``, ``safety_identifier``, and
  the model identifier as written (an alias and the model it names share);
- normalised: parameters at a value every API treats as unset (``n: 1``,
  zero penalties, ``parallel_tool_calls: true`` with tools, ``tool_choice:
  auto`` with tools, ``response_format: text``, ``strict: false``, a single
  ``stop`` string vs a one-element list, ``top_logprobs`` without
  ``logprobs``), JSON Schema texts (tool parameters, response schema) with
  their keys sorted, map fields in sorted order.

Parameters whose default differs between upstreams (``temperature``,
``top_p``) are not normalised: an explicit value and an absent one are
different keys.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from functools import lru_cache

import orjson

from router.policy import arm_index
from router.routes import Leaf, Node, Plan, leaves
from switchyard.conditions import RequestFacts
from switchyard.v1 import chat_pb2 as pb

VERSION = b"switchyard-cache-v1"
_FRAME = struct.Struct(">BI")
_CANONICAL_MEMO_CHARS = 16 * 1024  # JSON texts up to this size are remembered once canonicalised


class NotCacheableError(Exception):
    """The request's answer is not reproducible; the message says why."""


def cache_key(request: pb.ChatRequest, plan: Plan, tenant: str, scope_value: str = "") -> str:
    """The hex digest for ``request`` planned as ``plan``. NotCacheableError when
    the target the request reaches cannot be known before it runs."""
    target = target_signature(plan.root, request)
    # Length-prefixed, so that no two (tenant, scope, target) run together into the same text.
    head = f"{len(tenant)}:{tenant}{len(scope_value)}:{scope_value}{len(target)}:{target}"
    digest = hashlib.sha256(VERSION + head.encode())
    for part in _parts(request):  # each framed by a kind and a length: no two requests share a byte stream
        digest.update(_FRAME.pack(part[0], len(part[1])) + part[1])
    return digest.hexdigest()


def _parts(request: pb.ChatRequest) -> Iterator[tuple[int, bytes]]:
    """What can change the answer, each in one form, serialised: the
    sampling parameters, every message as it is (no maps: their bytes are
    canonical), tools, tool choice, response format, pass-through fields.
    Copies are made only of the small parts that get normalised."""
    sampling = pb.Sampling()
    sampling.CopyFrom(request.sampling)
    if sampling.n == 1:
        sampling.ClearField("n")
    for name in ("presence_penalty", "frequency_penalty"):
        if sampling.HasField(name) and getattr(sampling, name) == 0:
            sampling.ClearField(name)
    if not sampling.logprobs:
        sampling.ClearField("top_logprobs")
    sampling.ClearField("stop_is_string")
    tools = request.tools
    choice = request.tool_choice
    mode = choice.mode if choice.WhichOneof("choice") == "mode" else None
    if tools:
        if sampling.HasField("parallel_tool_calls") and sampling.parallel_tool_calls:
            sampling.ClearField("parallel_tool_calls")
        default_choice = mode == "auto"
    else:
        default_choice = mode == "none"
    yield ord("s"), sampling.SerializeToString(deterministic=True)
    for message in request.messages:
        yield ord("m"), message.SerializeToString()
    for tool in tools:
        function = tool.function
        if function.parameters_json or (function.HasField("strict") and not function.strict):
            tool = _normal_tool(tool)
        yield ord("t"), tool.SerializeToString()
    if request.HasField("tool_choice") and not default_choice:
        yield ord("c"), choice.SerializeToString()
    fmt = request.response_format
    if fmt.type and fmt.type != "text":
        if fmt.schema_json or (fmt.HasField("strict") and not fmt.strict):
            copy = pb.ResponseFormat()
            copy.CopyFrom(fmt)
            if copy.schema_json:
                copy.schema_json = canonical_json(copy.schema_json)
            if copy.HasField("strict") and not copy.strict:
                copy.ClearField("strict")
            fmt = copy
        yield ord("f"), fmt.SerializeToString()
    if request.extra.fields:
        yield ord("x"), request.extra.SerializeToString(deterministic=True)


def _normal_tool(tool: pb.Tool) -> pb.Tool:
    copy = pb.Tool()
    copy.CopyFrom(tool)
    function = copy.function
    if function.parameters_json:
        function.parameters_json = canonical_json(function.parameters_json)
    if function.HasField("strict") and not function.strict:
        function.ClearField("strict")
    return copy


def canonical_json(text: str) -> str:
    """The JSON text with object keys sorted (the text itself if it is not JSON)."""
    if len(text) <= _CANONICAL_MEMO_CHARS:
        return _canonical_memo(text)
    return _canonical(text)


def _canonical(text: str) -> str:
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return text


_canonical_memo = lru_cache(maxsize=1024)(_canonical)  # agents resend the same tools: at most ~16 MiB held


def target_signature(node: Node, request: pb.ChatRequest, facts: RequestFacts | None = None) -> str:
    """What answers the request, as far as it is decided before the run:
    upstream targets, routing configs with their versions, the rule a
    conditional config picks and the arm a sticky weighted config picks."""
    if isinstance(node, Leaf):
        return f"{node.target.provider}/{node.target.model}"
    head = f"@{node.route}@{node.version}" if node.route else ""
    if node.strategy == "conditional":
        facts = facts or RequestFacts(request)
        for index, condition in enumerate(node.conditions):
            if condition is None or condition(facts):
                return f"{head}#{index}({target_signature(node.children[index], request, facts)})"
        raise NotCacheableError(f"no rule of routing config '@{node.route}' matches")
    if node.strategy == "weighted":
        if node.spec is None or not node.spec.sticky:
            raise NotCacheableError(f"routing config '@{node.route}' picks a random arm")
        index, _ = arm_index(node, request)
        return f"{head}#{index}({target_signature(node.children[index], request, facts)})"
    return f"{head}({','.join(target_signature(child, request, facts) for child in node.children)})"


def unreproducible(request: pb.ChatRequest, plan: Plan) -> str:
    """Why an answer to ``request`` would not be reproducible ("" if it would):
    sampling at temperature > 0 (or at the upstream's default) without a seed
    on some target the plan can reach (a target's params override the
    request's), or a live web search."""
    if "web_search_options" in request.extra.fields:
        return "web search results change"
    sampling = request.sampling
    seeded = sampling.HasField("seed")
    greedy = sampling.HasField("temperature") and sampling.temperature == 0
    root = plan.root
    if isinstance(root, Leaf) and root.params is None:
        return "" if seeded or greedy else _SAMPLED
    for leaf, _ in leaves(root):
        params = leaf.params
        leaf_seeded = seeded or (params is not None and params.seed is not None)
        leaf_greedy = greedy if params is None or params.temperature is None else params.temperature == 0
        if not (leaf_seeded or leaf_greedy):
            return _SAMPLED
    return ""


_SAMPLED = "sampled: temperature > 0 or unset, and no seed"
